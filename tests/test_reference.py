"""fastconv.reference, the oracle of every backend, against the layers it stands for.

Each op's unfused form is built from torchvision's and torch.nn's own modules (conv -> BatchNorm in eval mode
with random statistics and affine parameters -> activation; torchvision's InvertedResidual and BasicConv2d
where they exist) and run in float64. The folded weights come from torch.nn.utils.fusion.fuse_conv_bn_eval;
the reference op runs on them in float32 and is held to the float32 tolerance rule.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from op_testing import FLOAT32, assert_within_tolerance, edge
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.inception import BasicConv2d
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops.misc import Conv2dNormActivation

from fastconv import reference
from fastconv.shapes import LayerCase, layer_cases

ACTIVATION_LAYERS = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6}


def _randomized(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """``module`` in float64 eval mode, with He-scaled conv weights and BatchNorm far from its defaults."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=generator)
                m.running_var.uniform_(0.25, 4.0, generator=generator)
                m.weight.normal_(1, 0.5, generator=generator)  # some scales negative
                m.bias.normal_(0, 0.5, generator=generator)
    return module.double().eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """The folded float32 (weight, bias) of conv -> bn."""
    fused = fuse_conv_bn_eval(conv, bn)
    return fused.weight.detach().float(), fused.bias.detach().float()


def _same_padding(weight: tuple[int, int, int, int]) -> tuple[int, int]:
    return weight[2] // 2, weight[3] // 2


# Each builder takes a case, its random arguments (``LayerCase.make_args``) and a generator, and gives the
# unfused layers as a float64 function of x, and the reference op's arguments after x: folded weights and
# biases, then its other arguments.
Builder = Callable[[LayerCase, tuple, torch.Generator], tuple[Callable[[Tensor], Tensor], tuple]]


def _depthwise(case: LayerCase, _: tuple, g: torch.Generator):
    c, k = case.x[1], case.weights[0][2]
    layers = _randomized(Conv2dNormActivation(
        c, c, k, case.stride, case.padding, groups=c, activation_layer=ACTIVATION_LAYERS[case.activation],
        dilation=case.dilation,
    ), g)
    twice = lambda v: (v, v)
    return layers, (*_fold(layers[0], layers[1]), twice(case.stride), twice(case.padding), twice(case.dilation),
                    case.activation)


def _pointwise(case: LayerCase, args: tuple, g: torch.Generator):
    cin, cout = case.x[1], case.weights[0][0]
    layers = _randomized(Conv2dNormActivation(cin, cout, 1, activation_layer=None), g)
    activation = ACTIVATION_LAYERS[case.activation]()
    residual = args[4]  # [N, Cout, H, W] or None
    if residual is None:
        return lambda x: activation(layers(x)), (*_fold(layers[0], layers[1]), case.activation, None)
    return (lambda x: activation(layers(x) + residual.double()),
            (*_fold(layers[0], layers[1]), case.activation, residual))


def _inverted_residual(case: LayerCase, _: tuple, g: torch.Generator):
    cin, hidden, cout = case.x[1], case.weights[1][0], case.weights[2][0]
    block = _randomized(InvertedResidual(cin, cout, case.stride, expand_ratio=hidden / cin), g)
    assert block.use_res_connect == case.residual
    stages = list(block.conv)  # [expand,] depthwise, project conv, project BN
    expand = _fold(stages[0][0], stages[0][1]) if len(stages) == 4 else (None, None)
    return block, (*expand, *_fold(stages[-3][0], stages[-3][1]), *_fold(stages[-2], stages[-1]), case.stride,
                   case.residual, case.activation)


def _basic_conv(cin: int, weight: tuple[int, int, int, int]) -> BasicConv2d:
    return BasicConv2d(cin, weight[0], kernel_size=weight[2:], padding=_same_padding(weight))


def _pair(case: LayerCase, _: tuple, g: torch.Generator):
    first, second = case.weights
    layers = _randomized(nn.Sequential(_basic_conv(case.x[1], first), _basic_conv(first[0], second)), g)
    return layers, (*_fold(layers[0].conv, layers[0].bn), *_fold(layers[1].conv, layers[1].bn), case.activation)


def _parallel(case: LayerCase, _: tuple, g: torch.Generator):
    a, b = (_randomized(_basic_conv(case.x[1], w), g) for w in case.weights)
    return (lambda x: torch.cat([a(x), b(x)], dim=1),
            (*_fold(a.conv, a.bn), *_fold(b.conv, b.bn), case.activation))


BUILDERS: dict[str, Builder] = {
    "depthwise_conv2d": _depthwise,
    "pointwise_conv2d": _pointwise,
    "inverted_residual": _inverted_residual,
    "asymmetric_conv_pair": _pair,
    "asymmetric_conv_parallel": _parallel,
}

# Every layer case, and edge shapes: odd sizes, stride 2 on odd sizes, channel counts that are not multiples
# of 8, batches above 1. BasicConv2d is conv -> BN -> ReLU: the asymmetric edges keep relu.
EDGES = [
    edge("depthwise_conv2d", "odd-s2", (2, 5, 9, 7), ((5, 1, 3, 3),), stride=2, padding=1, activation="relu6"),
    edge("depthwise_conv2d", "k5-dil2", (1, 17, 11, 12), ((17, 1, 5, 5),), padding=4, dilation=2,
         activation="relu"),
    edge("depthwise_conv2d", "k3-none", (3, 3, 6, 5), ((3, 1, 3, 3),), padding=1),
    edge("pointwise_conv2d", "residual", (2, 17, 5, 7), ((24, 17, 1, 1),), residual=True, activation="relu"),
    edge("pointwise_conv2d", "relu6", (1, 3, 9, 9), ((5, 3, 1, 1),), activation="relu6"),
    edge("inverted_residual", "t1", (2, 5, 7, 9), ((None, (5, 1, 3, 3), (3, 5, 1, 1))), padding=1,
         activation="relu6"),
    edge("inverted_residual", "s2-odd", (1, 3, 9, 11), (((18, 3, 1, 1), (18, 1, 3, 3), (5, 18, 1, 1))), stride=2,
         padding=1, activation="relu6"),
    edge("inverted_residual", "residual", (3, 5, 6, 7), (((30, 5, 1, 1), (30, 1, 3, 3), (5, 30, 1, 1))),
         padding=1, residual=True, activation="relu6"),
    edge("asymmetric_conv_pair", "7x1-1x7", (2, 5, 9, 7), ((17, 5, 7, 1), (3, 17, 1, 7)), activation="relu"),
    edge("asymmetric_conv_pair", "1x3-3x1", (1, 3, 4, 5), ((5, 3, 1, 3), (7, 5, 3, 1)), activation="relu"),
    edge("asymmetric_conv_parallel", "1x5-5x1", (2, 5, 7, 6), ((3, 5, 1, 5), (17, 5, 5, 1)), activation="relu"),
]


def _layer_params() -> list:
    # The depthwise and 1x1 layers of MobileNetV2 are checked inside its inverted residual blocks.
    cases = [c for c in layer_cases() if not (c.network == "mobilenet_v2" and c.op != "inverted_residual")]
    return [pytest.param(c, 1, id=f"{c.op}-{c.id()}") for c in cases]


def _edge_params() -> list:
    return [pytest.param(*p.values, id=f"{p.values[0].op}-{p.id}") for p in EDGES]


@pytest.mark.parametrize(("case", "batch"), _layer_params() + _edge_params())
def test_reference_matches_unfused_layers(case: LayerCase, batch: int):
    g = torch.Generator().manual_seed(0)
    made = case.make_args(batch)
    x = made[0]
    layers, args = BUILDERS[case.op](case, made, g)
    with torch.no_grad():
        expected = layers(x.double())
    out = getattr(reference, case.op)(x, *args)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_within_tolerance(out, expected, FLOAT32, same_precision=None)


def test_activations():
    x = torch.tensor([-1.0, 0.0, 3.0, 6.0, 7.5])
    assert torch.equal(reference.activate(x, "none"), x)
    assert torch.equal(reference.activate(x, "relu"), torch.tensor([0.0, 0.0, 3.0, 6.0, 7.5]))
    assert torch.equal(reference.activate(x, "relu6"), torch.tensor([0.0, 0.0, 3.0, 6.0, 6.0]))


def test_same_padding():
    assert reference.same_padding(torch.empty(4, 3, 1, 7)) == (0, 3)
    assert reference.same_padding(torch.empty(4, 3, 5, 1)) == (2, 0)
