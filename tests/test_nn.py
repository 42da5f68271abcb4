"""fastconv.nn: each drop-in module against the torchvision module it replaces, holding the same weights."""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from module_testing import CHANNELS_LAST, check_eval, check_train_step, fp64_output, module_backends, randomize_
from op_testing import DTYPES, FLOAT32, TOLERANCES, assert_within_tolerance, relayout
from torch import Tensor, nn
from torchvision.models import inception, mobilenetv2
from torchvision.ops import misc

import fastconv
from fastconv import nn as fnn
from fastconv.nn import _fused


def group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels)


@dataclasses.dataclass(frozen=True)
class Case:
    """A torchvision module, its fastconv counterpart, their constructor arguments and an input shape."""

    id: str
    torchvision: type[nn.Module]
    fastconv: type[nn.Module]
    args: tuple
    input: tuple[int, int, int, int]
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    fused: bool = True  # False: layers the fused ops do not cover, which run torchvision's forward

    def build(self, seed: int = 0) -> tuple[nn.Module, nn.Module]:
        """(fastconv module, torchvision module) in eval mode, with the same random weights and BN statistics."""
        reference = randomize_(self.torchvision(*self.args, **self.kwargs), seed)
        ours = self.fastconv(*self.args, **self.kwargs)
        ours.load_state_dict(reference.state_dict())
        return ours.eval(), reference.eval()

    def x(self, batch: int | None = None) -> Tensor:
        shape = self.input if batch is None else (batch, *self.input[1:])
        return torch.randn(shape, generator=torch.Generator().manual_seed(1))


IR, CNA = (mobilenetv2.InvertedResidual, fnn.InvertedResidual), (misc.Conv2dNormActivation, fnn.Conv2dNormActivation)
BASIC = (inception.BasicConv2d, fnn.BasicConv2d)
CASES = [
    # InvertedResidual(inp, oup, stride, expand_ratio)
    Case("ir-t1", *IR, (16, 8, 1, 1), (2, 16, 9, 9)),
    Case("ir-t6-s2-odd", *IR, (8, 12, 2, 6), (2, 8, 11, 9)),
    Case("ir-t6-residual", *IR, (12, 12, 1, 6), (3, 12, 7, 7)),
    Case("ir-t3-odd-channels", *IR, (5, 5, 1, 3), (1, 5, 8, 6)),
    Case("ir-groupnorm", *IR, (8, 8, 1, 6), (2, 8, 6, 6), {"norm_layer": group_norm}, fused=False),
    # Conv2dNormActivation(in, out, ...)
    Case("cna-stem-3x3-s2", *CNA, (3, 16), (2, 3, 17, 15), {"stride": 2, "activation_layer": nn.ReLU6}),
    Case("cna-1x1-relu6", *CNA, (24, 40), (2, 24, 7, 7), {"kernel_size": 1, "activation_layer": nn.ReLU6}),
    Case("cna-depthwise-relu", *CNA, (12, 12), (2, 12, 9, 9), {"groups": 12}),
    Case("cna-no-norm-bias", *CNA, (6, 10), (2, 6, 5, 5),
         {"kernel_size": 1, "norm_layer": None, "activation_layer": None}),
    Case("cna-hardswish", *CNA, (6, 10), (2, 6, 5, 5), {"activation_layer": nn.Hardswish}, fused=False),
    Case("cna-groupnorm", *CNA, (6, 10), (2, 6, 5, 5), {"norm_layer": group_norm}, fused=False),
    # Inception
    Case("basic-1x1", *BASIC, (24, 16), (2, 24, 7, 7), {"kernel_size": 1}),
    Case("basic-3x3-s2", *BASIC, (8, 16), (2, 8, 9, 11), {"kernel_size": 3, "stride": 2}),
    Case("basic-1x7", *BASIC, (8, 12), (2, 8, 9, 9), {"kernel_size": (1, 7), "padding": (0, 3)}),
    Case("inception-a", inception.InceptionA, fnn.InceptionA, (24,), (2, 24, 9, 9), {"pool_features": 8}),
    Case("inception-b", inception.InceptionB, fnn.InceptionB, (24,), (2, 24, 9, 9)),
    Case("inception-c", inception.InceptionC, fnn.InceptionC, (40,), (2, 40, 9, 8), {"channels_7x7": 12}),
    Case("inception-d", inception.InceptionD, fnn.InceptionD, (40,), (2, 40, 9, 9)),
    Case("inception-e", inception.InceptionE, fnn.InceptionE, (40,), (2, 40, 5, 5)),
    Case("inception-aux", inception.InceptionAux, fnn.InceptionAux, (40, 10), (2, 40, 17, 17)),
]
ALL = [pytest.param(c, id=c.id) for c in CASES]
FUSED = [pytest.param(c, id=c.id) for c in CASES if c.fused]
FALLBACK = [pytest.param(c, id=c.id) for c in CASES if not c.fused]
BY_ID = {c.id: c for c in CASES}
BACKENDS = module_backends()


@pytest.mark.parametrize("tol", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", FUSED)
def test_eval_matches_torchvision(case, backend, tol):
    ours, reference = case.build()
    out = check_eval(ours, reference, case.x(), backend, tol)
    assert ours._plan() is not None, "the fused path must run"
    if out.dim() == 4:
        assert out.is_contiguous(memory_format=CHANNELS_LAST), f"output strides {out.stride()}"


@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed"])
@pytest.mark.parametrize("case", [pytest.param(BY_ID[i], id=i) for i in ("ir-t6-s2-odd", "inception-d")])
def test_eval_input_layouts(case, layout):
    ours, reference = case.build()
    check_eval(ours, reference, relayout(case.x(), layout), "reference")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", FUSED)
def test_eval_empty_batch(case, backend):
    ours, reference = case.build()
    x = case.x(batch=0)
    with torch.no_grad(), fastconv.use_backend(backend):
        assert ours(x).shape == reference(x).shape


@pytest.mark.parametrize("case", FALLBACK)
def test_eval_fallback_is_torchvision(case):
    # Layers the fused ops cannot compute exactly run torchvision's forward: the same numbers.
    ours, reference = case.build()
    assert ours._plan() is None
    x = case.x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_eval_batchnorm_in_training_mode_falls_back():
    # A BatchNorm left in training mode normalises with batch statistics: not foldable.
    case = BY_ID["ir-t6-residual"]
    ours, reference = case.build()
    x = case.x()
    check_eval(ours, reference, x, "reference")
    for model in (ours, reference):
        model.conv[1][1].train()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(ours.state_dict(), reference.state_dict(), rtol=0, atol=0)
    for model in (ours, reference):
        model.conv[1][1].eval()
    check_eval(ours, reference, x, "reference")


def test_eval_follows_layer_replacements():
    case = BY_ID["ir-t6-s2-odd"]
    ours, reference = case.build()
    x = case.x()
    check_eval(ours, reference, x, "reference")
    # ReLU6 -> ReLU in the depthwise stage: the expand stage keeps ReLU6, which one fused op cannot do.
    for model in (ours, reference):
        model.conv[1][2] = nn.ReLU()
    check_eval(ours, reference, x, "reference")
    assert ours._plan() is None
    for model in (ours, reference):
        model.conv[0][2] = nn.ReLU()
    check_eval(ours, reference, x, "reference")
    assert ours._plan() is not None
    # A new projection BatchNorm with other statistics.
    bn = randomize_(nn.BatchNorm2d(12), seed=5).eval()
    for model in (ours, reference):
        model.conv[3] = copy.deepcopy(bn)
    check_eval(ours, reference, x, "reference")


@pytest.mark.parametrize("case", ALL)
def test_train_matches_torchvision(case):
    ours, reference = case.build()
    check_train_step(ours, reference, case.x())


@pytest.mark.parametrize("case", FUSED)
def test_eval_backward_matches_torchvision(case):
    # Fine-tuning with frozen BatchNorm: gradients flow through the fold to conv and BN parameters.
    ours, reference = case.build()
    grads = []
    for model in (ours, reference):
        x = case.x().requires_grad_()
        model(x).sin().sum().backward()
        grads.append({"x": x.grad, **{k: p.grad for k, p in model.named_parameters()}})
    assert grads[0].keys() == grads[1].keys()
    for key, grad in grads[0].items():
        assert grad is not None, f"no gradient for {key}"
        assert_within_tolerance(grad, grads[1][key].double(), TOLERANCES[0], lambda g=grad: g)


@pytest.mark.parametrize("case", ALL)
def test_structure_is_torchvision(case):
    ours, reference = case.build()
    assert isinstance(ours, case.torchvision)
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", ALL)
def test_bad_input(case, mode):
    ours, _ = case.build()
    ours.train(mode == "train")
    x = case.x()
    name, channels = type(ours).__name__, case.input[1]
    bad: list[tuple[object, type[Exception], str]] = [
        (x[0], ValueError, rf"{name} expects a 4-D input \[N, {channels}, H, W\]; got 3-D"),
        (x[:, :-1], ValueError, rf"{name} expects {channels} input channels .* got shape \[\d+, {channels - 1},"),
        (x.double(), ValueError, rf"{name} expects an input of its parameters' dtype torch.float32; got torch.float64"),
        (x.to(torch.int32), ValueError, rf"{name} expects an input of its parameters' dtype .* got torch.int32"),
        (x.tolist(), TypeError, rf"{name} expects a Tensor of shape \[N, {channels}, H, W\]; got list"),
    ]
    before = x.clone()
    for value, error, match in bad:
        with pytest.raises(error, match=match):
            ours(value)
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------------------------------------
# The folded-weight cache.


@pytest.fixture
def fold_count(monkeypatch) -> Callable[[], int]:
    """How many times modules have folded their weights since the fixture was set up."""
    calls = []
    fold = _fused._folded_convs

    def counting(*args):
        calls.append(1)
        return fold(*args)

    monkeypatch.setattr(_fused, "_folded_convs", counting)
    return lambda: len(calls)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [pytest.param(BY_ID[i], id=i) for i in ("ir-t6-residual", "inception-e")])
def test_cache_follows_updates(case, backend, fold_count):
    ours, reference = case.build()
    x = case.x()
    check_eval(ours, reference, x, backend)
    check_eval(ours, reference, x, backend)
    assert fold_count() == 1, "a second call reuses the folded weights"

    def both(update: Callable[[nn.Module], None]) -> None:
        with torch.no_grad():
            update(ours)
            update(reference)

    conv = next(m for m in ours.modules() if isinstance(m, nn.Conv2d))
    conv_name = next(n for n, m in ours.named_modules() if m is conv)
    bn_name = next(n for n, m in ours.named_modules() if isinstance(m, nn.BatchNorm2d))
    # An in-place change of a parameter, then of a running statistic (as an optimizer or training would).
    both(lambda m: m.get_submodule(conv_name).weight.mul_(-1.5))
    check_eval(ours, reference, x, backend)
    both(lambda m: m.get_submodule(bn_name).running_var.mul_(3))
    check_eval(ours, reference, x, backend)
    assert fold_count() == 3
    # load_state_dict copies into the same tensors.
    reference.load_state_dict(randomize_(copy.deepcopy(reference), seed=7).state_dict())
    ours.load_state_dict(reference.state_dict())
    check_eval(ours, reference, x, backend)
    # A parameter replaced by a new tensor.
    both(lambda m: setattr(m.get_submodule(conv_name), "weight", nn.Parameter(-m.get_submodule(conv_name).weight)))
    check_eval(ours, reference, x, backend)
    # A change through .data bypasses version counters: .eval() refreshes.
    both(lambda m: m.get_submodule(conv_name).weight.data.mul_(0.5))
    ours.eval()
    check_eval(ours, reference, x, backend)
    assert fold_count() == 6


def test_cache_follows_dtype_and_device_moves():
    case = BY_ID["ir-t6-s2-odd"]
    ours, reference = case.build()
    x = case.x()
    with torch.no_grad():
        ours(x)
        ours.double()
        out = ours(x.double())
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, fp64_output(reference, x), rtol=1e-12, atol=1e-12)
        # Round trip through float16: the float32 parameters are now rounded, and may reuse old storage.
        ours.half().float()
        reference.half().float()
        torch.testing.assert_close(ours(x), reference.float()(x), rtol=1e-4, atol=1e-4)
        ours.to(torch.device("meta"))
        assert ours(x.to("meta")).device.type == "meta"


def test_cache_is_not_used_while_recording_gradients(fold_count):
    case = BY_ID["inception-c"]
    ours, reference = case.build()
    x = case.x()
    for step in range(2):
        for model in (ours, reference):
            model.zero_grad()
            model(x).sum().backward()
        torch.testing.assert_close(ours.branch7x7_2.conv.weight.grad, reference.branch7x7_2.conv.weight.grad,
                                   rtol=1e-4, atol=1e-4, msg=f"step {step}")
    assert fold_count() == 2
    assert ours._cache.convs is None, "nothing folded is kept"


def test_pickle_and_deepcopy_drop_the_cache():
    case = BY_ID["inception-a"]
    ours, reference = case.build()
    x = case.x()
    with torch.no_grad():
        ours(x)
    assert ours._cache.convs is not None
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded._cache is None
    check_eval(loaded, reference, x, "reference")
    clone = copy.deepcopy(ours)
    with torch.no_grad():
        clone.branch1x1.bn.bias.add_(1)
    check_eval(ours, reference, x, "reference")
    with torch.no_grad():
        reference.branch1x1.bn.bias.add_(1)
    check_eval(clone, reference, x, "reference")


def test_autocast_bfloat16():
    # Under autocast the fused path computes in the autocast dtype, as torch's convs do.
    case = BY_ID["ir-t6-residual"]
    ours, reference = case.build()
    x = case.x()
    expected = fp64_output(reference, x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x)
        torchs = reference(x)
    assert out.dtype == torch.bfloat16
    bf16 = next(t for t in TOLERANCES if t.dtype == torch.bfloat16)
    assert_within_tolerance(out, expected, bf16, lambda: torchs)


def test_cache_built_in_inference_mode_serves_input_gradients():
    # A frozen model: the cache serves calls with autograd on, e.g. for gradients with respect to the input.
    case = BY_ID["inception-e"]
    ours, reference = case.build()
    for model in (ours, reference):
        model.requires_grad_(False)
    with torch.inference_mode():
        ours(case.x())
    assert ours._cache.convs is not None
    grads = []
    for model in (ours, reference):
        x = case.x().requires_grad_()
        model(x).sin().sum().backward()
        grads.append(x.grad)
    assert_within_tolerance(grads[0], grads[1].double(), TOLERANCES[0], lambda: grads[0])


# ----------------------------------------------------------------------------------------------------------
# The eval path's direct calls of the cpu backend's kernel ops, and its pinned (packed-once) weights.


CPU_BACKEND = next(p for p in BACKENDS if p.values == ("cpu",))


@pytest.fixture
def public_op_calls(monkeypatch) -> Callable[[], list[str]]:
    """The public fastconv ops that modules have called since the fixture was set up."""
    calls = []
    for name in fastconv.ops.OPS:
        op = getattr(fastconv.ops, name)
        monkeypatch.setattr(fastconv.ops, name, lambda *args, _op=op, _name=name: calls.append(_name) or _op(*args))
    return lambda: list(calls)


@pytest.mark.parametrize("backend", [CPU_BACKEND])
@pytest.mark.parametrize("case", FUSED)
def test_direct_kernels_match_public_ops(case, backend, public_op_calls, monkeypatch):
    ours, _ = case.build()
    x = case.x()
    with torch.no_grad(), fastconv.use_backend(backend):
        direct = ours(x)
        assert public_op_calls() == [], "without autograd the kernel ops run directly"
        monkeypatch.setattr(_fused, "_direct", lambda *args: False)
        public = ours(x)
    # The same kernels on the same (pinned or not) weights.
    assert torch.equal(direct, public)


@pytest.mark.parametrize("backend", [CPU_BACKEND])
def test_direct_kernels_not_used_for_autograd_or_other_backends(backend, public_op_calls):
    case = BY_ID["inception-c"]
    ours, _ = case.build()
    x = case.x()
    with fastconv.use_backend(backend):
        ours(x).sum().backward()  # gradients for the weights: the fold and the ops record autograd
        calls = len(public_op_calls())
        assert calls > 0
        ours.requires_grad_(False)
        ours(x.requires_grad_()).sum().backward()  # a frozen model, gradients for the input
        assert len(public_op_calls()) > calls
        calls = len(public_op_calls())
    with torch.no_grad(), fastconv.use_backend("reference"):
        ours(x)
    assert len(public_op_calls()) > calls, "a backend other than cpu runs through the public ops"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN")
@pytest.mark.parametrize("backend", [CPU_BACKEND])
def test_other_convs_keep_their_weight_in_onednn_layout(backend, monkeypatch):
    # Convs no fastconv op covers (3x3 stride 2 here) run as oneDNN convolutions with the activation fused, on
    # a weight reordered once; the public path runs F.conv2d on the same folded weight.
    ours, reference = BY_ID["basic-3x3-s2"].build()
    x = BY_ID["basic-3x3-s2"].x()
    direct = check_eval(ours, reference, x, backend)
    assert list(ours._cache.convs[0].onednn_weights) == [tuple(x.shape)]
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    with torch.no_grad(), fastconv.use_backend("reference"):
        assert torch.equal(ours(x), direct), "the reference backend runs F.conv2d"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", [CPU_BACKEND])
def test_other_convs_in_half_types(backend, dtype):
    # Where oneDNN only emulates a half type, the conv runs as a float32 oneDNN convolution of the input converted
    # up, its output rounded once; where it runs the type natively, F.conv2d does.
    ours, reference = (m.to(dtype) for m in BY_ID["basic-3x3-s2"].build())
    x = BY_ID["basic-3x3-s2"].x().to(dtype)
    check_eval(ours, reference, x, backend, next(t for t in TOLERANCES if t.dtype == dtype))
    weights = ours._cache.convs[0].onednn_weights
    if _fused._native_onednn(dtype):
        assert weights is None
    else:
        assert list(weights) == [tuple(x.shape)]
        weight, bias = next(iter(weights.values()))
        assert weight.dtype == bias.dtype == torch.float32


@pytest.mark.parametrize("backend", [CPU_BACKEND])
def test_pinned_weights_follow_in_place_changes(backend):
    # The modules pin their folded weights, which the kernels then pack once; a pinned weight whose version
    # counter moved is packed again, and only pinned weights are packed once.
    torch.manual_seed(0)
    x = torch.randn(2, 24, 5, 5)
    weight, bias, other = torch.randn(40, 24, 1, 1), torch.randn(40), torch.randn(40, 24, 1, 1)

    def check(w: Tensor, b: Tensor | None) -> None:
        out = fastconv.pointwise_conv2d(x, w, b, "relu")
        expected = fastconv.reference.pointwise_conv2d(x.double(), w.double(), None if b is None else b.double(),
                                                       "relu")
        assert_within_tolerance(out, expected, FLOAT32, None)

    with torch.no_grad(), fastconv.use_backend(backend):
        torch.ops.fastconv_C.pin_weights([weight, bias])
        for _ in range(2):
            check(weight, bias)
            weight.mul_(-2)
            bias.add_(1)
        check(weight, bias)
        # Pinning again drops the packed copy: the way to refresh after a change through .data (which
        # bypasses the version counter), as a module's .eval() does.
        weight.data.mul_(3)
        torch.ops.fastconv_C.pin_weights([weight, bias])
        check(weight, bias)
        # A weight that is not pinned is packed on every call: even a change through .data shows.
        check(other, None)
        other.data.mul_(-1)
        check(other, None)
