"""The Triton backend on a CUDA device: every layer shape of both networks at full size, CUDA graph capture,
and both networks end to end against torchvision. Skipped without CUDA (marker ``gpu``).

fp32 products are IEEE on the GPU too (``input_precision="ieee"``), so float32 is held to the same 1e-4
rule as on CPU; fp16/bf16 to twice PyTorch's own error in that precision, on the same device.
"""

from __future__ import annotations

import pytest
import torch
from op_testing import DTYPES, Tolerance, check_op

import fastconv
from fastconv.shapes import LayerCase, layer_cases

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
BATCH = 2


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id()) for c in layer_cases()])
def test_network_layers(case: LayerCase, tol: Tolerance):
    check_op(case.op, case.make_args(BATCH, dtype=tol.dtype, device=CUDA), "triton", tol)


@pytest.mark.parametrize("op", fastconv.backends.OPS)
def test_cuda_graph(op: str):
    """Launches go to the current stream with no host synchronisation: a captured graph replays them."""
    case = layer_cases(op=op)[0]
    args = case.make_args(BATCH, dtype=torch.float16, device=CUDA)
    with fastconv.use_backend("triton"):
        fn = fastconv.ops.OPS[op]
        expected = fn(*args)  # compiles and autotunes outside the capture
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*args)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def _networks() -> list:
    from torchvision import models

    return [
        pytest.param("mobilenet_v2", models.mobilenet_v2, 224, id="mobilenet_v2"),
        pytest.param("inception_v3", lambda **kw: models.inception_v3(aux_logits=False, init_weights=True, **kw),
                     299, id="inception_v3"),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(("name", "torchvision_builder", "size"), _networks())
def test_networks_match_torchvision(name: str, torchvision_builder, size: int, dtype: torch.dtype):
    """The whole network on the triton backend, eval mode, random BatchNorm statistics, against torchvision's
    own network with the same state_dict (in float64 as the reference, in ``dtype`` for PyTorch's error)."""
    from fastconv.testing import randomize_batchnorm_

    generator = torch.Generator().manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
    ours = getattr(fastconv.models, name)(**kwargs)
    randomize_batchnorm_(ours, generator)
    theirs = torchvision_builder()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(BATCH, 3, size, size, generator=generator)
    ours, theirs = ours.eval().to(CUDA), theirs.eval().to(CUDA)
    with torch.no_grad():
        expected = theirs.double()(x.to(CUDA, torch.float64))
        torch_error = (theirs.to(dtype)(x.to(CUDA, dtype)).double() - expected).abs().max().item()
        with fastconv.use_backend("triton"):
            out = ours.to(dtype)(x.to(CUDA, dtype))
    error = (out.double() - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    bound = 1e-4 * scale if dtype == torch.float32 else 2 * torch_error + 2.0**-11 * scale
    assert error <= bound, f"{name} {dtype}: max error {error:.4g} > {bound:.4g} (PyTorch's own {torch_error:.4g})"
