"""Every layer shape of MobileNetV2 (224x224) and InceptionV3 (299x299) that a fastconv op runs, at batch 1.

The shapes are read from torchvision's own models with forward hooks on the meta device (no compute, no
weights), so they follow torchvision exactly. Each shape becomes a ``LayerCase``: the op, where it occurs,
its input and weight shapes and parameters, and what it costs (FLOPs, bytes). Tests and benchmarks iterate
over ``layer_cases()``; ``LayerCase.make_args`` builds random BatchNorm-folded arguments for the op.

What counts as a case:

- MobileNetV2: every ``InvertedResidual`` block (inverted_residual); every depthwise conv
  (depthwise_conv2d, relu6); every 1x1 conv (pointwise_conv2d: relu6 after expand convs and the last conv,
  "none" with the block's residual for projections).
- InceptionV3: every 1x1 ``BasicConv2d`` (pointwise_conv2d, relu); the merged GEMM of the 1x1 convs that read
  one block input (InceptionA, C, D, E), concatenated on output channels; the sequential 1x7/7x1 pairs
  (asymmetric_conv_pair); InceptionE's parallel 1x3 || 3x1 (asymmetric_conv_parallel).

Cases are deduplicated by shape: the first layer of a shape names it and ``count`` says how often it occurs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from fastconv.backends import OPS

__all__ = ["NETWORKS", "LayerCase", "layer_cases"]

NETWORKS = ("mobilenet_v2", "inception_v3")
_SHORT_NAMES = {"mobilenet_v2": "mbv2", "inception_v3": "incv3"}
_IMAGE_SIZES = {"mobilenet_v2": 224, "inception_v3": 299}

# Random arguments: inputs ~ N(0, X_STD^2) and He-scaled weights ~ N(0, 2 / fan_in) keep activations O(1)
# from stage to stage while a few percent of the pre-activations pass 6, so relu6 clamps at both ends.
X_STD = 2.0
BIAS_STD = 0.5

Shape4 = tuple[int, int, int, int]


def _conv_out(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer shape of a network and the fastconv op that runs it.

    Attributes:
        network: "mobilenet_v2" or "inception_v3" (or a label of one's own for shapes made by hand).
        op: a name in ``fastconv.backends.OPS``.
        name: where it occurs in torchvision's model, e.g. "features.3" or "Mixed_6b.branch7x7_2+branch7x7_3";
            several module names joined by "+" for a merged or fused group.
        x: input shape at batch 1, [1, C, H, W].
        weights: the conv weight shapes in the op's argument order: depthwise [C, 1, k, k]; pointwise
            [Cout, Cin, 1, 1]; inverted_residual (expand or None, depthwise, project); the pairs (first, second).
            Every conv has a bias of its output channels (BatchNorm folded in).
        stride: of the depthwise conv (depthwise_conv2d, inverted_residual); 1 elsewhere.
        padding: of the depthwise conv (k // 2 in both networks); 0 elsewhere (the pairs pad "same").
        dilation: of the depthwise conv.
        residual: pointwise_conv2d adds a residual tensor; inverted_residual adds its input.
        activation: "none", "relu" or "relu6".
        count: how many layers of the network have this shape.
    """

    network: str
    op: str
    name: str
    x: Shape4
    weights: tuple[Shape4 | None, ...]
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    residual: bool = False
    activation: str = "none"
    count: int = 1

    def id(self) -> str:
        """A short readable pytest id, e.g. "mbv2-features.3-24x56x56-s1"."""
        _, c, h, w = self.x
        stride = f"-s{self.stride}" if self.op in ("depthwise_conv2d", "inverted_residual") else ""
        return f"{_SHORT_NAMES.get(self.network, self.network)}-{self.name}-{c}x{h}x{w}{stride}"

    def shape_key(self) -> tuple:
        """Everything but ``name`` and ``count``: cases with equal keys run the same computation."""
        return (self.network, self.op, self.x, self.weights, self.stride, self.padding, self.dilation,
                self.residual, self.activation)

    def out_shape(self, batch: int = 1) -> Shape4:
        """The op's output shape, [batch, Cout, Ho, Wo]."""
        _, _, h, w = self.x
        if self.op == "asymmetric_conv_parallel":
            return batch, self.weights[0][0] + self.weights[1][0], h, w
        if self.op in ("depthwise_conv2d", "inverted_residual"):
            k = self.weights[-2 if self.op == "inverted_residual" else 0][2]  # square in both networks
            h = _conv_out(h, k, self.stride, self.padding, self.dilation)
            w = _conv_out(w, k, self.stride, self.padding, self.dilation)
        return batch, self.weights[-1][0], h, w

    def flops(self, batch: int = 1) -> int:
        """Floating-point operations the op must do: 2 x its multiply-adds (bias and activation not counted)."""
        _, _, h, w = self.x
        _, _, ho, wo = self.out_shape()
        macs = 0
        for i, weight in enumerate(self.weights):
            if weight is not None:
                # Every conv writes the op's output size but inverted_residual's expand, before the stride.
                pixels = h * w if self.op == "inverted_residual" and i == 0 else ho * wo
                macs += math.prod(weight) * pixels
        return 2 * batch * macs

    def min_bytes(self, batch: int = 1, dtype: torch.dtype = torch.float16) -> int:
        """Bytes the op must move: each input, weight and bias read once, the output written once."""
        elements = math.prod((batch, *self.x[1:])) + math.prod(self.out_shape(batch))
        for weight in self.weights:
            if weight is not None:
                elements += math.prod(weight) + weight[0]
        if self.residual and self.op == "pointwise_conv2d":
            elements += math.prod(self.out_shape(batch))
        return elements * torch.empty((), dtype=dtype).element_size()

    def make_args(
        self,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple:
        """Random positional arguments of ``fastconv.ops.<op>`` for this case.

        Args:
            batch: N of the input (0 gives empty tensors).
            dtype: of every tensor argument.
            device: of every tensor argument.
            generator: a CPU generator to draw from; by default one seeded from ``id()``, so each case
                always gets the same arguments.

        Returns:
            The op's positional arguments: x [batch, C, H, W] contiguous (NCHW), folded weights and biases,
            then the op's other arguments.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(zlib.crc32(self.id().encode()))

        def randn(shape: tuple[int, ...], std: float) -> torch.Tensor:
            t = torch.randn(shape, generator=generator, dtype=torch.float32) * std
            return t.to(dtype=dtype, device=device)

        x = randn((batch, *self.x[1:]), X_STD)
        convs: list[torch.Tensor | None] = []
        for weight in self.weights:
            if weight is None:
                convs += [None, None]
            else:
                convs += [randn(weight, (2.0 / math.prod(weight[1:])) ** 0.5), randn(weight[:1], BIAS_STD)]
        if self.op == "depthwise_conv2d":
            return (x, *convs, (self.stride,) * 2, (self.padding,) * 2, (self.dilation,) * 2, self.activation)
        if self.op == "pointwise_conv2d":
            residual = randn(self.out_shape(batch), X_STD) if self.residual else None
            return (x, *convs, self.activation, residual)
        if self.op == "inverted_residual":
            return (x, *convs, self.stride, self.residual, self.activation)
        return (x, *convs, self.activation)


# ----------------------------------------------------------------------------------------------------------
# Collection from torchvision's models.


def _input_shapes(model: nn.Module, image_size: int) -> dict[str, Shape4]:
    """The input shape of every submodule in one batch-1 forward pass on the meta device."""
    shapes: dict[str, Shape4] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            shapes[name] = tuple(args[0].shape)

        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, image_size, image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return shapes


def _weight(conv: nn.Conv2d) -> Shape4:
    return tuple(conv.weight.shape)


def _mobilenet_v2_cases() -> Iterator[LayerCase]:
    from torchvision.models import mobilenet_v2
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.ops.misc import Conv2dNormActivation

    with torch.device("meta"):
        model = mobilenet_v2()
    inputs = _input_shapes(model, _IMAGE_SIZES["mobilenet_v2"])
    case = functools.partial(LayerCase, "mobilenet_v2")
    activation_of: dict[nn.Conv2d, str] = {}  # conv -> the activation of its Conv2dNormActivation
    residual_of: dict[nn.Conv2d, bool] = {}  # projection conv -> whether its block adds the input
    for name, m in model.named_modules():
        if isinstance(m, InvertedResidual):
            layers = list(m.conv)  # [expand,] depthwise, project conv, project BN
            expand = _weight(layers[0][0]) if len(layers) == 4 else None
            dw, project = layers[-3][0], layers[-2]
            residual_of[project] = m.use_res_connect
            yield case("inverted_residual", name, inputs[name], (expand, _weight(dw), _weight(project)),
                       stride=dw.stride[0], padding=dw.padding[0], residual=m.use_res_connect, activation="relu6")
        elif isinstance(m, Conv2dNormActivation):
            activation_of[m[0]] = "relu6" if isinstance(m[-1], nn.ReLU6) else "none"
        elif isinstance(m, nn.Conv2d):
            activation = activation_of.get(m, "none")
            if m.groups == m.in_channels > 1:
                yield case("depthwise_conv2d", name, inputs[name], (_weight(m),), stride=m.stride[0],
                           padding=m.padding[0], dilation=m.dilation[0], activation=activation)
            elif m.kernel_size == (1, 1):
                yield case("pointwise_conv2d", name, inputs[name], (_weight(m),),
                           residual=residual_of.get(m, False), activation=activation)


def _inception_v3_cases() -> Iterator[LayerCase]:
    from torchvision.models import inception_v3
    from torchvision.models.inception import BasicConv2d, InceptionA, InceptionC, InceptionD, InceptionE

    # The 1x1 convs that read the block input, run as one GEMM concatenated on output channels.
    merged_1x1 = {
        InceptionA: ("branch1x1", "branch5x5_1", "branch3x3dbl_1"),
        InceptionC: ("branch1x1", "branch7x7_1", "branch7x7dbl_1"),
        InceptionD: ("branch3x3_1", "branch7x7x3_1"),
        InceptionE: ("branch1x1", "branch3x3_1", "branch3x3dbl_1"),
    }
    # (op, first conv, second conv) of the fused asymmetric pairs.
    pairs = {
        InceptionC: (("asymmetric_conv_pair", "branch7x7_2", "branch7x7_3"),
                     ("asymmetric_conv_pair", "branch7x7dbl_2", "branch7x7dbl_3"),
                     ("asymmetric_conv_pair", "branch7x7dbl_4", "branch7x7dbl_5")),
        InceptionD: (("asymmetric_conv_pair", "branch7x7x3_2", "branch7x7x3_3"),),
        InceptionE: (("asymmetric_conv_parallel", "branch3x3_2a", "branch3x3_2b"),
                     ("asymmetric_conv_parallel", "branch3x3dbl_3a", "branch3x3dbl_3b")),
    }

    with torch.device("meta"):
        model = inception_v3(weights=None, aux_logits=False, init_weights=False)
    inputs = _input_shapes(model, _IMAGE_SIZES["inception_v3"])
    case = functools.partial(LayerCase, "inception_v3", activation="relu")
    for name, m in model.named_modules():
        if type(m) in merged_1x1:
            branches = merged_1x1[type(m)]
            cin = inputs[f"{name}.{branches[0]}"][1]
            cout = sum(getattr(m, b).conv.out_channels for b in branches)
            yield case("pointwise_conv2d", f"{name}.{'+'.join(branches)}", inputs[f"{name}.{branches[0]}"],
                       ((cout, cin, 1, 1),))
        for op, first, second in pairs.get(type(m), ()):
            yield case(op, f"{name}.{first}+{second}", inputs[f"{name}.{first}"],
                       (_weight(getattr(m, first).conv), _weight(getattr(m, second).conv)))
        if isinstance(m, BasicConv2d) and m.conv.kernel_size == (1, 1):
            yield case("pointwise_conv2d", name, inputs[name], (_weight(m.conv),))


@functools.cache
def _all_cases() -> tuple[LayerCase, ...]:
    unique: dict[tuple, LayerCase] = {}
    for found in (*_mobilenet_v2_cases(), *_inception_v3_cases()):
        key = found.shape_key()
        first = unique.get(key)
        unique[key] = found if first is None else dataclasses.replace(first, count=first.count + 1)
    return tuple(unique.values())


def layer_cases(network: str | None = None, op: str | None = None) -> list[LayerCase]:
    """The layer cases of one network or both, for one op or all, deduplicated by shape, in network order.

    Args:
        network: "mobilenet_v2", "inception_v3", or None for both.
        op: a name in ``fastconv.backends.OPS``, or None for every op.

    Returns:
        A new list of ``LayerCase``; the collection itself runs once per process.
    """
    if network is not None and network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)} or None; got {network!r}")
    if op is not None and op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)} or None; got {op!r}")
    return [c for c in _all_cases() if network in (None, c.network) and op in (None, c.op)]
