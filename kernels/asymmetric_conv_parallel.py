"""asymmetric_conv_parallel: 1xn || nx1 over one input, both written into one channel-concatenated output.

Design. A program takes BLOCK_P pixels (flattened over the batch) and the same block of BLOCK_CO output
channels of both convs, with one fp32 accumulator each. Each conv is an implicit GEMM whose K loop runs over
(input-channel chunk, tap), the pixel tile shifted along the conv's axis; conv b runs right after conv a
over the same pixels, so the input tile comes from device memory once and from L1/L2 the second time. The
two epilogues write a's channels [0, CA) and b's [CA, CA + CB) of the one output: no concat copy.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .common import (
    TILE_REGISTERS,
    activation_code,
    block_ci,
    block_co,
    check_nhwc,
    conv1d,
    empty_nhwc,
    prune_or_fallback,
    store_tile,
    tile_registers,
    tuning_configs,
)

# Pixels BLOCK_P, output-channel cap CO_CAP (per conv), warps, stages. First: the interpreter's.
CONFIGS = [
    triton.Config({"BLOCK_P": 64, "CO_CAP": 128}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_P": 128, "CO_CAP": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_P": 64, "CO_CAP": 64}, num_warps=4, num_stages=3),
]


def tile_sizes(args: dict) -> dict:
    """The block sizes that follow from a config and a call: BLOCK_CI (K chunk), BLOCK_CO."""
    return dict(BLOCK_CI=block_ci(args["C_IN"]), BLOCK_CO=block_co(max(args["CA"], args["CB"]), args["CO_CAP"]))


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Keeps the configs whose accumulators fit the register budget (and, for few output channels, are not
    mostly padding), else the cheapest."""
    args = {**named_args, **kwargs}

    def registers(c: triton.Config) -> float:
        return tile_registers(c.kwargs["BLOCK_P"], tile_sizes({**args, **c.kwargs})["BLOCK_CO"], c.num_warps)

    return prune_or_fallback(configs, lambda c: registers(c) <= TILE_REGISTERS / 2, registers)


# y[p, :CA] = act(ba + sum_{t<NA} x[shift_A(p, t - NA//2)] @ Wa[:, :, t]^T),
# y[p, CA:] = act(bb + sum_{t<NB} x[shift_B(p, t - NB//2)] @ Wb[:, :, t]^T), x read as 0 outside the image.
@triton.autotune(
    configs=tuning_configs(CONFIGS),
    key=["NPIX", "H", "W", "C_IN", "CA", "CB", "NA", "NB", "A_ALONG_H", "B_ALONG_H"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.heuristics({name: (lambda args, name=name: tile_sizes(args)[name]) for name in ("BLOCK_CI", "BLOCK_CO")})
@triton.jit
def asymmetric_conv_parallel_kernel(
    x_ptr,  # [N, H, W, C_IN] input (NHWC)
    wa_ptr,  # [CA, C_IN, NA] conv a ([CA, C_IN, 1, NA] or [CA, C_IN, NA, 1])
    ba_ptr,  # [CA] bias a, read when HAS_BA
    wb_ptr,  # [CB, C_IN, NB] conv b
    bb_ptr,  # [CB] bias b, read when HAS_BB
    y_ptr,  # [N, H, W, CA + CB] output (NHWC): a's channels, then b's
    NPIX,  # N * H * W
    H,
    W,
    C_IN,
    CA,
    CB,
    NA: tl.constexpr,  # taps of conv a (odd)
    NB: tl.constexpr,  # taps of conv b (odd)
    A_ALONG_H: tl.constexpr,  # conv a is NA x 1 (else 1 x NA)
    B_ALONG_H: tl.constexpr,
    HAS_BA: tl.constexpr,
    HAS_BB: tl.constexpr,
    ACT: tl.constexpr,  # 0 none, 1 relu, 2 relu6
    BLOCK_P: tl.constexpr,
    CO_CAP: tl.constexpr,  # most output channels per conv and program (BLOCK_CO is derived from it)
    BLOCK_CI: tl.constexpr,  # K chunk
    BLOCK_CO: tl.constexpr,  # output channels of each conv per program
):
    pid = tl.program_id(0)
    num_co = tl.cdiv(tl.maximum(CA, CB), BLOCK_CO)
    pid_co = pid % num_co
    pid_p = pid // num_co
    pix = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = pix < NPIX
    w = pix % W
    h = (pix // W) % H
    if A_ALONG_H:
        pos_a = h
        extent_a = H
        step_a = W
    else:
        pos_a = w
        extent_a = W
        step_a = 1
    if B_ALONG_H:
        pos_b = h
        extent_b = H
        step_b = W
    else:
        pos_b = w
        extent_b = W
        step_b = 1

    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ca_ok = co < CA
    cb_ok = co < CB
    # Conv b runs right after conv a over the same pixel tile, while it is still in L1/L2.
    acc_a = conv1d(tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32), x_ptr, wa_ptr, pix, pos_a, extent_a, step_a, p_ok,
                   C_IN, co, ca_ok, NA, BLOCK_CI)
    acc_b = conv1d(tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32), x_ptr, wb_ptr, pix, pos_b, extent_b, step_b, p_ok,
                   C_IN, co, cb_ok, NB, BLOCK_CI)
    store_tile(acc_a, y_ptr, pix, p_ok, co, ca_ok, CA + CB, ba_ptr, y_ptr, HAS_BA, False, ACT)
    store_tile(acc_b, y_ptr + CA, pix, p_ok, co, cb_ok, CA + CB, bb_ptr, y_ptr, HAS_BB, False, ACT)


def grid(meta: dict) -> tuple[int]:
    return (triton.cdiv(meta["NPIX"], meta["BLOCK_P"]) * triton.cdiv(max(meta["CA"], meta["CB"]), meta["BLOCK_CO"]),)


def launch_args(
    x: Tensor, weight_a: Tensor, bias_a: Tensor | None, weight_b: Tensor, bias_b: Tensor | None, activation: str
) -> dict:
    """The kernel's arguments for one call, the new output ``y_ptr`` among them."""
    check_nhwc("x", x)
    n, cin, h, w = x.shape
    ca, cb = weight_a.shape[0], weight_b.shape[0]
    y = empty_nhwc((n, ca + cb, h, w), x)
    return dict(
        x_ptr=x, wa_ptr=weight_a, ba_ptr=weight_a if bias_a is None else bias_a, wb_ptr=weight_b,
        bb_ptr=weight_b if bias_b is None else bias_b, y_ptr=y, NPIX=n * h * w, H=h, W=w, C_IN=cin, CA=ca, CB=cb,
        NA=weight_a.shape[2] * weight_a.shape[3], NB=weight_b.shape[2] * weight_b.shape[3],
        A_ALONG_H=weight_a.shape[2] > 1, B_ALONG_H=weight_b.shape[2] > 1, HAS_BA=bias_a is not None,
        HAS_BB=bias_b is not None, ACT=activation_code(activation),
    )


def asymmetric_conv_parallel(
    x: Tensor,  # [N, Cin, H, W] channels_last
    weight_a: Tensor,  # [Ca, Cin, 1, n] or [Ca, Cin, n, 1]
    bias_a: Tensor | None,  # [Ca]
    weight_b: Tensor,  # [Cb, Cin, n, 1] or [Cb, Cin, 1, n]
    bias_b: Tensor | None,  # [Cb]
    activation: str,
) -> Tensor:  # [N, Ca + Cb, H, W] channels_last
    """The fused parallel pair with the Triton kernel; arguments as ``fastconv.ops._run`` passes them."""
    args = launch_args(x, weight_a, bias_a, weight_b, bias_b, activation)
    asymmetric_conv_parallel_kernel[grid](**args)
    return args["y_ptr"]
