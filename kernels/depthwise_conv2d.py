"""depthwise_conv2d: a kxk depthwise convolution (any stride, padding, dilation) with bias and activation.

Memory-bound: each program takes BLOCK_P output pixels x BLOCK_C channels; in NHWC a pixel's channels are
contiguous, so every tap is one coalesced [BLOCK_P, BLOCK_C] load, and the KH*KW overlapping taps of
neighbouring pixels hit L1/L2 rather than device memory.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .common import (
    activation_code,
    check_nhwc,
    empty_nhwc,
    prune_or_fallback,
    store_tile,
    tuning_configs,
)

# BLOCK_P x BLOCK_C, warps. First: the largest, the interpreter's.
CONFIGS = [
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 128}, num_warps=8, num_stages=1),
    triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_P": 128, "BLOCK_C": 32}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK_P": 256, "BLOCK_C": 16}, num_warps=4, num_stages=1),
]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Keeps the channel blocks that are not mostly padding."""
    c_pad = max(16, triton.next_power_of_2({**named_args, **kwargs}["C"]))
    return prune_or_fallback(configs, lambda c: c.kwargs["BLOCK_C"] <= c_pad, lambda c: c.kwargs["BLOCK_C"])


# y[n, oh, ow, c] = act(b[c] + sum_{i<KH, j<KW} x[n, oh*sh - ph + i*dh, ow*sw - pw + j*dw, c] * w[c, i, j]),
# x read as 0 outside the image. Programs take channel blocks fastest, so neighbours share pixel rows in L2.
@triton.autotune(
    configs=tuning_configs(CONFIGS),
    key=["P", "C", "H", "W", "KH", "KW", "stride_h", "stride_w"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.jit
def depthwise_conv2d_kernel(
    x_ptr,  # [N, H, W, C] input (NHWC)
    w_ptr,  # [C, KH, KW] weight ([C, 1, KH, KW])
    b_ptr,  # [C] bias, read when HAS_BIAS
    y_ptr,  # [N, HO, WO, C] output (NHWC)
    P,  # N * HO * WO output pixels
    H,
    W,
    C,
    HO,
    WO,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 relu6
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    num_c = tl.cdiv(C, BLOCK_C)
    pid_c = pid % num_c
    pid_p = pid // num_c
    p = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P
    ow = p % WO
    oh = (p // WO) % HO
    n = p // (WO * HO)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    # A rolled loop over taps: unrolled, the compiler loads all KH*KW tap tiles at once, which spills; the
    # latency is hidden by the other warps on the SM instead.
    for t in tl.range(0, KH * KW, num_stages=1):
        ih = oh * stride_h - pad_h + (t // KW) * dil_h
        iw = ow * stride_w - pad_w + (t % KW) * dil_w
        ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + ((n * H + ih) * W + iw)[:, None] * C + c[None, :], mask=ok[:, None] & c_ok[None, :],
                     other=0.0).to(tl.float32)
        wv = tl.load(w_ptr + c * (KH * KW) + t, mask=c_ok, other=0.0).to(tl.float32)
        acc += xv * wv[None, :]
    store_tile(acc, y_ptr, p, p_ok, c, c_ok, C, b_ptr, y_ptr, HAS_BIAS, False, ACT)


def grid(meta: dict) -> tuple[int]:
    return (triton.cdiv(meta["P"], meta["BLOCK_P"]) * triton.cdiv(meta["C"], meta["BLOCK_C"]),)


def launch_args(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
) -> dict:
    """The kernel's arguments for one call, the new output ``y_ptr`` among them."""
    check_nhwc("x", x)
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = empty_nhwc((n, c, ho, wo), x)
    return dict(
        x_ptr=x, w_ptr=weight, b_ptr=weight if bias is None else bias, y_ptr=y, P=n * ho * wo, H=h, W=w, C=c,
        HO=ho, WO=wo, stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1],
        dil_h=dilation[0], dil_w=dilation[1], KH=kh, KW=kw, HAS_BIAS=bias is not None,
        ACT=activation_code(activation),
    )


def depthwise_conv2d(
    x: Tensor,  # [N, C, H, W] channels_last
    weight: Tensor,  # [C, 1, KH, KW]
    bias: Tensor | None,  # [C]
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
) -> Tensor:  # [N, C, HO, WO] channels_last
    """act(depthwise_conv(x) + bias) with the Triton kernel; arguments as ``fastconv.ops._run`` passes them."""
    args = launch_args(x, weight, bias, stride, padding, dilation, activation)
    depthwise_conv2d_kernel[grid](**args)
    return args["y_ptr"]
