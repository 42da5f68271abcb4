"""Tests of fastconv.graphs.inference_graph: its argument checks here, its replay on a GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastconv.graphs import inference_graph


def _small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()).eval()


def test_cpu_example_is_refused():
    with pytest.raises(RuntimeError, match="CUDA example input; got one on cpu"):
        inference_graph(_small_model(), torch.randn(1, 3, 8, 8))


def test_training_model_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        inference_graph(_small_model().train(), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(("model", "example", "argument"), [
    (lambda x: x, torch.randn(1, 3, 8, 8), "model must be a torch.nn.Module; got function"),
    (_small_model(), [[1.0]], "example must be a torch.Tensor; got list"),
])
def test_wrong_types_are_refused(model, example, argument):
    with pytest.raises(TypeError, match=argument):
        inference_graph(model, example)


@pytest.mark.gpu
@pytest.mark.parametrize("network", ["mobilenet_v2", "inception_v3"])
def test_replay_matches_eager(network):
    import fastconv

    size = {"mobilenet_v2": 224, "inception_v3": 299}[network]
    kwargs = {"aux_logits": False, "init_weights": False} if network == "inception_v3" else {}
    model = getattr(fastconv.models, network)(**kwargs).cuda().eval()
    example = torch.randn(2, 3, size, size, device="cuda")
    graph = inference_graph(model, example)
    # New inputs, not the example: the replay must read what was copied into the static buffer.
    for _ in range(2):
        x = torch.randn(2, 3, size, size, device="cuda")
        with torch.no_grad():
            expected = model(x)
        got = graph(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4 * max(1.0, expected.abs().max().item()))
    with pytest.raises(ValueError, match=r"captured for input \(2, 3"):
        graph(torch.randn(1, 3, size, size, device="cuda"))
