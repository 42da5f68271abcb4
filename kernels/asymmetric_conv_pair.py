"""asymmetric_conv_pair: 1xn -> act -> nx1 -> act (or nx1 -> 1xn) in one kernel, the intermediate on chip.

Design. The second conv runs along one axis (H for nx1, W for 1xn). A program takes whole *lines* along
that axis (columns of the image for nx1, rows for 1xn; lines of several images may share a tile) and
BLOCK_CO output channels. Then every intermediate value the second conv needs lies in the program's own
tile or in the zero padding, so nothing is computed twice: the tile is its own halo. Per chunk of CM
intermediate channels:

    M = act(sum_t X[pix + (t - n1//2) * step1] @ W1[chunk, :, t]^T + b1)   # [P_OUT, CM], implicit GEMM
    scratch <- M                                                           # between two CTA barriers
    acc += sum_t scratch[r + t - n2//2] @ W2[:, chunk, t]^T                # [P_OUT, BLOCK_CO]
    y = act(acc + b2)

The first conv's taps are shifted reads of X from global memory (L1/L2 hits). The second conv's taps are
shifts of M along the line, which registers cannot do: M goes to a per-program scratch buffer (in the
storage dtype, as PyTorch's unfused pair rounds it) and comes back as shifted masked loads; a shift that
leaves the image reads 0 (the "same" padding of the intermediate). Both convs are tensor-core GEMMs with
K = channels x taps. As in ``inverted_residual``: the grid is persistent so that the buffer (programs x
P_OUT x CM values) stays in L2, two ``tl.debug_barrier()`` per chunk order its accesses, and the chunk loop
is not software-pipelined. InceptionV3's 17-pixel lines fill 7 of a 128-pixel tile (93%).

Programs over output-channel blocks (Cout > BLOCK_CO) recompute M; BLOCK_CO reaches 256 for that reason.
Lines longer than the config's tile grow the tile to the line (P_OUT = next power of two >= the line):
correct for any size, but past ~256 pixels the register tiles spill.
"""

from __future__ import annotations

import functools

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
    conv1d,
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

# Tile pixels P_OUT (at least; see tile_sizes), intermediate chunk CM, output-channel cap CO_CAP, warps,
# stages. First: the interpreter's. One stage: software pipelining of the first conv's 7-tap loop spills
# (measured on sm_90); the other warps on the SM hide the load latency instead.
CONFIGS = [
    triton.Config({"P_OUT": 64, "CM": 32, "CO_CAP": 128}, num_warps=8, num_stages=1),
    triton.Config({"P_OUT": 64, "CM": 32, "CO_CAP": 64}, num_warps=4, num_stages=1),
]


def _tile_pixels(p_out: int, second_along_h: bool, h: int, w: int) -> int:
    """A config's tile pixels, grown to hold one whole line."""
    return max(p_out, triton.next_power_of_2(h if second_along_h else w))


def tile_sizes(args: dict) -> dict:
    """The block sizes that follow from a config and a call: P_OUT grown to hold one whole line, BLOCK_CI
    (first conv's K chunk), BLOCK_CO."""
    return dict(
        P_OUT=_tile_pixels(args["P_OUT"], args["SECOND_ALONG_H"], args["H"], args["W"]),
        BLOCK_CI=block_ci(args["C_IN"]),
        BLOCK_CO=block_co(args["C_OUT"], args["CO_CAP"]),
    )


@functools.cache
def _scratch_per_program(second_along_h: bool, h: int, w: int) -> int:
    """Scratch values one program needs under the most demanding config: P_OUT x CM."""
    return max(_tile_pixels(c.kwargs["P_OUT"], second_along_h, h, w) * c.kwargs["CM"] for c in CONFIGS)


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Keeps the configs whose register tiles fit the budget for this shape, else the cheapest."""
    args = {**named_args, **kwargs}

    def registers(c: triton.Config) -> float:
        z = tile_sizes({**args, **c.kwargs})
        return max(tile_registers(z["P_OUT"], z["BLOCK_CO"], c.num_warps),
                   tile_registers(z["P_OUT"], c.kwargs["CM"], c.num_warps))

    return prune_or_fallback(configs, lambda c: registers(c) <= TILE_REGISTERS, registers)


# See the module docstring. With the first conv along axis A1 (n1 taps) and the second along A2 (n2 taps):
# y = act(b2 + sum_{t<n2} W2[:, :, t] * M[shift_A2(t - n2//2)]),
# M = act(b1 + sum_{t<n1} W1[:, :, t] * x[shift_A1(t - n1//2)]), x and M read as 0 outside the image.
@triton.autotune(
    configs=tuning_configs(CONFIGS),
    key=["N", "H", "W", "C_IN", "C_MID", "C_OUT", "N1", "N2", "FIRST_ALONG_H", "SECOND_ALONG_H"],
    prune_configs_by={"early_config_prune": _prune},
)
@triton.heuristics({name: (lambda args, name=name: tile_sizes(args)[name])
                    for name in ("P_OUT", "BLOCK_CI", "BLOCK_CO")})
@triton.jit
def asymmetric_conv_pair_kernel(
    x_ptr,  # [N, H, W, C_IN] input (NHWC)
    w1_ptr,  # [C_MID, C_IN, N1] first conv ([C_MID, C_IN, 1, N1] or [C_MID, C_IN, N1, 1])
    b1_ptr,  # [C_MID] first bias, read when HAS_B1
    w2_ptr,  # [C_OUT, C_MID, N2] second conv ([C_OUT, C_MID, N2, 1] or [C_OUT, C_MID, 1, N2])
    b2_ptr,  # [C_OUT] second bias, read when HAS_B2
    y_ptr,  # [N, H, W, C_OUT] output (NHWC)
    s_ptr,  # [programs, P_OUT, CM] scratch (x's dtype): each program's chunk of M
    S_NUMEL,  # values in the scratch buffer: the grid has no more programs than it has room for
    N,
    H,
    W,
    C_IN,
    C_MID,
    C_OUT,
    N1: tl.constexpr,  # taps of the first conv (odd)
    N2: tl.constexpr,  # taps of the second conv (odd)
    FIRST_ALONG_H: tl.constexpr,  # the first conv is N1 x 1 (else 1 x N1)
    SECOND_ALONG_H: tl.constexpr,  # the second conv is N2 x 1 (else 1 x N2): tiles hold whole columns
    HAS_B1: tl.constexpr,
    HAS_B2: tl.constexpr,
    ACT: tl.constexpr,  # after each conv: 0 none, 1 relu, 2 relu6
    P_OUT: tl.constexpr,  # tile pixels, a power of two >= one line
    CM: tl.constexpr,  # intermediate channels per chunk
    CO_CAP: tl.constexpr,  # most output channels per program (BLOCK_CO is derived from it)
    BLOCK_CI: tl.constexpr,  # K chunk of the first conv
    BLOCK_CO: tl.constexpr,  # output channels per program
):
    DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    if SECOND_ALONG_H:
        line_len = H
        lines = N * W
    else:
        line_len = W
        lines = N * H
    lines_per_tile = P_OUT // line_len
    pid = tl.program_id(0)
    scratch = s_ptr + pid.to(tl.int64) * (P_OUT * CM)
    num_co = tl.cdiv(C_OUT, BLOCK_CO)
    r = tl.arange(0, P_OUT)
    s = r % line_len
    c = tl.arange(0, CM)
    for tile in tl.range(pid, tl.cdiv(lines, lines_per_tile) * num_co, tl.num_programs(0), num_stages=1):
        pid_co = tile % num_co
        pid_t = tile // num_co

        # Tile row r is position s of line `line`; lines are columns (n, w) or rows (n, h).
        line = pid_t.to(tl.int64) * lines_per_tile + r // line_len
        r_ok = (r < lines_per_tile * line_len) & (line < lines)
        if SECOND_ALONG_H:
            w = line % W
            h = s
            pix = (line - w) * H + s * W + w  # (n * H + h) * W + w with line = n * W + w
        else:
            h = line % H
            w = s
            pix = line * W + s
        if FIRST_ALONG_H:
            pos1 = h
            extent1 = H
            step1 = W
        else:
            pos1 = w
            extent1 = W
            step1 = 1

        co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
        co_ok = co < C_OUT
        acc = tl.zeros((P_OUT, BLOCK_CO), dtype=tl.float32)
        for m0 in tl.range(0, C_MID, CM, num_stages=1):
            cm = m0 + c
            cm_ok = cm < C_MID
            mid = conv1d(tl.zeros((P_OUT, CM), dtype=tl.float32), x_ptr, w1_ptr, pix, pos1, extent1, step1, r_ok,
                         C_IN, cm, cm_ok, N1, BLOCK_CI)
            mid = activate(add_bias(mid, b1_ptr, cm, cm_ok, HAS_B1), ACT)
            tl.debug_barrier()  # the previous chunk's shifted reads are done before M is overwritten
            tl.store(scratch + r[:, None] * CM + c[None, :], to_dtype(mid, DTYPE))
            tl.debug_barrier()  # M is visible to every thread of the program

            # Rolled (unrolled, all N2 taps' tiles would be loaded at once and spill); pipelining this loop
            # is safe: its first loads are issued after the barrier.
            for t in range(0, N2):
                shifted = s + (t - N2 // 2)
                ok = r_ok & (shifted >= 0) & (shifted < line_len)
                tap = tl.load(scratch + (r + (t - N2 // 2))[:, None] * CM + c[None, :], mask=ok[:, None],
                              other=0.0).to(tl.float32)
                w2 = tl.load(w2_ptr + co[None, :] * (C_MID * N2) + cm[:, None] * N2 + t,
                             mask=cm_ok[:, None] & co_ok[None, :], other=0.0).to(tl.float32)
                acc = mma(tap, w2, acc, DTYPE)
        store_tile(acc, y_ptr, pix, r_ok, co, co_ok, C_OUT, b2_ptr, y_ptr, HAS_B2, False, ACT)


def grid(meta: dict) -> tuple[int]:
    line_len, lines = (meta["H"], meta["W"]) if meta["SECOND_ALONG_H"] else (meta["W"], meta["H"])
    tiles = triton.cdiv(meta["N"] * lines, meta["P_OUT"] // line_len)
    return persistent_grid(tiles * triton.cdiv(meta["C_OUT"], meta["BLOCK_CO"]), meta["S_NUMEL"],
                           meta["P_OUT"] * meta["CM"])


def launch_args(
    x: Tensor, weight1: Tensor, bias1: Tensor | None, weight2: Tensor, bias2: Tensor | None, activation: str
) -> dict:
    """The kernel's arguments for one call, the new output ``y_ptr`` among them."""
    check_nhwc("x", x)
    n, cin, h, w = x.shape
    cout = weight2.shape[0]
    y = empty_nhwc((n, cout, h, w), x)
    second_along_h = weight2.shape[2] > 1
    scratch = x.new_empty(persistent_slots(x.device) * _scratch_per_program(second_along_h, h, w))
    return dict(
        x_ptr=x, w1_ptr=weight1, b1_ptr=weight1 if bias1 is None else bias1, w2_ptr=weight2,
        b2_ptr=weight2 if bias2 is None else bias2, y_ptr=y, s_ptr=scratch, S_NUMEL=scratch.numel(),
        N=n, H=h, W=w, C_IN=cin, C_MID=weight1.shape[0], C_OUT=cout,
        N1=weight1.shape[2] * weight1.shape[3], N2=weight2.shape[2] * weight2.shape[3],
        FIRST_ALONG_H=weight1.shape[2] > 1, SECOND_ALONG_H=second_along_h,
        HAS_B1=bias1 is not None, HAS_B2=bias2 is not None, ACT=activation_code(activation),
    )


def asymmetric_conv_pair(
    x: Tensor,  # [N, Cin, H, W] channels_last
    weight1: Tensor,  # [Cmid, Cin, 1, n] or [Cmid, Cin, n, 1]
    bias1: Tensor | None,  # [Cmid]
    weight2: Tensor,  # [Cout, Cmid, m, 1] or [Cout, Cmid, 1, m]
    bias2: Tensor | None,  # [Cout]
    activation: str,
) -> Tensor:  # [N, Cout, H, W] channels_last
    """The fused pair with the Triton kernel; arguments as ``fastconv.ops._run`` passes them."""
    args = launch_args(x, weight1, bias1, weight2, bias2, activation)
    asymmetric_conv_pair_kernel[grid](**args)
    return args["y_ptr"]
