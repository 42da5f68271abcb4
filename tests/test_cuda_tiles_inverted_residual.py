"""The CUDA inverted_residual kernel's tiling, emulated on the CPU, against fastconv.reference.

``torch.ops.fastconv_tiles.inverted_residual`` (csrc/cpu/inverted_residual_cuda_tiles.cpp) runs every block of the
grid the CUDA kernel (csrc/cuda/inverted_residual.cu) launches on an H200, through the kernel's own phases
(csrc/common/inverted_residual_tile.h) over a buffer laid out as its shared memory, with the tensor-core steps
as scalar GEMMs over the same arrays. Its shared memory starts as NaNs, so a phase that reads what no phase
wrote shows in the output. The cases cover each tile the kernel chooses (8x8, 4x8, 4x4 output pixels; stride 2:
4x8, 4x4), output-channel slices (a partial last one included), partial tiles, hidden chunks with a partial last
one, masked channel counts, t = 1, 5x5, residual, and every MobileNetV2 block at a reduced spatial size.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from module_testing import one_thread
from op_testing import DTYPES, FLOAT32, Tolerance, assert_within_tolerance, cast

from fastconv import backends, reference
from fastconv.shapes import LayerCase, layer_cases

OP = "inverted_residual"


def _has_emulator() -> bool:
    return backends.extension() is not None and hasattr(torch.ops.fastconv_tiles, OP)


pytestmark = pytest.mark.skipif(
    not _has_emulator(), reason="fastconv._C is missing or predates the fastconv_tiles::inverted_residual emulator"
)


@pytest.fixture(autouse=True)
def _single_threaded():
    """The emulator's blocks and PyTorch's CPU convs on one thread, immune to the shared machine's load
    (module_testing.one_thread says why)."""
    with one_thread():
        yield


def _case(name: str, x: tuple[int, int, int, int], hidden: int | None, cout: int, k: int = 3, **params) -> object:
    """A pytest param (case, batch); ``x`` is [N, C, H, W], hidden None for expansion factor 1."""
    cin = x[1]
    expand = None if hidden is None else (hidden, cin, 1, 1)
    hidden = cin if hidden is None else hidden
    params.setdefault("activation", "relu6")
    case = LayerCase("edge", OP, name, (1, *x[1:]), (expand, (hidden, 1, k, k), (cout, hidden, 1, 1)),
                     padding=k // 2, **params)
    return pytest.param(case, x[0], id=f"{case.id()}-n{x[0]}")


# Tiles as chosen for an H200's 132 multiprocessors: the largest whose grid has 132 blocks, else 4x4 with the
# output channels split further.
SMALL = [
    _case("masked-residual", (2, 8, 9, 11), 48, 8, residual=True),  # 4x4, partial tiles
    _case("t1", (2, 5, 7, 9), None, 3),
    _case("t1-residual", (1, 17, 7, 9), None, 17, residual=True),
    _case("t1-s2-odd", (1, 24, 9, 9), None, 32, stride=2),
    _case("s2-odd", (1, 3, 9, 11), 18, 5, stride=2),
    _case("k5-s2-odd", (1, 16, 9, 9), 96, 24, k=5, stride=2),
    _case("k5-residual", (2, 5, 5, 6), 30, 5, k=5, residual=True),
    _case("relu", (1, 8, 6, 5), 40, 12, activation="relu"),
    _case("none", (2, 8, 5, 4), 20, 8, residual=True, activation="none"),
    _case("hidden-chunks", (1, 24, 6, 7), 200, 40),  # chunks of 64, 64, 64, 8 hidden channels
    _case("1-pixel-s2", (1, 96, 1, 1), 576, 160, stride=2),  # 160 channels in 5 slices of 32
    _case("tile8x8-slices", (2, 8, 48, 48), 16, 200),  # 8x8: 2 slices of 112 and 88 output channels
    _case("tile4x8", (2, 6, 40, 56), 24, 8),
    _case("tile4x8-s2-odd", (2, 4, 47, 175), 16, 8, stride=2),
]


def _cut_down(case: LayerCase, size: int = 7) -> LayerCase:
    """A MobileNetV2 block at a spatial size of at most size x size (odd: partial tiles, stride 2 on odd)."""
    n, c, h, w = case.x
    return dataclasses.replace(case, x=(n, c, min(h, size), min(w, size)))


BLOCKS = [_cut_down(case) for case in layer_cases(op=OP)]
# PyTorch's own fp16/bf16 CPU convolutions, which the tolerance rule runs, are slow: two blocks in low precision,
# one with stride 2 and masked channel counts (16 -> 96 -> 24), one with the widest channels and the residual.
LOW_PRECISION_BLOCKS = ("features.2", "features.15")


def _block_params() -> list:
    params = []
    for case in BLOCKS:
        for tol in DTYPES:
            tol = tol.values[0]
            if tol.dtype == torch.float32 or case.name in LOW_PRECISION_BLOCKS:
                params.append(pytest.param(case, tol, id=f"{case.id()}-{tol}"))
    return params


def _emulate(args: tuple) -> torch.Tensor:
    x, *rest = args
    return torch.ops.fastconv_tiles.inverted_residual(x.contiguous(memory_format=torch.channels_last), *rest)


def _check(case: LayerCase, batch: int, tol: Tolerance) -> None:
    args = case.make_args(batch, dtype=tol.dtype)
    out = _emulate(args)
    expected = reference.inverted_residual(*cast(args, torch.float64))
    assert out.shape == expected.shape == case.out_shape(batch)
    assert out.dtype == tol.dtype
    assert torch.isfinite(out).all(), "the emulated kernel read shared memory that no phase wrote"
    assert_within_tolerance(out, expected, tol, lambda: reference.inverted_residual(*args))


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize(("case", "batch"), SMALL)
def test_small(case: LayerCase, batch: int, tol: Tolerance):
    _check(case, batch, tol)


@pytest.mark.parametrize(("case", "tol"), _block_params())
def test_mobilenet_v2_block(case: LayerCase, tol: Tolerance):
    _check(case, 1, tol)


def test_float64():
    """fp64 runs the CUDA-core path at fp64 accumulation: it matches the fp64 reference to rounding."""
    case, batch = SMALL[0].values
    args = case.make_args(batch, dtype=torch.float64)
    torch.testing.assert_close(_emulate(args), reference.inverted_residual(*args), rtol=1e-12, atol=1e-12)


def test_padding_is_on_the_expanded_tensor():
    """The check can tell the kernel's halo from a wrong one: had the kernel padded x instead of E (halo pixels
    act(b_e) rather than 0), its output would be outside the tolerance of the reference, as this stand-in shows.
    """
    case, batch = SMALL[0].values
    args = case.make_args(batch)
    x, we, be, wdw, bd, wp, bp, stride, residual, activation = cast(args, torch.float64)
    expanded = reference.activate(F.conv2d(F.pad(x, (1, 1, 1, 1)), we, be), activation)
    wrong = F.conv2d(reference.activate(F.conv2d(expanded, wdw, bd, stride, groups=wdw.shape[0]), activation), wp, bp)
    wrong = wrong + x if residual else wrong
    out = _emulate(args)
    assert_within_tolerance(out, reference.inverted_residual(*cast(args, torch.float64)), FLOAT32, None)
    with pytest.raises(AssertionError):
        assert_within_tolerance(out, wrong, FLOAT32, None)


def test_bad_input_names_the_argument():
    case, batch = SMALL[0].values
    x, we, be, wdw, bd, wp, bp, stride, residual, activation = case.make_args(batch)
    with pytest.raises(ValueError, match=r"dw_weight must have shape \[48, 1, \*, \*\]"):
        _emulate((x, we, be, wdw[1:], bd, wp, bp, stride, residual, activation))
