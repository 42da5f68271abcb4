"""fastconv.models: mobilenet_v2 and inception_v3 against torchvision's networks with the same weights."""

from __future__ import annotations

import functools
import io
from functools import partial

import pytest
import torch
import torchvision
from module_testing import (
    CHANNELS_LAST,
    batchnorms,
    check_eval,
    check_train_step,
    fp64_output,
    module_backends,
    one_thread,
    randomize_,
)
from op_testing import FLOAT32, TOLERANCES, assert_within_tolerance
from torch import Tensor, nn

import fastconv
import fastconv.models
from fastconv.nn._fused import FusedModule

NAMES = ["mobilenet_v2", "inception_v3"]
# Inception3's default init_weights=None warns and runs a slow truncated-normal init; the weights are
# randomised here anyway.
DEFAULTS = {"mobilenet_v2": {}, "inception_v3": {"init_weights": False}}
# The smallest inputs the networks accept, and the sizes they are built for.
SMALL = {"mobilenet_v2": 32, "inception_v3": 75}
BACKENDS = module_backends()
# A shallow MobileNetV2 for the compilers: every kind of block (expansion 1, stride 2, residual), few of them.
SHALLOW = {"width_mult": 0.25, "num_classes": 10, "inverted_residual_setting": [[1, 16, 1, 1], [6, 24, 2, 2]]}


def build(name: str, seed: int = 0, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(fastconv network, torchvision network) in eval mode with the same random weights and BN statistics."""
    kwargs = {**DEFAULTS[name], **kwargs}
    reference = randomize_(getattr(torchvision.models, name)(**kwargs), seed)
    ours = getattr(fastconv.models, name)(**kwargs)
    ours.load_state_dict(reference.state_dict())
    return ours.eval(), reference.eval()


def images(batch: int, size: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@functools.cache
def expected_output(name: str, batch: int, size: int) -> Tensor:
    """The fp64 torchvision output of the network ``build(name)`` on ``images(batch, size)``."""
    return fp64_output(build(name)[1], images(batch, size))


def check_network_eval(name: str, batch: int, size: int, backend: str) -> None:
    ours, _ = build(name)
    x = images(batch, size)
    before = x.clone()
    with torch.no_grad(), fastconv.use_backend(backend):
        out = ours(x)
    assert type(out) is Tensor, "eval mode returns the logits as a plain Tensor"
    assert torch.equal(x, before)
    assert_within_tolerance(out, expected_output(name, batch, size), FLOAT32, lambda: out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "batch", "size"), [("mobilenet_v2", 2, 224), ("inception_v3", 2, 75),
                                                     ("inception_v3", 1, 299)])
def test_eval_matches_torchvision(name, batch, size, backend):
    check_network_eval(name, batch, size, backend)


@pytest.mark.parametrize("tol", [pytest.param(t, id=str(t)) for t in TOLERANCES if t.dtype == torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_bfloat16(backend, tol):
    ours, reference = build("mobilenet_v2", width_mult=0.5)
    with fastconv.use_backend(backend):
        check_eval(ours, reference, images(2, 64), backend, tol)


@pytest.mark.parametrize("name", NAMES)
def test_activations_stay_channels_last(name):
    ours, _ = build(name)
    formats = {}
    for block_name, block in ours.named_modules():
        if isinstance(block, FusedModule) and not isinstance(ours.get_submodule(block_name.rpartition(".")[0]),
                                                            FusedModule):
            block.register_forward_hook(lambda m, args, out, n=block_name: formats.__setitem__(
                n, out.is_contiguous(memory_format=CHANNELS_LAST)))
    with torch.no_grad():
        ours(images(1, SMALL[name]))
    assert len(formats) > 10
    assert all(formats.values()), f"not channels_last: {[n for n, cl in formats.items() if not cl]}"


def test_train_matches_torchvision_mobilenet_v2():
    ours, reference = build("mobilenet_v2", width_mult=0.5)
    check_train_step(ours, reference, images(2, 64))


@pytest.mark.slow
def test_train_matches_torchvision_inception_v3():
    # 299 x 299 is the smallest input whose 17 x 17 grid the auxiliary head needs in training.
    ours, reference = build("inception_v3", aux_logits=True)
    check_train_step(ours, reference, images(2, 299))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_torchvisions(name):
    ours, reference = build(name, seed=3)
    assert list(ours.state_dict()) == list(reference.state_dict())
    fresh_ours, fresh_reference = build(name, seed=4)
    fresh_ours.load_state_dict(reference.state_dict(), strict=True)
    fresh_reference.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(fresh_ours.state_dict(), reference.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(fresh_reference.state_dict(), ours.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_structure_is_torchvisions(name):
    ours, reference = build(name)
    assert type(ours) is type(reference)
    assert repr(ours) == repr(reference)
    fused = [m for m in ours.modules() if isinstance(m, FusedModule)]
    assert fused and not any(isinstance(m, FusedModule) for m in reference.modules())
    converted = {type(m).__name__ for m in fused}
    expected = ({"InvertedResidual", "Conv2dNormActivation"} if name == "mobilenet_v2" else
                {"BasicConv2d", "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
                 "InceptionAux"})
    assert converted == expected


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1"])
@pytest.mark.parametrize("name", NAMES)
def test_weights_are_not_downloaded(name, weights):
    builder = getattr(fastconv.models, name)
    with pytest.raises(ValueError, match=rf"fastconv.models.{name} downloads no weights; got weights='{weights}'.*"
                                         r"load a state_dict"):
        builder(weights=weights)
    with pytest.raises(ValueError, match=r"got pretrained=True"):
        builder(pretrained=True)


def test_mobilenet_v2_builder_arguments():
    kwargs = {"num_classes": 7, "width_mult": 0.75, "round_nearest": 4, "dropout": 0.1,
              "norm_layer": partial(nn.BatchNorm2d, eps=1e-3)}
    ours, reference = build("mobilenet_v2", **kwargs)
    assert isinstance(fastconv.models.mobilenet_v2(pretrained=False, progress=False, **kwargs), type(ours))
    assert ours.classifier[0].p == 0.1 and ours.classifier[1].out_features == 7
    assert all(bn.eps == 1e-3 for _, bn in batchnorms(ours))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    check_eval(ours, reference, images(2, 40), "reference")


def test_inception_v3_builder_arguments():
    ours, reference = build("inception_v3", num_classes=5, aux_logits=False, transform_input=True, dropout=0.3)
    assert ours.AuxLogits is None and ours.transform_input and ours.dropout.p == 0.3
    assert list(ours.state_dict()) == list(reference.state_dict())
    check_eval(ours, reference, images(1, 75), "reference")


def test_cache_follows_weight_updates():
    ours, reference = build("mobilenet_v2", width_mult=0.5)
    x = images(2, 48)
    check_eval(ours, reference, x, "reference")
    # A training step changes weights and running statistics.
    x_train = images(4, 48, seed=2)
    for model in (ours, reference):
        model.train()
        torch.manual_seed(0)  # the same dropout masks
        with one_thread():
            model(x_train).square().mean().backward()
        torch.optim.SGD(model.parameters(), lr=0.05).step()
        model.eval()
    check_eval(ours, reference, x, "reference")
    # In-place parameter change in eval mode, then load_state_dict, then a dtype move.
    with torch.no_grad():
        for model in (ours, reference):
            model.features[4].conv[1][0].weight.mul_(-2)
    check_eval(ours, reference, x, "reference")
    other = randomize_(torchvision.models.mobilenet_v2(width_mult=0.5), seed=9).state_dict()
    ours.load_state_dict(other)
    reference.load_state_dict(other)
    check_eval(ours, reference, x, "reference")
    with torch.no_grad():
        torch.testing.assert_close(ours.double()(x.double()), fp64_output(reference, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name):
    ours, _ = build(name)
    first = "Conv2dNormActivation" if name == "mobilenet_v2" else "BasicConv2d"
    x = images(1, SMALL[name])
    with pytest.raises(ValueError, match=rf"{first} expects 3 input channels"):
        ours(x[:, :2])
    with pytest.raises(ValueError, match=rf"{first} expects an input of its parameters' dtype torch.float32"):
        ours(x.half())


@pytest.mark.slow
def test_compile_fullgraph_frozen():
    ours, reference = build("mobilenet_v2", **SHALLOW)
    x = images(2, 32)
    torch._dynamo.reset()
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        out = torch.compile(ours, fullgraph=True)(x)
    assert_within_tolerance(out, fp64_output(reference, x), FLOAT32, lambda: out)


@pytest.mark.slow
def test_export_round_trip():
    ours, reference = build("mobilenet_v2", **SHALLOW)
    x = images(2, 32)
    program = torch.export.export(ours, (x,))
    assert "fastconv.inverted_residual" in str(program.graph)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    with torch.no_grad():
        out = torch.export.load(buffer).module()(x)
    assert_within_tolerance(out, fp64_output(reference, x), FLOAT32, lambda: out)
