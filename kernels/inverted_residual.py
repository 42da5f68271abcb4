"""inverted_residual: MobileNetV2's whole block in one kernel; the expanded tensor never reaches device memory.

Design. A program owns a TILE_H x TILE_W tile of output pixels of one image and BLOCK_CO output channels
(all of them up to 256), and loops over chunks of HC hidden channels:

    E = act(X[box] @ We[chunk]^T + be)           # [HALO_P, HC] tensor-core GEMM over the input box
    scratch <- E                                 # between two CTA barriers
    D = act(sum_taps scratch[tap] * wd + bd)     # [P_OUT, HC] depthwise kxk, stride 1 or 2
    acc += D @ Wp[:, chunk]^T                    # [P_OUT, BLOCK_CO] tensor-core GEMM
    y = acc + bp (+ x)

The box is the input region the tile's taps reach, clipped to the image. Its positions outside the image
are the depthwise zero padding (padding applies to the expanded tensor: 0, not act(be)); they take no slot
and their taps read 0. Clipping is what makes small images cheap: a 7x7 tile of a 7x7 image needs a 7x7 box
(64 rows), not 9x9.

Why a scratch buffer: the depthwise stage needs each output pixel's kxk neighbours of E, which registers
cannot shift. Each chunk of E goes to a per-program scratch buffer (in the storage dtype, as PyTorch's own
unfused block rounds it) and the K*K shifted windows come back as plain masked loads, which hit L1. The
alternatives were measured on sm_90 code: ``tl.gather`` on the register tile compiles to ~HALO_P/32 warp
shuffles per gathered value (20x the tensor-core work of the block, and spills); recomputing E at every
shifted position costs K*K expand GEMMs. The buffer stays in L2 because the grid is persistent: at most
PROGRAMS_PER_SM programs per SM, each looping over tiles, so it holds programs x HALO_P x HC values (a few
MB), never a tensor of the batch's size. Two ``tl.debug_barrier()`` per chunk order the scratch accesses of
the program's threads (bar.sync also orders their global memory accesses), and the chunk loop is not
software-pipelined (``num_stages=1``), so no load of a chunk's scratch can be issued before its store.
Without an expand stage (expansion factor 1) E is the input box itself.

Each chunk repeats the expand GEMM on the box's halo (box rows / tile pixels: 1.3-2x) and re-reads the box
from L1/L2; programs over output-channel blocks (only when Cout > 256) recompute E.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    TILE_REGISTERS,
    activate,
    activation_code,
    add_bias,
    block_ci,
    block_co,
    check_nhwc,
    empty_nhwc,
    mma,
    persistent_grid,
    persistent_slots,
    prune_or_fallback,
    store_tile,
    tile_registers,
    to_dtype,
    tuning_configs,
)

# Output tile TILE_H x TILE_W, hidden chunk HC, output-channel cap CO_CAP, warps, stages (of the expand GEMM's
# K loop). First: the interpreter's. (8, 8): stride 1 on large images (box 10x10); (7, 8): stride 2 (box
# 15x17); (7, 7): 7x7 images whole, and stride 2 onto 7x7 (box 14x15); (14, 7): 14x14 images in two tiles;
# (2, 28): 28x28 rows. Each compiles without spills for fp16, bf16 and fp32 at 8 warps (tests/
# test_triton_compile.py); HC 32 or CO_CAP 256 spill on boxes of 128 rows or more.
CONFIGS = [
    triton.Config({"TILE_H": 8, "TILE_W": 8, "HC": 16, "CO_CAP": 128}, num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 7, "TILE_W": 8, "HC": 16, "CO_CAP": 128}, num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 7, "TILE_W": 7, "HC": 16, "CO_CAP": 128}, num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 14, "TILE_W": 7, "HC": 16, "CO_CAP": 128}, num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 2, "TILE_W": 28, "HC": 32, "CO_CAP": 128}, num_warps=8, num_stages=2),
]
# Rows of E times tile pixels: the two register tiles of a chunk. Past it sm_90 code spills (measured).
MAX_BOX_PIXELS = 256 * 64


def _box_rows(th: int, tw: int, k: int, stride: int, h: int) -> int:
    """Rows of E for a TH x TW output tile: its input box, rows clipped to the image, padded to a power of 2."""
    return triton.next_power_of_2(min((th - 1) * stride + k, h) * ((tw - 1) * stride + k))


def tile_sizes(args: dict) -> dict:
    """The block sizes that follow from a config and a call: P_OUT (the tile's pixels, padded to a power
    of two), HALO_P (rows of E), BLOCK_CI (expand GEMM K chunk), BLOCK_CO."""
    return dict(
        P_OUT=triton.next_power_of_2(args["TILE_H"] * args["TILE_W"]),
        HALO_P=_box_rows(args["TILE_H"], args["TILE_W"], args["K"], args["STRIDE"], args["H"]),
        BLOCK_CI=block_ci(args["C_IN"]),
        BLOCK_CO=block_co(args["C_OUT"], args["CO_CAP"]),
    )


@functools.cache
def _scratch_per_program(k: int, stride: int, h: int) -> int:
    """Scratch values one program needs under the most demanding config: HALO_P x HC."""
    return max(_box_rows(c.kwargs["TILE_H"], c.kwargs["TILE_W"], k, stride, h) * c.kwargs["HC"] for c in CONFIGS)


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Keeps the configs whose box fits MAX_BOX_PIXELS and whose register tiles fit the budget; of those, the ones
    whose tile is at least half real pixels of this image, else the cheapest."""
    args = {**named_args, **kwargs}

    def sizes(c: triton.Config) -> dict:
        return tile_sizes({**args, **c.kwargs})

    # fp32 products run on FMA units, whose operands take registers too: half the accumulator budget.
    acc_budget = TILE_REGISTERS // 2 if args["x_ptr"].dtype == torch.float32 else TILE_REGISTERS

    def fits(c: triton.Config) -> bool:
        z, warps = sizes(c), c.num_warps
        return (
            z["HALO_P"] * z["P_OUT"] <= MAX_BOX_PIXELS
            and tile_registers(z["HALO_P"], c.kwargs["HC"], warps) <= TILE_REGISTERS
            and tile_registers(z["P_OUT"], z["BLOCK_CO"], warps) <= acc_budget
        )

    def mostly_real(c: triton.Config) -> bool:
        useful = min(c.kwargs["TILE_H"], args["HO"]) * min(c.kwargs["TILE_W"], args["WO"])
        return 2 * useful >= sizes(c)["P_OUT"]

    def cost(c: triton.Config) -> float:
        z = sizes(c)
        return (z["HALO_P"] * c.kwargs["HC"] + z["P_OUT"] * z["BLOCK_CO"]) / c.num_warps

    # No config fits 5x5 kernels with stride 2 on large images: the cheapest then runs (it may spill).
    valid = [c for c in configs if fits(c)] or [min(configs, key=cost)]
    return prune_or_fallback(valid, mostly_real, cost)


# See the module docstring. y[n, oh, ow, :] = bp + x[n, oh, ow, :] (if RESIDUAL) +
#   sum_h Wp[:, h] * act(bd[h] + sum_{i,j<K} wd[h, i, j] * E[n, oh*S - K//2 + i, ow*S - K//2 + j, h]),
#   E = act(X @ We^T + be) inside the image and 0 outside (E = X when not HAS_EXPAND).
@triton.autotune(
    configs=tuning_configs(CONFIGS),
    key=["N", "H", "W", "C_IN", "C_HID", "C_OUT", "K", "STRIDE"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.heuristics({name: (lambda args, name=name: tile_sizes(args)[name])
                    for name in ("P_OUT", "HALO_P", "BLOCK_CI", "BLOCK_CO")})
@triton.jit
def inverted_residual_kernel(
    x_ptr,  # [N, H, W, C_IN] block input (NHWC)
    we_ptr,  # [C_HID, C_IN] expand weight ([C_HID, C_IN, 1, 1]), read when HAS_EXPAND
    be_ptr,  # [C_HID] expand bias, read when HAS_BE
    wd_ptr,  # [C_HID, K, K] depthwise weight ([C_HID, 1, K, K])
    bd_ptr,  # [C_HID] depthwise bias, read when HAS_BD
    wp_ptr,  # [C_OUT, C_HID] projection weight ([C_OUT, C_HID, 1, 1])
    bp_ptr,  # [C_OUT] projection bias, read when HAS_BP
    y_ptr,  # [N, HO, WO, C_OUT] output (NHWC)
    s_ptr,  # [programs, HALO_P, HC] scratch (x's dtype): each program's chunk of E
    S_NUMEL,  # values in the scratch buffer: the grid has no more programs than it has room for
    N,
    H,
    W,
    HO,
    WO,
    C_IN,
    C_HID,  # hidden channels (C_IN when not HAS_EXPAND)
    C_OUT,
    K: tl.constexpr,  # depthwise kernel size (3 or 5), padding K // 2
    STRIDE: tl.constexpr,  # depthwise stride (1 or 2)
    HAS_EXPAND: tl.constexpr,
    HAS_BE: tl.constexpr,
    HAS_BD: tl.constexpr,
    HAS_BP: tl.constexpr,
    RESIDUAL: tl.constexpr,  # add x (stride 1, C_IN == C_OUT)
    ACT: tl.constexpr,  # of the expand and depthwise stages: 0 none, 1 relu, 2 relu6
    TILE_H: tl.constexpr,
    TILE_W: tl.constexpr,
    HC: tl.constexpr,  # hidden channels per chunk
    CO_CAP: tl.constexpr,  # most output channels per program (BLOCK_CO is derived from it)
    P_OUT: tl.constexpr,  # TILE_H * TILE_W padded to a power of two
    HALO_P: tl.constexpr,  # rows of E: the largest clipped box, padded to a power of two
    BLOCK_CI: tl.constexpr,  # K chunk of the expand GEMM
    BLOCK_CO: tl.constexpr,  # output channels per program
):
    PAD: tl.constexpr = K // 2
    BOX_H: tl.constexpr = (TILE_H - 1) * STRIDE + K
    BOX_W: tl.constexpr = (TILE_W - 1) * STRIDE + K
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    scratch = s_ptr + pid.to(tl.int64) * (HALO_P * HC)
    num_co = tl.cdiv(C_OUT, BLOCK_CO)
    tiles_w = tl.cdiv(WO, TILE_W)
    tiles_h = tl.cdiv(HO, TILE_H)
    p = tl.arange(0, P_OUT)
    q = tl.arange(0, HALO_P)
    c = tl.arange(0, HC)
    for tile in tl.range(pid, N * tiles_h * tiles_w * num_co, tl.num_programs(0), num_stages=1):
        pid_co = tile % num_co
        t = tile // num_co
        oh0 = (t // tiles_w) % tiles_h * TILE_H
        ow0 = t % tiles_w * TILE_W
        n = t // (tiles_w * tiles_h)

        # The tile's output pixels.
        py = p // TILE_W
        px = p % TILE_W
        oh = oh0 + py
        ow = ow0 + px
        p_ok = (p < TILE_H * TILE_W) & (oh < HO) & (ow < WO)

        # The input box the tile's taps reach: BOX_W columns from `left` (those outside the image hold
        # zeros) by the rows [ih0, ih0 + box_rows) inside the image, row-major in E. A tap's row in E is then
        # a fixed offset from its output pixel's, which the compiler folds into the load.
        top = oh0 * STRIDE - PAD
        ih0 = tl.maximum(top, 0)
        box_rows = tl.minimum(top + BOX_H, H) - ih0
        left = ow0 * STRIDE - PAD
        qy = q // BOX_W
        iw = left + q % BOX_W
        q_in = (qy < box_rows) & (iw >= 0) & (iw < W)
        box_pix = (n * H + ih0 + qy).to(tl.int64) * W + iw  # [HALO_P] pixel index
        taps = scratch + (((py * STRIDE + top - ih0) * BOX_W + px * STRIDE) * HC)[:, None] + c[None, :]

        co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co_ok = co < C_OUT
        acc = tl.zeros((P_OUT, BLOCK_CO), dtype=tl.float32)
        for h0 in tl.range(0, C_HID, HC, num_stages=1, disable_licm=True):
            hc = h0 + c
            hc_ok = hc < C_HID
            if HAS_EXPAND:
                e = tl.zeros((HALO_P, HC), dtype=tl.float32)
                for c0 in range(0, C_IN, BLOCK_CI):
                    ci = c0 + tl.arange(0, BLOCK_CI)
                    ci_ok = ci < C_IN
                    xa = tl.load(x_ptr + box_pix[:, None] * C_IN + ci[None, :],
                                 mask=q_in[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)
                    wb = tl.load(we_ptr + hc[None, :] * C_IN + ci[:, None], mask=ci_ok[:, None] & hc_ok[None, :],
                                 other=0.0).to(tl.float32)
                    e = mma(xa, wb, e, DTYPE)
                # Outside the image the expanded tensor is the depthwise padding: 0, not act(be).
                e = tl.where(q_in[:, None], activate(add_bias(e, be_ptr, hc, hc_ok, HAS_BE), ACT), 0.0)
            else:
                e = tl.load(x_ptr + box_pix[:, None] * C_IN + hc[None, :], mask=q_in[:, None] & hc_ok[None, :],
                            other=0.0).to(tl.float32)
            tl.debug_barrier()  # the previous chunk's window reads are done before E is overwritten
            tl.store(scratch + q[:, None] * HC + c[None, :], to_dtype(e, DTYPE))
            tl.debug_barrier()  # E is visible to every thread of the program

            d = tl.zeros((P_OUT, HC), dtype=tl.float32)
            for t in tl.range(0, K * K, num_stages=1):
                i = t // K
                ih = oh * STRIDE - PAD + i
                row_ok = p_ok & (ih >= 0) & (ih < H)
                tap = tl.load(taps + (i * BOX_W + t % K) * HC, mask=row_ok[:, None], other=0.0).to(tl.float32)
                wv = tl.load(wd_ptr + hc * (K * K) + t, mask=hc_ok, other=0.0).to(tl.float32)
                d += tap * wv[None, :]
            d = activate(add_bias(d, bd_ptr, hc, hc_ok, HAS_BD), ACT)

            wp = tl.load(wp_ptr + co[None, :] * C_HID + hc[:, None], mask=hc_ok[:, None] & co_ok[None, :],
                         other=0.0).to(tl.float32)
            acc = mma(d, wp, acc, DTYPE)

        rows = (n * HO + oh).to(tl.int64) * WO + ow
        # With RESIDUAL the stride is 1 and C_IN == C_OUT: x has the output's pixels and channels.
        store_tile(acc, y_ptr, rows, p_ok, co, co_ok, C_OUT, bp_ptr, x_ptr, HAS_BP, RESIDUAL, 0)


def grid(meta: dict) -> tuple[int]:
    tiles = triton.cdiv(meta["HO"], meta["TILE_H"]) * triton.cdiv(meta["WO"], meta["TILE_W"])
    return persistent_grid(meta["N"] * tiles * triton.cdiv(meta["C_OUT"], meta["BLOCK_CO"]), meta["S_NUMEL"],
                           meta["HALO_P"] * meta["HC"])


def launch_args(
    x: Tensor,
    expand_weight: Tensor | None,
    expand_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    project_weight: Tensor,
    project_bias: Tensor | None,
    stride: int,
    residual: bool,
    activation: str,
) -> dict:
    """The kernel's arguments for one call, the new output ``y_ptr`` among them."""
    check_nhwc("x", x)
    n, cin, h, w = x.shape
    k = dw_weight.shape[2]
    pad = k // 2
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    cout = project_weight.shape[0]
    y = empty_nhwc((n, cout, ho, wo), x)
    scratch = x.new_empty(persistent_slots(x.device) * _scratch_per_program(k, stride, h))
    return dict(
        x_ptr=x, we_ptr=dw_weight if expand_weight is None else expand_weight,
        be_ptr=dw_weight if expand_bias is None else expand_bias, wd_ptr=dw_weight,
        bd_ptr=dw_weight if dw_bias is None else dw_bias, wp_ptr=project_weight,
        bp_ptr=project_weight if project_bias is None else project_bias, y_ptr=y,
        s_ptr=scratch, S_NUMEL=scratch.numel(),
        N=n, H=h, W=w, HO=ho, WO=wo, C_IN=cin, C_HID=dw_weight.shape[0], C_OUT=cout, K=k, STRIDE=stride,
        HAS_EXPAND=expand_weight is not None, HAS_BE=expand_bias is not None, HAS_BD=dw_bias is not None,
        HAS_BP=project_bias is not None, RESIDUAL=bool(residual), ACT=activation_code(activation),
    )


def inverted_residual(
    x: Tensor,  # [N, Cin, H, W] channels_last
    expand_weight: Tensor | None,  # [Chid, Cin, 1, 1]
    expand_bias: Tensor | None,  # [Chid]
    dw_weight: Tensor,  # [Chid, 1, k, k]
    dw_bias: Tensor | None,  # [Chid]
    project_weight: Tensor,  # [Cout, Chid, 1, 1]
    project_bias: Tensor | None,  # [Cout]
    stride: int,
    residual: bool,
    activation: str,
) -> Tensor:  # [N, Cout, Ho, Wo] channels_last
    """The fused block with the Triton kernel; arguments as ``fastconv.ops._run`` passes them."""
    args = launch_args(x, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride,
                       residual, activation)
    inverted_residual_kernel[grid](**args)
    return args["y_ptr"]
