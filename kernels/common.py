"""What the fastconv Triton kernels share: activations, the tensor-core product, the bias/residual/activation
epilogue, the 1-D conv over taps of the asymmetric kernels, and how configs are chosen.

Habits every kernel keeps, so that the same code runs on an H200 and under ``TRITON_INTERPRET=1`` on CPU
tensors (the tests): every loaded value is converted to fp32 right after ``tl.load`` and back at ``tl.store``
(the interpreter's bf16 arithmetic works on raw bits; on the GPU the compiler folds the round trip into the
tensor-core load); ReLU6 is two min/max (libdevice is not available there); every load and store is masked;
pixel offsets are 64-bit, so a tensor may pass 2^31 elements. Accumulation is fp32 for every dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import triton
import triton.language as tl

# The interpreter mode of @triton.jit is fixed when a kernel is decorated, so it is read once, here.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)
_INTERPRET = tl.constexpr(INTERPRET)

ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}

# Register budget that the configs are pruned to: fp32 values of one [rows, cols] tile per thread. Above
# ~64 per tile the kernels with two live tiles (accumulator and intermediate) start to spill on sm_90.
TILE_REGISTERS = 64

CHANNELS_LAST = torch.channels_last

# Persistent kernels (the fused ones) keep a private scratch buffer per program; these size the grid.
PROGRAMS_PER_SM = 2
INTERPRETER_SLOTS = 3


def tuning_configs(configs: Sequence[triton.Config]) -> list[triton.Config]:
    """The configs autotuning chooses from: all of them on a GPU; the first (the largest block) under the
    interpreter, where the autotuner cannot time anything and each program instance costs ~20 ms."""
    return list(configs[:1] if INTERPRET else configs)


def tile_registers(rows: int, cols: int, num_warps: int) -> float:
    """fp32 registers per thread that a [rows, cols] tile takes."""
    return rows * cols / (32 * num_warps)


def block_ci(channels: int) -> int:
    """The input-channel chunk of an implicit GEMM: 32, or the padded channel count when smaller (a
    ``tl.dot`` operand is at least 16 wide)."""
    return max(16, min(triton.next_power_of_2(channels), 32))


def block_co(channels: int, cap: int) -> int:
    """Output channels per program: all of them (padded to a power of two) up to ``cap``."""
    return max(16, min(triton.next_power_of_2(channels), cap))


def prune_or_fallback(
    configs: Sequence[triton.Config], fits: Callable[[triton.Config], bool], cost: Callable[[triton.Config], float]
) -> list[triton.Config]:
    """The configs that ``fits`` keeps; when none does (a shape no config was made for), the cheapest one."""
    kept = [c for c in configs if fits(c)]
    return kept or [min(configs, key=cost)]


def persistent_slots(device: torch.device) -> int:
    """How many programs of a persistent kernel to plan scratch for: PROGRAMS_PER_SM per SM of the GPU;
    a few under the interpreter (CPU tensors), where programs run one after the other anyway."""
    if device.type != "cuda":
        return INTERPRETER_SLOTS
    return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def persistent_grid(tiles: int, scratch_numel: int, per_program: int) -> tuple[int]:
    """One program per tile, but no more than the scratch buffer has room for: programs then loop over tiles."""
    return (max(1, min(tiles, scratch_numel // per_program)),)


def empty_nhwc(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised channels_last output [N, C, H, W] with ``like``'s dtype and device."""
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device, memory_format=CHANNELS_LAST)


def check_nhwc(name: str, t: torch.Tensor) -> None:
    """The kernels index activations as [N, H, W, C] memory."""
    if not t.is_contiguous(memory_format=CHANNELS_LAST):
        raise ValueError(
            f"{name} must be a channels_last contiguous tensor for the Triton kernels; got strides {t.stride()} "
            f"for shape {list(t.shape)} (call the op through fastconv.ops, which normalises its arguments)"
        )


def activation_code(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {activation!r}")
    return ACTIVATIONS[activation]


# ----------------------------------------------------------------------------------------------------------
# Device functions.


@triton.jit
def activate(x, ACT: tl.constexpr):
    """ACT 0: identity, 1: relu, 2: relu6."""
    if ACT == 1:
        x = tl.maximum(x, 0.0)
    elif ACT == 2:
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    return x


@triton.jit
def to_dtype(x, DTYPE: tl.constexpr):
    """fp32 ``x`` rounded to DTYPE, to nearest even as on the GPU. The interpreter's fp32 -> bf16 cast
    truncates (it ignores fp_downcast_rounding), which doubles bf16 rounding errors there; so under the
    interpreter bf16 is rounded on the bits first, and the cast that follows is exact."""
    if _INTERPRET and DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)


@triton.jit
def mma(a, b, acc, DTYPE: tl.constexpr):
    """acc + a @ b, with a [M, K] and b [K, N] fp32 values rounded to the storage dtype DTYPE first.

    fp16/bf16: a tensor-core product (wgmma on sm_90) accumulating in fp32, exactly like cuBLAS; under the
    interpreter the same rounded operands are multiplied in fp32, which gives the same products (its own
    bf16 dot is wrong). fp32: IEEE fp32 (no tf32), since float32 results are held to 1e-4 relative.
    """
    if DTYPE == tl.float32:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    elif _INTERPRET:
        acc = tl.dot(to_dtype(a, DTYPE).to(tl.float32), to_dtype(b, DTYPE).to(tl.float32), acc,
                     input_precision="ieee")
    else:
        acc = tl.dot(a.to(DTYPE), b.to(DTYPE), acc)
    return acc


@triton.jit
def add_bias(acc, b_ptr, cols, col_ok, HAS_BIAS: tl.constexpr):
    """acc [rows, cols] + b[cols] broadcast over rows (b_ptr is not read without HAS_BIAS)."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def store_tile(
    acc,  # [P, C] fp32 accumulator
    y_ptr,  # [pixels, ld] output (an NHWC tensor seen as pixels x channels)
    rows,  # [P] int64 pixel index of each accumulator row
    row_ok,  # [P] rows to write
    cols,  # [C] channel of each accumulator column, relative to y_ptr
    col_ok,  # [C] columns to write
    ld,  # channels per pixel of y (and of r)
    b_ptr,  # [>= max(cols) + 1] bias, read when HAS_BIAS
    r_ptr,  # [pixels, ld] residual, read when HAS_RESIDUAL
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACT: tl.constexpr,
):
    """y[rows, cols] = act(acc + b[cols] + r[rows, cols]), converted to y's dtype."""
    acc = add_bias(acc, b_ptr, cols, col_ok, HAS_BIAS)
    offsets = rows[:, None] * ld + cols[None, :]
    mask = row_ok[:, None] & col_ok[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(r_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    acc = activate(acc, ACT)
    tl.store(y_ptr + offsets, to_dtype(acc, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv1d(
    acc,  # [P, CO] fp32 accumulator
    x_ptr,  # [pixels, C_IN] input (NHWC seen as pixels x channels)
    w_ptr,  # [C_OUT, C_IN, NT] weight of a 1xNT or NTx1 conv (both are this memory)
    pix,  # [P] int64 pixel index of each accumulator row
    pos,  # [P] position of each pixel along the conv's axis (w for 1xNT, h for NTx1)
    extent,  # size of that axis (W or H)
    step,  # pixel stride along that axis (1 for W, W for H)
    row_ok,  # [P] rows that exist
    C_IN,  # input channels
    cols,  # [CO] output channels of the accumulator columns
    col_ok,  # [CO] columns that exist
    NT: tl.constexpr,  # taps (odd)
    BLOCK_CI: tl.constexpr,  # input channels per step
):
    """acc += sum over taps t of x[pix + (t - NT//2) * step, :] @ w[cols, :, t]^T.

    A stride-1 "same" 1-D conv as an implicit GEMM whose K loop runs over (input-channel chunk, tap): each
    step is the pixel tile shifted along the conv's axis; shifted pixels that leave the image read zeros
    (the padding). One rolled loop, software-pipelined by the kernel's num_stages like a plain GEMM's.
    """
    for k in range(0, tl.cdiv(C_IN, BLOCK_CI) * NT):
        t = k % NT
        ci = (k // NT) * BLOCK_CI + tl.arange(0, BLOCK_CI)
        ci_ok = ci < C_IN
        shifted = pos + (t - NT // 2)
        ok = row_ok & (shifted >= 0) & (shifted < extent)
        a = tl.load(x_ptr + (pix + (t - NT // 2) * step)[:, None] * C_IN + ci[None, :],
                    mask=ok[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)
        b = tl.load(w_ptr + cols[None, :] * (C_IN * NT) + ci[:, None] * NT + t,
                    mask=ci_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        acc = mma(a, b, acc, x_ptr.dtype.element_ty)
    return acc
