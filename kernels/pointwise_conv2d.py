"""pointwise_conv2d: a 1x1 convolution as one tensor-core GEMM with a fused epilogue.

In NHWC memory the input is already the matrix X [M = N*H*W, Cin] and the output Y [M, Cout], so
Y = act(X @ W^T + b + R) is a plain GEMM; the bias, the residual R [M, Cout] and the activation are applied
to the fp32 accumulator before the one store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    activation_code,
    check_nhwc,
    empty_nhwc,
    mma,
    prune_or_fallback,
    store_tile,
    tuning_configs,
)

# BLOCK_M x BLOCK_N x BLOCK_K, warps, pipeline stages. First: the largest, the interpreter's.
CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drops tiles far wider than the problem (N or K blocks beyond the padded channel counts) and, in fp32,
    N blocks over 64: fp32 products run on FMA units whose operands take registers, and those spill."""
    args = {**named_args, **kwargs}
    n_pad = max(16, triton.next_power_of_2(args["NOUT"]))
    k_pad = max(16, triton.next_power_of_2(args["K"]))
    n_cap = 64 if args["x_ptr"].dtype == torch.float32 else n_pad

    def fits(c: triton.Config) -> bool:
        return c.kwargs["BLOCK_N"] <= min(max(n_pad, 32), n_cap) and c.kwargs["BLOCK_K"] <= max(k_pad, 32)

    def cost(c: triton.Config) -> float:
        return c.kwargs["BLOCK_N"] + c.kwargs["BLOCK_K"]

    return prune_or_fallback(configs, fits, cost)


# Y[M, NOUT] = act(X[M, K] @ W[NOUT, K]^T + b + R). Programs take BLOCK_M x BLOCK_N tiles of Y, N tiles
# fastest, so that the programs sharing a row block of X run together and find it in L2.
@triton.autotune(
    configs=tuning_configs(CONFIGS), key=["M", "K", "NOUT"], prune_configs_by={"early_config_prune": _prune}
)
@triton.jit
def pointwise_conv2d_kernel(
    x_ptr,  # [M, K] input pixels x channels (NHWC), M = N*H*W
    w_ptr,  # [NOUT, K] weight ([Cout, Cin, 1, 1])
    b_ptr,  # [NOUT] bias, read when HAS_BIAS
    r_ptr,  # [M, NOUT] residual (NHWC), read when HAS_RESIDUAL
    y_ptr,  # [M, NOUT] output (NHWC)
    M,  # pixels
    K,  # input channels
    NOUT,  # output channels
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 relu6
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_n = tl.cdiv(NOUT, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < NOUT
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        k_ok = k < K
        a = tl.load(x_ptr + rows[:, None] * K + k[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0).to(tl.float32)
        b = tl.load(w_ptr + cols[None, :] * K + k[:, None], mask=k_ok[:, None] & col_ok[None, :],
                    other=0.0).to(tl.float32)
        acc = mma(a, b, acc, x_ptr.dtype.element_ty)
    store_tile(acc, y_ptr, rows, row_ok, cols, col_ok, NOUT, b_ptr, r_ptr, HAS_BIAS, HAS_RESIDUAL, ACT)


def grid(meta: dict) -> tuple[int]:
    return (triton.cdiv(meta["M"], meta["BLOCK_M"]) * triton.cdiv(meta["NOUT"], meta["BLOCK_N"]),)


def launch_args(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str, residual: Tensor | None) -> dict:
    """The kernel's arguments for one call, the new output ``y_ptr`` among them."""
    check_nhwc("x", x)
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    if residual is not None:
        check_nhwc("residual", residual)
    y = empty_nhwc((n, cout, h, w), x)
    return dict(
        x_ptr=x, w_ptr=weight, b_ptr=weight if bias is None else bias, r_ptr=y if residual is None else residual,
        y_ptr=y, M=n * h * w, K=cin, NOUT=cout, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
        ACT=activation_code(activation),
    )


def pointwise_conv2d(
    x: Tensor,  # [N, Cin, H, W] channels_last
    weight: Tensor,  # [Cout, Cin, 1, 1]
    bias: Tensor | None,  # [Cout]
    activation: str,
    residual: Tensor | None,  # [N, Cout, H, W] channels_last
) -> Tensor:  # [N, Cout, H, W] channels_last
    """act(x * W + bias + residual) with the Triton kernel; arguments as ``fastconv.ops._run`` passes them."""
    args = launch_args(x, weight, bias, activation, residual)
    pointwise_conv2d_kernel[grid](**args)
    return args["y_ptr"]
