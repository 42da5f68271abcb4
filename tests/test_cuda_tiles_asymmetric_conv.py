"""The CUDA kernels of asymmetric_conv_pair and asymmetric_conv_parallel, emulated on the CPU.

``torch.ops.fastconv_tiles.<op>`` (csrc/cpu/asymmetric_conv_cuda_tiles.cpp) plans each launch as the CUDA
launcher does on an H100/H200 and runs every block's phases (csrc/common/asymmetric_conv_tile.h) over every
thread index, in the kernel's order, on a buffer laid out as the block's shared memory and filled with NaN
first: a wrong index, a missed mask or a read of something no phase wrote shows in the output. Only the tap
loop's tensor-core / CUDA-core arithmetic is replaced by a scalar product over the same arrays.

The shapes cover both pair orders, 1x3/3x1/1x5/5x1/1x7/7x1, channel counts that are not multiples of the
32-channel groups or the K chunks, odd spatial sizes, several tiles per image with partial tiles at the
edges, output channels split over blocks and several channel chunks per block, batch 2, and InceptionV3's
layer shapes with their channels cut down.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from op_testing import DTYPES, Tolerance, assert_within_tolerance, cast

from fastconv import backends, reference
from fastconv.shapes import LayerCase, layer_cases

PAIR = "asymmetric_conv_pair"
PARALLEL = "asymmetric_conv_parallel"


def _emulators() -> dict:
    """The emulator ops by name, or {} when fastconv._C is missing or was built without them."""
    if backends.extension() is None:
        return {}
    try:
        return {op: getattr(torch.ops.fastconv_tiles, op) for op in (PAIR, PARALLEL)}
    except (AttributeError, RuntimeError):
        return {}


EMULATORS = _emulators()
pytestmark = pytest.mark.skipif(
    not EMULATORS,
    reason="fastconv._C lacks the fastconv_tiles emulator ops (built before csrc/cpu/asymmetric_conv_cuda_tiles.cpp)",
)


def case(op: str, name: str, x: tuple[int, int, int, int], weights: tuple, activation: str = "relu"):
    """A pytest param (case, batch): ``x`` is [N, C, H, W]."""
    layer = LayerCase("tiles", op, name, (1, *x[1:]), weights, activation=activation)
    return pytest.param(layer, x[0], id=f"{name}-n{x[0]}")


# The CUDA tiles (plan_pair / plan_parallel) at these shapes, in fp32 (fp16/bf16 tiles are larger): noted where
# a case exists to reach a path.
PAIR_CASES = [
    case(PAIR, "1x7-7x1-odd", (1, 5, 9, 11), ((17, 5, 1, 7), (24, 17, 7, 1))),
    case(PAIR, "7x1-1x7", (2, 17, 7, 8), ((3, 17, 7, 1), (5, 3, 1, 7)), "relu6"),
    # 70 output channels: two channel slices per tile, the second of 6 channels.
    case(PAIR, "1x3-3x1-masked", (2, 3, 13, 5), ((5, 3, 1, 3), (70, 5, 3, 1))),
    case(PAIR, "3x1-1x3-partial-tiles", (2, 24, 19, 21), ((40, 24, 3, 1), (33, 40, 1, 3)), "none"),
    case(PAIR, "5x1-1x5", (1, 24, 6, 3), ((16, 24, 5, 1), (96, 16, 1, 5)), "none"),
    case(PAIR, "kernel-over-image", (1, 4, 2, 3), ((6, 4, 1, 7), (5, 6, 7, 1))),
    # fp32: 128 tiles fill the GPU, so one block per tile computes all 130 channels, in 3 chunks; fp16/bf16:
    # 64 tiles, two blocks per tile of 2 chunks each.
    case(PAIR, "1x3-3x1-many-tiles", (2, 4, 64, 64), ((8, 4, 1, 3), (130, 8, 3, 1))),
    # 72 intermediate channels: 2 chunks of conv1, the last K chunk of conv2 masked.
    case(PAIR, "1x7-7x1-17x17", (2, 40, 17, 17), ((72, 40, 1, 7), (80, 72, 7, 1))),
]
PARALLEL_CASES = [
    case(PARALLEL, "1x3||3x1", (2, 10, 9, 7), ((20, 10, 1, 3), (40, 10, 3, 1))),
    case(PARALLEL, "1x3||3x1-partial-tiles", (1, 48, 20, 20), ((40, 48, 1, 3), (33, 48, 3, 1)), "relu6"),
    case(PARALLEL, "3x1||1x5", (2, 9, 8, 8), ((7, 9, 3, 1), (70, 9, 1, 5)), "none"),
    case(PARALLEL, "1x7||7x1-odd", (1, 5, 11, 13), ((24, 5, 1, 7), (17, 5, 7, 1))),
    case(PARALLEL, "kernel-over-image", (2, 3, 1, 2), ((4, 3, 1, 3), (5, 3, 3, 1))),
]


def _cut(layer: LayerCase, factor: int) -> LayerCase:
    """``layer`` with its channel counts divided by ``factor``: the same kernels and spatial size."""
    n, c, h, w = layer.x
    weights = tuple((o // factor, i // factor, kh, kw) for o, i, kh, kw in layer.weights)
    return dataclasses.replace(layer, x=(n, c // factor, h, w), weights=weights)


LAYER_CASES = [
    pytest.param(_cut(layer, 8), 2, id=layer.id()) for op in (PAIR, PARALLEL) for layer in layer_cases(op=op)
]


def check_emulator(layer: LayerCase, batch: int, tol: Tolerance) -> None:
    args = layer.make_args(batch=batch, dtype=tol.dtype)
    out = EMULATORS[layer.op](*args)
    ref_op = getattr(reference, layer.op)
    expected = ref_op(*cast(args, torch.float64))
    assert out.shape == expected.shape and out.dtype == tol.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_within_tolerance(out, expected, tol, lambda: ref_op(*args))


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize(("layer", "batch"), PAIR_CASES + PARALLEL_CASES)
def test_small_shapes(layer: LayerCase, batch: int, tol: Tolerance) -> None:
    check_emulator(layer, batch, tol)


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize(("layer", "batch"), LAYER_CASES)
def test_network_layers_cut_down(layer: LayerCase, batch: int, tol: Tolerance) -> None:
    check_emulator(layer, batch, tol)


@pytest.mark.parametrize(("layer", "batch"), [PAIR_CASES[3], PARALLEL_CASES[1]])
def test_float64_matches_closely(layer: LayerCase, batch: int) -> None:
    """fp64 shares the fp32 path: its result is the reference's up to rounding."""
    check_emulator(layer, batch, Tolerance(torch.float64, 1e-12))


@pytest.mark.parametrize("op", [PAIR, PARALLEL])
def test_unaligned_channels_take_scalar_loads(op: str) -> None:
    """fp16 input not 16-byte aligned: the kernels' scalar input loads give the 16-byte loads' result."""
    layer = PAIR_CASES[3].values[0] if op == PAIR else PARALLEL_CASES[1].values[0]  # cin 24, 48
    args = layer.make_args(batch=1, dtype=torch.float16)
    x = args[0]
    # x channels_last at an odd element offset: not 16-byte aligned.
    _, c, h, w = x.shape
    shifted = torch.empty(x.numel() + 1, dtype=x.dtype)[1:].as_strided(x.shape, (h * w * c, 1, w * c, c))
    shifted.copy_(x)
    out = EMULATORS[op](shifted, *args[1:])
    assert torch.equal(out, EMULATORS[op](*args))


@pytest.mark.parametrize(("layer", "batch"), [PAIR_CASES[0], PARALLEL_CASES[0]])
def test_empty_batch(layer: LayerCase, batch: int) -> None:
    args = layer.make_args(batch=0)
    out = EMULATORS[layer.op](*args)
    assert out.shape == layer.out_shape(0)


def test_intermediate_too_large_for_shared_memory_is_refused() -> None:
    """20000 intermediate channels do not fit one block's shared memory even for a 1-pixel tile: a ValueError
    that says so, not a launch that fails."""
    layer = LayerCase("tiles", PAIR, "huge-cmid", (1, 1, 5, 5), ((20000, 1, 7, 1), (1, 20000, 1, 7)))
    with pytest.raises(ValueError, match=r"intermediate of 20000 channels .* does not fit"):
        EMULATORS[PAIR](*layer.make_args())
