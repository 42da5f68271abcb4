"""The cuda backend (CUDA C++ kernels of fastconv._C) on a GPU: every layer shape of both networks and the edge
shapes of each op, in every dtype under the tolerance rule; layouts, empty batches, streams and CUDA graphs;
both networks against torchvision. Ops without a CUDA kernel are skipped with the reason backends gives.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from module_testing import randomize_
from op_testing import DTYPES, FLOAT32, LAYOUTS, Tolerance, assert_within_tolerance, check_op, relayout_args, run
from test_asymmetric_conv_pair import EDGES as PAIR_EDGES
from test_asymmetric_conv_parallel import EDGES as PARALLEL_EDGES
from test_depthwise_conv2d import EDGES as DEPTHWISE_EDGES
from test_inverted_residual import EDGES as INVERTED_RESIDUAL_EDGES
from test_pointwise_conv2d import EDGES as POINTWISE_EDGES

import fastconv
import fastconv.models
from fastconv import backends
from fastconv.shapes import LayerCase, layer_cases

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
EDGES = {
    "depthwise_conv2d": DEPTHWISE_EDGES,
    "pointwise_conv2d": POINTWISE_EDGES,
    "inverted_residual": INVERTED_RESIDUAL_EDGES,
    "asymmetric_conv_pair": PAIR_EDGES,
    "asymmetric_conv_parallel": PARALLEL_EDGES,
}


def _why_not(op: str) -> str | None:
    return backends.why_not("cuda", op, CUDA)


def _skip_without_kernel(op: str) -> tuple:
    reason = _why_not(op)
    return () if reason is None else (pytest.mark.skip(reason=reason),)


LAYER_PARAMS = [
    pytest.param(case, id=f"{case.op}-{case.id()}", marks=_skip_without_kernel(case.op))
    for op in backends.OPS
    for case in layer_cases(op=op)
]
EDGE_PARAMS = [
    pytest.param(*p.values, id=f"{op}-{p.id}", marks=_skip_without_kernel(op)) for op in backends.OPS
    for p in EDGES[op]
]
OP_PARAMS = [pytest.param(op, id=op, marks=_skip_without_kernel(op)) for op in backends.OPS]


@pytest.fixture(autouse=True)
def no_tf32():
    """cuDNN's TF32 convolutions (on by default) would put torch's own layers of a network outside the fp32 rule."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def _small(op: str, batch: int = 2, dtype: torch.dtype = torch.float32) -> tuple:
    case, _ = EDGES[op][0].values
    return case.make_args(batch, dtype=dtype, device=CUDA)


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize("case", LAYER_PARAMS)
def test_layer_shapes(case: LayerCase, tol: Tolerance):
    check_op(case.op, case.make_args(batch=2, dtype=tol.dtype, device=CUDA), "cuda", tol)


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize(("case", "batch"), EDGE_PARAMS)
def test_edge_shapes(case: LayerCase, batch: int, tol: Tolerance):
    check_op(case.op, case.make_args(batch, dtype=tol.dtype, device=CUDA), "cuda", tol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OP_PARAMS)
def test_layouts(op: str, layout: str):
    check_op(op, relayout_args(_small(op), layout), "cuda")


@pytest.mark.parametrize("op", OP_PARAMS)
def test_empty_batch(op: str):
    case, _ = EDGES[op][0].values
    out = run(op, case.make_args(batch=0, device=CUDA), "cuda")
    assert out.shape == case.out_shape(batch=0) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_float64(op: str):
    """float64 (for gradcheck) runs too, accumulating in float64."""
    check_op(op, _small(op, dtype=torch.float64), "cuda")


@pytest.mark.parametrize("op", OP_PARAMS)
def test_side_stream(op: str):
    """The kernel runs on the current stream, not the default one."""
    args = _small(op, batch=8)
    expected = run(op, args, "reference")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = run(op, args, "cuda")
    torch.cuda.current_stream().wait_stream(stream)
    assert_within_tolerance(out, expected.double(), FLOAT32, None)


@pytest.mark.parametrize("op", OP_PARAMS)
def test_cuda_graph_capture(op: str):
    """No host synchronisation in the forward path: the op can be captured and replayed on new inputs."""
    args = list(_small(op))
    run(op, args, "cuda")  # first call outside the capture: lazy initialisation of the CUDA context and kernels
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(op, args, "cuda")
    fresh = _small(op)
    args[0].copy_(fresh[0] * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    assert_within_tolerance(out, run(op, tuple(args), "reference").double(), FLOAT32, None)


# ----------------------------------------------------------------------------------------------------------
# Whole networks.

NETWORKS = {"mobilenet_v2": ({}, 224), "inception_v3": ({"init_weights": False}, 299)}


def _network_params() -> list:
    params = []
    for name in NETWORKS:
        missing = sorted({c.op for c in layer_cases(network=name)} - {op for op in backends.OPS if not _why_not(op)})
        marks = (pytest.mark.skip(reason=f"no CUDA kernel for {', '.join(missing)}"),) if missing else ()
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("tol", [t for t in DTYPES if t.values[0].dtype in (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("name", _network_params())
def test_network_matches_torchvision(name: str, tol: Tolerance):
    kwargs, size = NETWORKS[name]
    reference = randomize_(getattr(torchvision.models, name)(**kwargs), seed=0).eval()
    ours = getattr(fastconv.models, name)(**kwargs)
    ours.load_state_dict(reference.state_dict())
    ours = ours.eval().to(CUDA, tol.dtype)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(CUDA)
    with torch.no_grad():
        expected = copy.deepcopy(reference).to(CUDA, torch.float64)(x.double())
        torch_own = reference.to(CUDA, tol.dtype)(x.to(tol.dtype))
        with fastconv.use_backend("cuda"):
            out = ours(x.to(tol.dtype))
    assert out.dtype == tol.dtype and out.shape == expected.shape
    assert_within_tolerance(out, expected, tol, lambda: torch_own)
