"""Helpers for checking fastconv against PyTorch: used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_batchnorm_"]


def randomize_batchnorm_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Gives every BatchNorm2d of ``model`` random running statistics and affine parameters, in place.

    Default statistics (mean 0, var 1, weight 1, bias 0) would make BatchNorm folding a no-op and hide its bugs.
    The ranges keep activations of a deep network of order 1.

    Args:
        model: any module; its BatchNorm2d layers are changed.
        generator: the source of randomness (seed it for reproducible weights).

    Returns:
        ``model``.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    return model
