"""Pure-PyTorch oracle for every fastconv op.

Each function computes exactly what the fused op promises, stage by stage, with ``torch.nn.functional``
ops. Every other backend is tested against these; they in turn are tested against ``torch.nn`` layers.
Inputs are assumed valid (``fastconv.ops`` checks them); outputs are channels_last like every backend's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "activate",
    "asymmetric_conv_pair",
    "asymmetric_conv_parallel",
    "depthwise_conv2d",
    "inverted_residual",
    "pointwise_conv2d",
    "same_padding",
]


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Applies "none", "relu" or "relu6" to ``x``."""
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    return x


def same_padding(weight: torch.Tensor) -> tuple[int, int]:
    """The padding that keeps H and W for a stride-1 conv with an odd kernel: (kh // 2, kw // 2)."""
    return weight.shape[2] // 2, weight.shape[3] // 2


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    return y.contiguous(memory_format=torch.channels_last)


def depthwise_conv2d(
    x: torch.Tensor,  # [N, C, H, W]
    weight: torch.Tensor,  # [C, 1, kh, kw]
    bias: torch.Tensor | None = None,  # [C]
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    activation: str = "none",
) -> torch.Tensor:  # [N, C, Ho, Wo]
    y = F.conv2d(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups=x.shape[1])
    return _channels_last(activate(y, activation))


def pointwise_conv2d(
    x: torch.Tensor,  # [N, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, 1, 1]
    bias: torch.Tensor | None = None,  # [Cout]
    activation: str = "none",
    residual: torch.Tensor | None = None,  # [N, Cout, H, W]
) -> torch.Tensor:  # [N, Cout, H, W]
    y = F.conv2d(x, weight, bias)
    if residual is not None:
        y = y + residual
    return _channels_last(activate(y, activation))


def inverted_residual(
    x: torch.Tensor,  # [N, Cin, H, W]
    expand_weight: torch.Tensor | None,  # [Chid, Cin, 1, 1], None when t == 1
    expand_bias: torch.Tensor | None,  # [Chid]
    dw_weight: torch.Tensor,  # [Chid, 1, 3, 3]
    dw_bias: torch.Tensor | None,  # [Chid]
    project_weight: torch.Tensor,  # [Cout, Chid, 1, 1]
    project_bias: torch.Tensor | None,  # [Cout]
    stride: int,
    residual: bool,
    activation: str = "relu6",
) -> torch.Tensor:  # [N, Cout, Ho, Wo]
    h = x
    if expand_weight is not None:
        h = activate(F.conv2d(h, expand_weight, expand_bias), activation)
    pad = dw_weight.shape[2] // 2
    h = F.conv2d(h, dw_weight, dw_bias, stride, pad, groups=h.shape[1])
    h = activate(h, activation)
    y = F.conv2d(h, project_weight, project_bias)
    if residual:
        y = y + x
    return _channels_last(y)


def asymmetric_conv_pair(
    x: torch.Tensor,  # [N, Cin, H, W]
    weight1: torch.Tensor,  # [Cmid, Cin, 1, n] or [Cmid, Cin, n, 1]
    bias1: torch.Tensor | None,  # [Cmid]
    weight2: torch.Tensor,  # [Cout, Cmid, n, 1] or [Cout, Cmid, 1, n]
    bias2: torch.Tensor | None,  # [Cout]
    activation: str = "relu",
) -> torch.Tensor:  # [N, Cout, H, W]
    h = activate(F.conv2d(x, weight1, bias1, padding=same_padding(weight1)), activation)
    y = activate(F.conv2d(h, weight2, bias2, padding=same_padding(weight2)), activation)
    return _channels_last(y)


def asymmetric_conv_parallel(
    x: torch.Tensor,  # [N, Cin, H, W]
    weight_a: torch.Tensor,  # [Ca, Cin, 1, n]
    bias_a: torch.Tensor | None,  # [Ca]
    weight_b: torch.Tensor,  # [Cb, Cin, n, 1]
    bias_b: torch.Tensor | None,  # [Cb]
    activation: str = "relu",
) -> torch.Tensor:  # [N, Ca + Cb, H, W]
    a = activate(F.conv2d(x, weight_a, bias_a, padding=same_padding(weight_a)), activation)
    b = activate(F.conv2d(x, weight_b, bias_b, padding=same_padding(weight_b)), activation)
    return _channels_last(torch.cat([a, b], dim=1))
