"""fastconv.convert: swapping fastconv's modules into torchvision models in place."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from module_testing import check_eval, check_train_step, module_backends, randomize_
from torch import nn
from torchvision.models import inception, mobilenetv2

from fastconv import nn as fnn
from fastconv.convert import REPLACEMENTS, convert

# (builder arguments, input size); MobileNetV3 has modules fastconv does not know (its own inverted
# residual, squeeze-excitation) around Conv2dNormActivations with ReLU (fused) and Hardswish (not).
MODELS = {
    "mobilenet_v2": ({"width_mult": 0.5}, 64),
    "inception_v3": ({"init_weights": False}, 75),
    "mobilenet_v3_small": ({}, 64),
}
BACKENDS = module_backends()


def torchvision_model(name: str) -> nn.Module:
    kwargs, _ = MODELS[name]
    return randomize_(getattr(torchvision.models, name)(**kwargs), seed=0).eval()


def images(name: str) -> torch.Tensor:
    size = MODELS[name][1]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_convert_keeps_tensors_and_outputs(name, backend):
    model = torchvision_model(name)
    reference = copy.deepcopy(model)
    tensors = model.state_dict(keep_vars=True)
    modules = dict(model.named_modules())
    assert convert(model) is model
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(tensors)
    assert all(after[k] is t for k, t in tensors.items()), "the same parameter and buffer tensors"
    assert all(m is modules[n] for n, m in model.named_modules()), "the same module objects"
    for module_name, module in reference.named_modules():
        expected = REPLACEMENTS.get(type(module), type(module))
        assert type(model.get_submodule(module_name)) is expected, module_name
    assert any(type(m) in REPLACEMENTS.values() for m in model.modules())
    check_eval(model, reference, images(name), backend)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_converted_model_trains_as_torchvision(name):
    model = torchvision_model(name)
    reference = copy.deepcopy(model)
    check_train_step(convert(model), reference, images(name))


def test_convert_is_idempotent():
    model = convert(torchvision_model("inception_v3"))
    types = {n: type(m) for n, m in model.named_modules()}
    state = model.state_dict(keep_vars=True)
    assert convert(model) is model
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert all(t is state[k] for k, t in model.state_dict(keep_vars=True).items())


def test_unknown_modules_are_left_alone():
    class MyBasicConv2d(inception.BasicConv2d):
        """A subclass may change forward: not replaced."""

    model = nn.Sequential(nn.Conv2d(3, 8, 3), MyBasicConv2d(8, 8, kernel_size=1), nn.ReLU(),
                          inception.BasicConv2d(8, 4, kernel_size=1))
    convert(model)
    assert [type(m) for m in model] == [nn.Conv2d, MyBasicConv2d, nn.ReLU, fnn.BasicConv2d]


def test_root_module_is_converted():
    block = mobilenetv2.InvertedResidual(8, 8, 1, 6)
    assert convert(block) is block
    assert type(block) is fnn.InvertedResidual
    assert all(type(m) is fnn.Conv2dNormActivation for m in block.conv[:2])


def test_hooks_and_optimizers_keep_working():
    model = torchvision_model("mobilenet_v2")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    model.features[2].register_forward_hook(lambda *args: calls.append(1))
    convert(model)
    x = images("mobilenet_v2")
    with torch.no_grad():
        before = model(x)
    assert calls == [1]
    model.train()
    model(x).square().mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), before), "the optimizer updates the converted model's parameters"


def test_public_name_is_callable():
    import fastconv.convert

    block = mobilenetv2.InvertedResidual(4, 4, 1, 1)
    assert fastconv.convert(block) is block
    assert type(block) is fnn.InvertedResidual
