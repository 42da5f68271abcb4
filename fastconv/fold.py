"""Folding an eval-mode BatchNorm into the convolution before it.

In eval mode BatchNorm is an affine map per channel, so conv -> BN is one conv with

    scale  = gamma / sqrt(running_var + eps)                    # [Cout]
    weight = conv_weight * scale                                # per output channel
    bias   = beta + (conv_bias - running_mean) * scale          # conv_bias = 0 when the conv has none

The arithmetic runs in float32 (float64 for float64 weights) and the results are cast back to the conv
weight's dtype (or to ``dtype``), so half-precision models do not lose the BN scale to rounding twice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FOLDABLE_NORMS", "fold_batch_norm", "fold_conv_bn", "is_foldable"]

# BatchNorm flavours whose eval-mode forward is the per-channel affine map above.
FOLDABLE_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def is_foldable(bn: nn.Module) -> bool:
    """True when ``bn`` is a BatchNorm in eval mode that normalises with running statistics.

    A BatchNorm built with ``track_running_stats=False`` normalises with batch statistics even in eval
    mode, and one in training mode does so too: neither can be folded.
    """
    return isinstance(bn, FOLDABLE_NORMS) and not bn.training and bn.running_mean is not None


def fold_batch_norm(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    bn_weight: Tensor | None = None,
    bn_bias: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Folds BatchNorm statistics and affine parameters into a conv's weight and bias.

    Args:
        weight: conv weight, [Cout, Cin / groups, *kernel].
        bias: conv bias, [Cout], or None.
        running_mean: BatchNorm running mean, [Cout].
        running_var: BatchNorm running variance, [Cout].
        eps: BatchNorm epsilon.
        bn_weight: BatchNorm gamma, [Cout], or None (no affine scale).
        bn_bias: BatchNorm beta, [Cout], or None (no affine shift).
        dtype: dtype of the results; the dtype of ``weight`` when None.

    Returns:
        (weight, bias) of the single conv equal to conv -> BN: [Cout, Cin / groups, *kernel] and [Cout].
    """
    cout = weight.shape[0]
    for name, t in (("bias", bias), ("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is not None and tuple(t.shape) != (cout,):
            raise ValueError(
                f"{name} must have shape [{cout}] (one value per output channel of weight "
                f"{list(weight.shape)}); got {list(t.shape)}"
            )
    compute = torch.promote_types(weight.dtype, torch.float32)
    scale = torch.rsqrt(running_var.to(compute) + eps)  # [Cout]
    if bn_weight is not None:
        scale = scale * bn_weight.to(compute)
    shift = -running_mean.to(compute) if bias is None else bias.to(compute) - running_mean.to(compute)
    shift = shift * scale
    if bn_bias is not None:
        shift = shift + bn_bias.to(compute)
    out = weight.dtype if dtype is None else dtype
    folded = weight.to(compute) * scale.reshape((cout,) + (1,) * (weight.dim() - 1))
    return folded.to(out), shift.to(out)


def fold_conv_bn(
    weight: Tensor, bias: Tensor | None, bn: nn.Module, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Folds an eval-mode ``BatchNorm2d`` into the weight and bias of the conv before it.

    Args:
        weight: conv weight, [Cout, Cin / groups, kh, kw].
        bias: conv bias, [Cout], or None.
        bn: the ``nn.BatchNorm2d`` (or ``nn.SyncBatchNorm``) that follows the conv, with running statistics.
        dtype: dtype of the results; the dtype of ``weight`` when None.

    Returns:
        (weight, bias), [Cout, Cin / groups, kh, kw] and [Cout]: conv(x, weight, bias) == bn(conv(x)) in eval.

    Raises:
        TypeError: ``bn`` is not a BatchNorm2d.
        ValueError: ``bn`` has no running statistics (``track_running_stats=False``), or its channel count
            is not the conv's output channel count.
    """
    if not isinstance(bn, FOLDABLE_NORMS):
        raise TypeError(f"bn must be an nn.BatchNorm2d or nn.SyncBatchNorm; got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "bn has no running statistics (track_running_stats=False): it normalises with batch statistics "
            "in eval mode too, which cannot be folded into a conv"
        )
    return fold_batch_norm(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, dtype)
