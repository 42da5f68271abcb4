"""The Triton backend on CPU under the interpreter: every op against the fp64 reference.

Runs in its own process with TRITON_INTERPRET=1 (``make test-triton``); each program instance costs
~20 ms there, so shapes are small. Covered: the edge shapes of each op's own test module (stride 2 on odd
sizes, channel counts that are not multiples of 16, t = 1, both pair orders, batch 1) in the three dtypes
with the tolerance rule; N = 0; every shipped config of every kernel (the interpreter autotunes with one);
and every layer shape of both networks with the spatial size cut down.
"""

from __future__ import annotations

import dataclasses

import pytest
import test_asymmetric_conv_pair
import test_asymmetric_conv_parallel
import test_depthwise_conv2d
import test_inverted_residual
import test_pointwise_conv2d
import torch
from op_testing import DTYPES, TOLERANCES, Tolerance, check_empty_batch, check_op

from fastconv import backends, reference
from fastconv.shapes import LayerCase, layer_cases

pytestmark = pytest.mark.triton

EDGES = {
    "depthwise_conv2d": test_depthwise_conv2d.EDGES,
    "pointwise_conv2d": test_pointwise_conv2d.EDGES,
    "inverted_residual": test_inverted_residual.EDGES,
    "asymmetric_conv_pair": test_asymmetric_conv_pair.EDGES,
    "asymmetric_conv_parallel": test_asymmetric_conv_parallel.EDGES,
}
# Cut-down spatial size of the network layers: a tile of each fused kernel, with the padding on every side
# (odd sizes and batches are the edge shapes' part). Each interpreted program costs ~20 ms per chunk step.
SMALL_SIDE = 8


def _kernels():
    from fastconv.kernels import MODULES

    return MODULES


def test_every_op_has_a_launcher():
    from fastconv.kernels import LAUNCHERS

    assert sorted(LAUNCHERS) == sorted(backends.OPS)
    for op in backends.OPS:
        assert backends.why_not("triton", op, torch.device("cpu")) is None


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize(("op", "case", "batch"),
                         [pytest.param(op, *p.values, id=f"{op}-{p.id}") for op, edges in EDGES.items() for p in edges])
def test_edge_shapes(op: str, case: LayerCase, batch: int, tol: Tolerance):
    check_op(op, case.make_args(batch, dtype=tol.dtype), "triton", tol)


@pytest.mark.parametrize("op", backends.OPS)
def test_empty_batch(op: str):
    check_empty_batch(EDGES[op][0].values[0], "triton")


def _small(case: LayerCase) -> LayerCase:
    """``case`` with H and W cut to SMALL_SIDE."""
    n, c, h, w = case.x
    return dataclasses.replace(case, x=(n, c, min(h, SMALL_SIDE), min(w, SMALL_SIDE)))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id()) for c in layer_cases()])
def test_network_layers(case: LayerCase):
    """Every layer of both networks, real channel counts and kernels, spatial size cut down, bfloat16 (the
    dtype the interpreter gets wrong unless every value is converted at load and store, and rounded to
    nearest even by hand: its own fp32 -> bf16 cast truncates)."""
    tol = next(t for t in TOLERANCES if t.dtype == torch.bfloat16)
    check_op(case.op, _small(case).make_args(1, dtype=tol.dtype), "triton", tol)


def _config_params() -> list:
    return [pytest.param(op, i, id=f"{op}-config{i}") for op, module in _kernels().items()
            for i in range(len(module.CONFIGS))]


# One edge shape per op that spans several tiles, channel blocks and chunks of every config.
CONFIG_CASES = {
    "depthwise_conv2d": test_depthwise_conv2d.EDGES[5],  # 40 channels, 5x5 dilation 2, stride 2, 15x13
    "pointwise_conv2d": test_pointwise_conv2d.EDGES[3],  # 96 -> 5 channels, residual, 2x11x13
    "inverted_residual": test_inverted_residual.EDGES[4],  # 24 -> 144 -> 24, residual, batch 3, 7x7
    "asymmetric_conv_pair": test_asymmetric_conv_pair.EDGES[1],  # 7x1 -> 1x7, batch 3
    "asymmetric_conv_parallel": test_asymmetric_conv_parallel.EDGES[4],  # 96 -> 24 || 40, 1x3 || 5x1
}


@pytest.mark.parametrize(("op", "index"), _config_params())
def test_every_config(op: str, index: int):
    """Each shipped config, run directly (bypassing autotuning), computes the reference in float32."""
    module = _kernels()[op]
    kernel = getattr(module, f"{op}_kernel")
    config = module.CONFIGS[index]
    case, batch = CONFIG_CASES[op].values
    args = list(case.make_args(batch))
    args[0] = args[0].contiguous(memory_format=torch.channels_last)  # as fastconv.ops hands them over
    if op == "pointwise_conv2d" and args[4] is not None:
        args[4] = args[4].contiguous(memory_format=torch.channels_last)
    kwargs = module.launch_args(*args)
    kernel.fn[module.grid](**kwargs, **config.kwargs)
    expected = getattr(reference, op)(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
    scale = max(1.0, expected.abs().max().item())
    assert (kwargs["y_ptr"].double() - expected).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("op", backends.OPS)
def test_launcher_rejects_nchw(op: str):
    """The kernels index [N, H, W, C] memory; a launcher given NCHW memory says so instead of misreading it."""
    from fastconv.kernels import LAUNCHERS

    case, batch = EDGES[op][0].values
    args = list(case.make_args(max(batch, 2)))
    assert not args[0].is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="x must be a channels_last contiguous tensor"):
        LAUNCHERS[op](*args)
