"""What every fastconv module shares: the eval-mode plan, the folded-weight cache, the input check.

A fastconv module subclasses the torchvision module it replaces and puts ``FusedModule`` first in its bases.
In training mode (and whenever its layers are not something the fused ops compute exactly) it runs the
torchvision forward unchanged. In eval mode it reads its layers into a *plan* (groups of conv -> BN ->
activation stages), folds each BatchNorm into its conv, and runs fastconv's ops on the folded weights.

The folded weights are cached per module for inference (``torch.no_grad()``, ``torch.inference_mode()``,
or parameters that do not require grad); while autograd records, the fold runs on every call so that
gradients reach the conv and BN parameters. The cache is rebuilt when any weight, bias or BN statistic
changes: its key holds each tensor's identity, version counter (bumped by every in-place update, optimizer
steps and ``load_state_dict`` included) and data pointer, plus the compute dtype. ``.to()``/``.cuda()``/
``.half()`` and ``.train()``/``.eval()`` drop the cache; so does pickling. An in-place change through
``tensor.data`` bypasses the version counter: call ``.eval()`` again after one.

On CPU the cached folded weights are pinned (``fastconv_C::pin_weights``), so that the C++ kernels pack each
one into their GEMM layout once instead of on every call. A forward that needs none of what the public ops add
to the kernels (autograd, tracing by torch.compile / torch.export, tensor subclasses or dispatch modes, a
backend other than cpu) calls the kernel ops ``torch.ops.fastconv_C.<op>`` directly, which saves the public
op's Python argument checks and dispatch on every call; the kernels check their arguments themselves.

The plan is cached too, and read again when a BatchNorm of the module changes mode or when a module,
parameter or buffer is assigned anywhere (torch's global registration hooks count such edits). Edits that
register nothing (deleting a layer, changing a conv's stride in place) need a call to ``.eval()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from fastconv import backends, ops, reference
from fastconv.fold import FOLDABLE_NORMS, fold_conv_bn, is_foldable

CHANNELS_LAST = torch.channels_last


class Stage(NamedTuple):
    """One conv -> BatchNorm (eval) -> activation, as found in a module."""

    conv: nn.Conv2d
    bn: nn.Module | None  # a foldable BatchNorm, or None when the conv is not normalised
    activation: str  # "none", "relu" or "relu6"


# Groups of stages; the stages of one group read the same input and run as one conv on their
# output-channel-concatenated weights.
Plan = tuple[tuple[Stage, ...], ...]

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


def stage(conv: nn.Module, bn: nn.Module | None, activation: str) -> Stage | None:
    """The stage conv -> bn -> activation, or None when the fused ops cannot compute it exactly."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
        return None
    if bn is not None and not is_foldable(bn):
        return None
    return Stage(conv, bn, activation)


def sequence_stage(layers: Sequence[nn.Module]) -> Stage | None:
    """The stage of a [conv, BatchNorm?, ReLU|ReLU6?] sequence (torchvision's Conv2dNormActivation), or None."""
    if not layers:
        return None
    conv, rest = layers[0], list(layers[1:])
    bn = rest.pop(0) if rest and isinstance(rest[0], FOLDABLE_NORMS) else None
    activation = "none"
    if rest:
        activation = _ACTIVATIONS.get(type(rest.pop(0)))
        if activation is None or rest:
            return None
    return stage(conv, bn, activation)


def is_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv: a GEMM over channels."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.groups == 1)


def is_depthwise(conv: nn.Conv2d) -> bool:
    """A depthwise conv (one filter per channel) with numeric padding."""
    return (conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
            and not isinstance(conv.padding, str))


def orientation(conv: nn.Conv2d) -> str | None:
    """"1xn" or "nx1" for a stride-1, "same"-padded, ungrouped 1xn / nx1 conv (n odd > 1), else None."""
    kh, kw = conv.kernel_size
    if (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or min(kh, kw) != 1
            or max(kh, kw) == 1 or kh % 2 == 0 or kw % 2 == 0 or conv.padding != (kh // 2, kw // 2)):
        return None
    return "1xn" if kh == 1 else "nx1"


class OpRunner:
    """Runs fastconv's ops for one forward: through the public ops, or straight on the cpu backend's kernels.

    ``direct`` says that the forward needs nothing the public ops add to the kernel ops (autograd, tracing,
    argument normalisation for other backends); each op then runs as ``torch.ops.fastconv_C.<op>`` when the
    backend in force resolves to "cpu" for it, else as the public op. Arguments are the public ops' positional
    ones, stride, padding and dilation as pairs.
    """

    __slots__ = ("_device", "_direct", "_kernels")

    def __init__(self, direct: bool = False, device: torch.device | None = None) -> None:
        self._direct = direct
        self._device = device
        self._kernels: dict[str, Any] = {}  # op -> the callable that runs it, resolved on first use

    def __call__(self, op: str, *args: Any) -> Tensor:
        return self._kernel(op)(*args)

    def uses_cpu_kernels(self) -> bool:
        """Whether this forward calls the cpu backend's kernels directly."""
        return isinstance(self._kernel("pointwise_conv2d"), torch._ops.OpOverload)

    def _kernel(self, op: str) -> Any:
        kernel = self._kernels.get(op)
        if kernel is None:
            direct = self._direct and backends.resolve(op, self._device) == "cpu"
            kernel = self._kernels[op] = getattr(torch.ops.fastconv_C, op).default if direct else getattr(ops, op)
        return kernel


PUBLIC_OPS = OpRunner()


@dataclass(frozen=True)
class FoldedConv:
    """A conv with BatchNorm folded in and its activation, run on the fastest exact fastconv op.

    1x1 convs run as ``pointwise_conv2d``, depthwise ones as ``depthwise_conv2d``, the rest as ``F.conv2d``
    on channels_last input. ``splits`` holds the output channels of each conv of a group that was stacked
    into this one. ``onednn_weights`` (cached CPU folds of F.conv2d convs: float32 ones, and half-type ones
    on CPUs where oneDNN only emulates the half type, which then run in float32 and round once) holds the
    weight in oneDNN's own layout per input shape: where the forward calls the cpu backend's kernels directly,
    the conv then runs as one oneDNN convolution with the activation fused, without reordering the weight on
    every call as F.conv2d does. The layout is chosen for an input shape (one chosen without it can be many
    times slower).
    """

    weight: Tensor  # [Cout, Cin / groups, kh, kw]
    bias: Tensor | None  # [Cout]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    activation: str
    splits: tuple[int, ...]
    pointwise: bool
    depthwise: bool
    # input shape -> (float32 weight in oneDNN's layout, float32 bias)
    onednn_weights: dict[tuple[int, ...], tuple[Tensor, Tensor | None]] | None = None

    @classmethod
    def of(cls, group: Sequence[Stage], weight: Tensor, bias: Tensor | None) -> FoldedConv:
        conv = group[0].conv
        return cls(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, group[0].activation,
                   tuple(s.conv.out_channels for s in group), is_pointwise(conv), is_depthwise(conv))

    def __call__(self, x: Tensor, run: OpRunner = PUBLIC_OPS) -> Tensor:  # [N, Cin, H, W] -> [N, Cout, Ho, Wo]
        if self.pointwise:
            return run("pointwise_conv2d", x, self.weight, self.bias, self.activation, None)
        if self.depthwise:
            return run("depthwise_conv2d", x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.activation)
        x = x.contiguous(memory_format=CHANNELS_LAST)
        if self.onednn_weights is not None and run.uses_cpu_kernels():
            activation, scalars = _ONEDNN_ACTIVATIONS[self.activation]
            # Half types without native oneDNN support compute in float32 and round once, as fastconv's own
            # kernels (and PyTorch's half convs, which accumulate in float32) do.
            x32 = x.float()
            weight, bias = self._onednn_operands(x32)
            y = torch.ops.mkldnn._convolution_pointwise(x32, weight, bias, self.padding, self.stride,
                                                        self.dilation, self.groups, activation, scalars, "")
            return y if y.dtype == x.dtype else y.to(x.dtype)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return reference.activate(y, self.activation)

    def _onednn_operands(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(weight in oneDNN's layout for x's shape, bias), both float32, made on the first call for a shape."""
        shape = tuple(x.shape)
        operands = self.onednn_weights.get(shape)
        if operands is None:
            if len(self.onednn_weights) >= _ONEDNN_SHAPES:
                self.onednn_weights.pop(next(iter(self.onednn_weights)), None)
            weight = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.float().contiguous(memory_format=CHANNELS_LAST), self.padding, self.stride,
                self.dilation, self.groups, list(shape))
            operands = self.onednn_weights[shape] = (weight, None if self.bias is None else self.bias.float())
        return operands

    def split(self, x: Tensor, run: OpRunner = PUBLIC_OPS) -> tuple[Tensor, ...]:
        """Runs the stacked convs as one and returns each conv's output (channel slices, no copies)."""
        return self(x, run).split(self.splits, dim=1)


def asymmetric_pair(x: Tensor, first: FoldedConv, second: FoldedConv, run: OpRunner = PUBLIC_OPS) -> Tensor:
    """first -> second (1xn -> nx1 or nx1 -> 1xn) in one ``asymmetric_conv_pair``."""
    return run("asymmetric_conv_pair", x, first.weight, first.bias, second.weight, second.bias, first.activation)


def asymmetric_parallel(x: Tensor, a: FoldedConv, b: FoldedConv, run: OpRunner = PUBLIC_OPS) -> Tensor:
    """cat(a(x), b(x)) on channels in one ``asymmetric_conv_parallel``."""
    return run("asymmetric_conv_parallel", x, a.weight, a.bias, b.weight, b.bias, a.activation)


def _stage_tensors(s: Stage) -> Iterator[Tensor]:
    yield s.conv.weight
    if s.conv.bias is not None:
        yield s.conv.bias
    if s.bn is not None:
        for t in (s.bn.weight, s.bn.bias, s.bn.running_mean, s.bn.running_var):
            if t is not None:
                yield t


def _fingerprint(t: Tensor) -> tuple[int, int, int]:
    # Inference tensors have no version counter, and cannot be changed outside inference mode.
    return id(t), 0 if t.is_inference() else t._version, t.data_ptr()


def _fold_group(group: Sequence[Stage], dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    # Unnormalised convs get copies too: cached folds are pinned, and a module's own parameter may change
    # through `.data`, which pinning must not see.
    folded = [
        fold_conv_bn(s.conv.weight, s.conv.bias, s.bn, dtype) if s.bn is not None
        else (s.conv.weight.to(dtype, copy=True), None if s.conv.bias is None else s.conv.bias.to(dtype, copy=True))
        for s in group
    ]
    if len(folded) == 1:
        return folded[0]
    weight = torch.cat([w for w, _ in folded])  # [sum Cout, Cin, 1, 1]
    if all(b is None for _, b in folded):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in folded])


def _folded_convs(plan: Plan, dtype: torch.dtype) -> list[FoldedConv]:
    return [FoldedConv.of(group, *_fold_group(group, dtype)) for group in plan]


# Input shapes a conv keeps oneDNN weights for (batch sizes, image sizes); the oldest is dropped for a new one.
_ONEDNN_SHAPES = 4

# oneDNN's fused post-op (name and scalars) for each activation.
_ONEDNN_ACTIVATIONS: dict[str, tuple[str, list[float]]] = {
    "none": ("none", []), "relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0]),
}


def _native_onednn(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` convolutions natively on this CPU (AVX-512 BF16 / AMX / FP16)."""
    if dtype == torch.float32:
        return True
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    return check is not None and hasattr(torch.ops.mkldnn, check) and bool(getattr(torch.ops.mkldnn, check)())


def _onednn_ready(c: FoldedConv) -> bool:
    """Whether the conv runs as a oneDNN float32 convolution on the cpu path: float32 folds, and half-type folds
    on CPUs where oneDNN would only emulate the half type (F.conv2d is many times slower there)."""
    dtype = c.weight.dtype
    return (not (c.pointwise or c.depthwise) and c.weight.device.type == "cpu"
            and (dtype == torch.float32 or (dtype in (torch.bfloat16, torch.float16) and not _native_onednn(dtype)))
            and not isinstance(c.padding, str) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _prepare_cpu(convs: list[FoldedConv]) -> list[FoldedConv]:
    """Cached folds made ready for the CPU kernels, so that no call repacks a weight.

    Pins the weights of the C++ kernels (packed once, not per call) when ``fastconv._C`` is built, and gives
    the F.conv2d convs a cache of their weights in oneDNN's layout.
    """
    backends.pin_cpu_weights([t for c in convs for t in (c.weight, c.bias)])
    return [dataclasses.replace(c, onednn_weights={}) if _onednn_ready(c) else c for c in convs]


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast gives convs on x's device, or None when autocast is off there."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _direct(x: Tensor, convs: Sequence[FoldedConv]) -> bool:
    """Whether a forward on x with these folded convs may call the kernel ops directly (see ``OpRunner``)."""
    # Folds that record autograd require grad; so does an input whose gradient is wanted. Tensor subclasses
    # (FakeTensor, ...) and dispatch modes must see the public ops, which have fake kernels and autograd.
    return (x.device.type == "cpu" and type(x) is Tensor and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and (x.requires_grad or any(c.weight.requires_grad for c in convs)))
            and torch._C._len_torch_dispatch_stack() == 0)


# Bumped whenever a module, parameter or buffer is assigned to any module (torch's global registration
# hooks): cached plans are read again after such an edit.
_structure_version = 0


def _structure_changed(*args: object) -> None:
    global _structure_version
    _structure_version += 1


register_module_module_registration_hook(_structure_changed)
register_module_parameter_registration_hook(_structure_changed)
register_module_buffer_registration_hook(_structure_changed)


@dataclass
class _Cache:
    """A module's plan and folded convs, and what they were computed from."""

    structure: int  # _structure_version when the plan was read
    norms: tuple[nn.Module, ...]  # the module's BatchNorms, whose modes decide whether they fold
    modes: tuple[bool, ...]  # their training flags when the plan was read
    plan: Plan | None
    sources: tuple[Tensor, ...]  # the tensors the fold reads
    key: tuple[Any, ...] = ()  # the dtype and the sources' fingerprints when last folded
    convs: list[FoldedConv] | None = None

    @classmethod
    def read(cls, module: FusedModule) -> _Cache:
        norms = tuple(m for m in module.modules() if isinstance(m, FOLDABLE_NORMS))
        plan = module._plan()
        sources = () if plan is None else tuple(t for group in plan for s in group for t in _stage_tensors(s))
        return cls(_structure_version, norms, tuple(m.training for m in norms), plan, sources)

    def valid(self) -> bool:
        return self.structure == _structure_version and self.modes == tuple(m.training for m in self.norms)


class FusedModule(nn.Module):
    """Base of the fastconv modules: the torchvision forward in training, fused ops on folded weights in eval.

    Subclasses define ``_plan`` (the stages to fold, or None to run the torchvision forward) and
    ``_forward_folded`` (the fused computation), and put this class before the torchvision class they
    replace, whose ``forward`` serves training mode and fallbacks.
    """

    _cache: _Cache | None = None

    def _plan(self) -> Plan | None:
        raise NotImplementedError

    def _forward_folded(self, x: Tensor, convs: Sequence[FoldedConv], run: OpRunner) -> Tensor:
        raise NotImplementedError

    def _first_conv(self) -> nn.Conv2d:
        """The conv that reads the module's input (gives the expected input channels and dtype)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training:
            return super().forward(x)
        # Under autocast the fused path computes in the autocast dtype, as torch's convs would.
        dtype = _autocast_dtype(x) or self._first_conv().weight.dtype
        convs = self._folded(dtype)
        if convs is None:
            return super().forward(x)
        # Branches that read x directly (pooling) then keep channels_last too.
        x = x.to(dtype=dtype, memory_format=CHANNELS_LAST)
        return self._forward_folded(x, convs, OpRunner(_direct(x, convs), x.device))

    def _folded(self, dtype: torch.dtype) -> list[FoldedConv] | None:
        """The plan's convs with BatchNorm folded in, or None when the torchvision forward must run."""
        # Under torch.compile / torch.export (is_compiling() is true for both) the plan and the fold are
        # traced into the graph, where freezing constant-folds the fold; the Python cache would not trace.
        if torch.compiler.is_compiling():
            plan = self._plan()
            return None if plan is None else _folded_convs(plan, dtype)
        cache = self._cache
        if cache is None or not cache.valid():
            cache = self._cache = _Cache.read(self)
        if cache.plan is None:
            return None
        # With autograd recording the fold must be part of the graph, and a cached graph could be
        # backpropagated through only once.
        if torch.is_grad_enabled() and any(t.requires_grad for t in cache.sources):
            return _folded_convs(cache.plan, dtype)
        key = (dtype, *map(_fingerprint, cache.sources))
        if cache.key != key:
            # Plain tensors even under inference_mode: a later call may record autograd (on a frozen model).
            with torch.inference_mode(False), torch.no_grad():
                cache.convs = _prepare_cpu(_folded_convs(cache.plan, dtype))
            cache.key = key
        return cache.convs

    def _check_input(self, x: object) -> None:
        name = type(self).__name__
        conv = self._first_conv()
        want = f"[N, {conv.in_channels}, H, W]"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a Tensor of shape {want}; got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} expects a 4-D input {want}; got {x.dim()}-D of shape {list(x.shape)}")
        if x.shape[1] != conv.in_channels:
            raise ValueError(
                f"{name} expects {conv.in_channels} input channels {want}; got shape {list(x.shape)}"
            )
        dtype = conv.weight.dtype
        if x.dtype != dtype and not (x.is_floating_point() and _autocast_dtype(x) is not None):
            raise ValueError(
                f"{name} expects an input of its parameters' dtype {dtype}; got {x.dtype} "
                f"(convert the input, or the module with .to({x.dtype}))"
            )

    def train(self, mode: bool = True) -> FusedModule:
        self._cache = None
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> FusedModule:
        # .to()/.cuda()/.half() replace parameter storage; a freed address could be reused by the new one.
        self._cache = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_cache", None)
        return state
