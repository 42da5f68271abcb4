"""fastconv.shapes: the layer cases of both networks, their costs and their arguments."""

from __future__ import annotations

import collections
import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastconv
from fastconv.ops import OPS
from fastconv.shapes import NETWORKS, LayerCase, layer_cases


@functools.cache
def _torchvision_flops(network: str) -> dict[str, int]:
    """FLOPs of every submodule of torchvision's network, as PyTorch's own counter finds them (meta device)."""
    from torchvision.models import inception_v3, mobilenet_v2

    with torch.device("meta"):
        model = mobilenet_v2() if network == "mobilenet_v2" else inception_v3(aux_logits=False, init_weights=False)
    size = 224 if network == "mobilenet_v2" else 299
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, size, size, device="meta"))
    root = type(model).__name__ + "."
    return {name.removeprefix(root): sum(c.values()) for name, c in counter.get_flop_counts().items()}


def _modules(case: LayerCase) -> list[str]:
    """The torchvision modules a case stands for: "Mixed_5b.branch1x1+branch5x5_1" -> both branches."""
    block, _, first = case.name.rpartition(".")
    return [f"{block}.{m}" if block else m for m in first.split("+")]


def test_layers_of_each_network():
    """Every layer counted once: deduplication keeps the number of layers of each kind in ``count``."""
    counts = collections.Counter()
    for case in layer_cases():
        counts[case.network, case.op] += case.count
    assert counts == {
        ("mobilenet_v2", "inverted_residual"): 17,
        ("mobilenet_v2", "depthwise_conv2d"): 17,
        ("mobilenet_v2", "pointwise_conv2d"): 34,  # 16 expand + 17 project + the last conv
        ("inception_v3", "pointwise_conv2d"): 40 + 10,  # 1x1 BasicConv2d + merged 1x1 GEMMs of A, C, D, E blocks
        ("inception_v3", "asymmetric_conv_pair"): 13,  # 3 in each InceptionC, 1 in InceptionD
        ("inception_v3", "asymmetric_conv_parallel"): 4,  # 2 in each InceptionE
    }


def test_deduplicated_and_unique_ids():
    cases = layer_cases()
    assert len({c.shape_key() for c in cases}) == len(cases)
    assert len({c.id() for c in cases}) == len(cases)


def test_filters():
    assert layer_cases("inception_v3", "inverted_residual") == []
    assert {c.op for c in layer_cases(op="depthwise_conv2d")} == {"depthwise_conv2d"}
    assert {c.network for c in layer_cases("mobilenet_v2")} == {"mobilenet_v2"}
    assert len(layer_cases("mobilenet_v2")) + len(layer_cases("inception_v3")) == len(layer_cases())
    with pytest.raises(ValueError, match=r"network must be one of mobilenet_v2, inception_v3 or None; got 'vgg'"):
        layer_cases("vgg")
    with pytest.raises(ValueError, match=r"op must be one of .*; got 'conv2d'"):
        layer_cases(op="conv2d")


def test_known_layers():
    block = next(c for c in layer_cases("mobilenet_v2", "inverted_residual") if c.name == "features.2")
    assert block.x == (1, 16, 112, 112) and block.stride == 2 and not block.residual
    assert block.weights == ((96, 16, 1, 1), (96, 1, 3, 3), (24, 96, 1, 1))
    assert block.id() == "mbv2-features.2-16x112x112-s2"
    t1 = next(c for c in layer_cases("mobilenet_v2", "inverted_residual") if c.name == "features.1")
    assert t1.weights[0] is None
    # InceptionD's 1x7 -> 7x1 pair has the shape of Mixed_6e's branch7x7 pair.
    pair = next(c for c in layer_cases("inception_v3") if c.name == "Mixed_6e.branch7x7_2+branch7x7_3")
    assert pair.weights == ((192, 192, 1, 7), (192, 192, 7, 1)) and pair.x == (1, 192, 17, 17)
    assert pair.count == 2
    merged = next(c for c in layer_cases("inception_v3") if c.name.startswith("Mixed_7c.branch1x1+"))
    assert merged.weights == ((320 + 384 + 448, 2048, 1, 1),)


@pytest.mark.parametrize("network", NETWORKS)
def test_flops_match_pytorch_counter(network):
    counted = _torchvision_flops(network)
    for case in layer_cases(network):
        assert case.flops() == sum(counted[m] for m in _modules(case)), case.id()
        assert case.flops(batch=4) == 4 * case.flops()


def test_mobilenet_v2_multiply_adds():
    """The blocks and the last conv are all of MobileNetV2's 300.8 M multiply-adds but the stem and classifier."""
    cases = layer_cases("mobilenet_v2")
    fused = sum(c.flops() * c.count for c in cases if c.op == "inverted_residual" or c.name == "features.18.0")
    total = _torchvision_flops("mobilenet_v2")
    assert fused == total["features"] - total["features.0"]


def test_min_bytes():
    case = LayerCase("edge", "pointwise_conv2d", "residual", (1, 8, 5, 7), ((16, 8, 1, 1),), residual=True)
    # x, weight, bias, residual, output
    elements = 8 * 35 + 16 * 8 + 16 + 16 * 35 + 16 * 35
    assert case.min_bytes() == 2 * elements
    assert case.min_bytes(dtype=torch.float32) == 4 * elements
    assert case.min_bytes(batch=3) == 2 * (elements + 2 * (8 * 35 + 2 * 16 * 35))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id()) for c in layer_cases()])
def test_make_args_fit_the_op(case):
    """The op accepts the arguments (on the meta device: shapes only) and gives ``out_shape``."""
    args = case.make_args(batch=2, dtype=torch.bfloat16, device="meta")
    assert args[0].shape == (2, *case.x[1:]) and args[0].dtype == torch.bfloat16
    assert OPS[case.op](*args).shape == case.out_shape(batch=2)


def test_make_args_are_reproducible():
    case = layer_cases(op="asymmetric_conv_pair")[0]
    first, again = case.make_args(), case.make_args()
    other = case.make_args(generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first[:5], again[:5], strict=True))
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id()) for c in layer_cases(op="depthwise_conv2d")])
def test_relu6_clamps_at_both_ends(case):
    """The random arguments keep activations O(1), with a few pre-activations past each end of relu6."""
    out = fastconv.reference.depthwise_conv2d(*case.make_args())
    assert 0 < (out == 6).float().mean() < 0.1
    assert 0.2 < (out == 0).float().mean() < 0.8
