"""The public fastconv ops, registered with ``torch.library`` in one place.

Each op has: a schema (from the typed ``custom_op`` below), one argument check shared by the real and the
fake (meta) implementation, the choice of backend (``fastconv.backends``), and a backward built from ATen
ops. Weights are BatchNorm-folded conv weights; ``activation`` is "none", "relu" or "relu6". Inputs may be in
any memory format; outputs are channels_last.

Kernel backends are reached with normalised arguments: ``x`` channels_last, weights and biases contiguous,
integer lists for strides and paddings. The C++ kernels are the ops ``torch.ops.fastconv_C.<op>`` of
``fastconv._C`` (schemas in ``csrc/common/schemas.h``); the Triton ones are ``fastconv.kernels.LAUNCHERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fastconv import backends, reference

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "asymmetric_conv_pair",
    "asymmetric_conv_parallel",
    "depthwise_conv2d",
    "inverted_residual",
    "pointwise_conv2d",
]

ACTIVATIONS = ("none", "relu", "relu6")
# float64 is accepted so that gradcheck can run; the kernels are built for the three others.
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
CHANNELS_LAST = torch.channels_last

# ----------------------------------------------------------------------------------------------------------
# Argument checks, shared by the real and the fake implementations. Each returns the output shape.


def _check_tensor(name: str, t: object, shape: tuple[int | None, ...] | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor; got {type(t).__name__}")
    if shape is not None:
        if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {want}; got {list(t.shape)}")
    return t


def _check_input(x: object) -> Tensor:
    x = _check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W]; got {x.dim()}-D with shape {list(x.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"x must be float32, float16 or bfloat16; got {x.dtype}")
    return x


def _check_like(name: str, t: Tensor, x: Tensor) -> None:
    if t.dtype != x.dtype:
        raise ValueError(f"{name} must have the dtype of x ({x.dtype}); got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on the device of x ({x.device}); got {t.device}")


def _check_weight(name: str, w: object, x: Tensor, shape: tuple[int | None, ...]) -> Tensor:
    w = _check_tensor(name, w, shape)
    _check_like(name, w, x)
    return w


def _check_bias(name: str, b: object, x: Tensor, channels: int) -> None:
    if b is None:
        return
    b = _check_tensor(name, b, (channels,))
    _check_like(name, b, x)


def _check_activation(activation: object) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {activation!r}")


def _check_pair_arg(name: str, value: Sequence[int], minimum: int) -> None:
    if len(value) != 2 or any(not isinstance(v, (int, torch.SymInt)) or v < minimum for v in value):
        raise ValueError(f"{name} must be two integers >= {minimum}; got {list(value)}")


def _conv_out(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _check_odd_kernel(name: str, w: Tensor, orientation: str | None = None) -> str:
    kh, kw = w.shape[2], w.shape[3]
    if kh % 2 == 0 or kw % 2 == 0 or min(kh, kw) != 1:
        raise ValueError(f"{name} must be a 1xn or nx1 kernel with n odd; got {kh}x{kw}")
    found = "1xn" if kh == 1 else "nx1"
    if orientation is not None and kh != kw and found != orientation:
        raise ValueError(f"{name} must be an {orientation} kernel here; got {kh}x{kw}")
    return found


def _check_depthwise(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    activation: str,
) -> list[int]:
    x = _check_input(x)
    n, c, h, w = x.shape
    weight = _check_weight("weight", weight, x, (c, 1, None, None))
    _check_bias("bias", bias, x, c)
    _check_pair_arg("stride", stride, 1)
    _check_pair_arg("padding", padding, 0)
    _check_pair_arg("dilation", dilation, 1)
    _check_activation(activation)
    kh, kw = weight.shape[2:]
    ho = _conv_out(h, kh, stride[0], padding[0], dilation[0])
    wo = _conv_out(w, kw, stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        raise ValueError(
            f"x of spatial size {h}x{w} is smaller than the {kh}x{kw} kernel (dilation {list(dilation)}) "
            f"with padding {list(padding)}: the output would be {ho}x{wo}"
        )
    return [n, c, ho, wo]


def _check_pointwise(
    x: Tensor, weight: Tensor, bias: Tensor | None, activation: str, residual: Tensor | None
) -> list[int]:
    x = _check_input(x)
    n, c, h, w = x.shape
    weight = _check_weight("weight", weight, x, (None, c, 1, 1))
    cout = weight.shape[0]
    _check_bias("bias", bias, x, cout)
    _check_activation(activation)
    if residual is not None:
        _check_tensor("residual", residual, (n, cout, h, w))
        _check_like("residual", residual, x)
    return [n, cout, h, w]


def _check_inverted_residual(
    x: Tensor,
    expand_weight: Tensor | None,
    expand_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    project_weight: Tensor,
    project_bias: Tensor | None,
    stride: int,
    residual: bool,
    activation: str,
) -> list[int]:
    x = _check_input(x)
    n, cin, h, w = x.shape
    hidden = cin
    if expand_weight is not None:
        expand_weight = _check_weight("expand_weight", expand_weight, x, (None, cin, 1, 1))
        hidden = expand_weight.shape[0]
        _check_bias("expand_bias", expand_bias, x, hidden)
    elif expand_bias is not None:
        raise ValueError("expand_bias must be None when expand_weight is None (expansion factor 1)")
    dw_weight = _check_weight("dw_weight", dw_weight, x, (hidden, 1, None, None))
    k = dw_weight.shape[2]
    if dw_weight.shape[3] != k or k not in (3, 5):
        raise ValueError(f"dw_weight must be a 3x3 or 5x5 depthwise kernel; got {k}x{dw_weight.shape[3]}")
    _check_bias("dw_bias", dw_bias, x, hidden)
    project_weight = _check_weight("project_weight", project_weight, x, (None, hidden, 1, 1))
    cout = project_weight.shape[0]
    _check_bias("project_bias", project_bias, x, cout)
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2; got {stride!r}")
    if residual and (stride != 1 or cout != cin):
        raise ValueError(
            f"residual=True needs stride 1 and as many output as input channels; got stride {stride}, "
            f"{cin} -> {cout} channels"
        )
    _check_activation(activation)
    pad = k // 2
    return [n, cout, _conv_out(h, k, stride, pad, 1), _conv_out(w, k, stride, pad, 1)]


def _check_asymmetric_pair(
    x: Tensor, weight1: Tensor, bias1: Tensor | None, weight2: Tensor, bias2: Tensor | None, activation: str
) -> list[int]:
    x = _check_input(x)
    n, cin, h, w = x.shape
    weight1 = _check_weight("weight1", weight1, x, (None, cin, None, None))
    first = _check_odd_kernel("weight1", weight1)
    cmid = weight1.shape[0]
    _check_bias("bias1", bias1, x, cmid)
    weight2 = _check_weight("weight2", weight2, x, (None, cmid, None, None))
    _check_odd_kernel("weight2", weight2, "nx1" if first == "1xn" else "1xn")
    cout = weight2.shape[0]
    _check_bias("bias2", bias2, x, cout)
    _check_activation(activation)
    return [n, cout, h, w]


def _check_asymmetric_parallel(
    x: Tensor, weight_a: Tensor, bias_a: Tensor | None, weight_b: Tensor, bias_b: Tensor | None, activation: str
) -> list[int]:
    x = _check_input(x)
    n, cin, h, w = x.shape
    weight_a = _check_weight("weight_a", weight_a, x, (None, cin, None, None))
    _check_odd_kernel("weight_a", weight_a)
    _check_bias("bias_a", bias_a, x, weight_a.shape[0])
    weight_b = _check_weight("weight_b", weight_b, x, (None, cin, None, None))
    _check_odd_kernel("weight_b", weight_b)
    _check_bias("bias_b", bias_b, x, weight_b.shape[0])
    _check_activation(activation)
    return [n, weight_a.shape[0] + weight_b.shape[0], h, w]


# ----------------------------------------------------------------------------------------------------------
# Running an op on the chosen backend.


def _empty(shape: list[int], x: Tensor) -> Tensor:
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=CHANNELS_LAST)


def _kernel_args(args: tuple) -> tuple:
    """Normalises the arguments for the kernel backends: activations channels_last, the rest contiguous."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            a = a.contiguous(memory_format=CHANNELS_LAST) if a.dim() == 4 and i == 0 else a.contiguous()
        out.append(a)
    return tuple(out)


def _run(op: str, shape: list[int], args: tuple, residual_index: int | None = None) -> Tensor:
    x = args[0]
    if 0 in shape:
        return _empty(shape, x)
    backend = backends.resolve(op, x.device)
    if backend == "reference":
        return getattr(reference, op)(*args)
    args = _kernel_args(args)
    if residual_index is not None and args[residual_index] is not None:
        args = (*args[:residual_index], args[residual_index].contiguous(memory_format=CHANNELS_LAST),
                *args[residual_index + 1:])
    if backend == "triton":
        return backends.triton_launcher(op)(*args)
    return getattr(torch.ops.fastconv_C, op)(*args)


# ----------------------------------------------------------------------------------------------------------
# Backward, from ATen ops. Intermediates of the fused ops are recomputed from the saved inputs.


def _activation_grad(grad: Tensor, y: Tensor, activation: str) -> Tensor:
    """dL/dz for y = activation(z), from y itself."""
    if activation == "relu":
        return torch.where(y > 0, grad, 0)
    if activation == "relu6":
        return torch.where((y > 0) & (y < 6), grad, 0)
    return grad


def _conv_backward(
    grad_z: Tensor,
    x: Tensor,
    weight: Tensor,
    has_bias: bool,
    mask: tuple[bool, bool, bool],
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of z = conv2d(x, weight, bias) for input, weight and bias, as ``mask`` asks."""
    if not any(mask):
        return None, None, None
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad_z, x, weight, [weight.shape[0]] if has_bias else None,
        list(stride), list(padding), list(dilation), False, [0, 0], groups,
        [mask[0], mask[1], mask[2] and has_bias],
    )
    return gx, gw, gb


def _save(ctx, inputs: tuple, output: Tensor, tensors: Sequence[int], **attrs) -> None:
    ctx.save_for_backward(*(inputs[i] for i in tensors), output)
    for k, v in attrs.items():
        setattr(ctx, k, v)


# ----------------------------------------------------------------------------------------------------------
# depthwise_conv2d


@torch.library.custom_op("fastconv::depthwise_conv2d", mutates_args=())
def _depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    activation: str,
) -> Tensor:
    shape = _check_depthwise(x, weight, bias, stride, padding, dilation, activation)
    return _run("depthwise_conv2d", shape, (x, weight, bias, list(stride), list(padding), list(dilation),
                                            activation))


@_depthwise_conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, activation):
    return _empty(_check_depthwise(x, weight, bias, stride, padding, dilation, activation), x)


def _depthwise_setup(ctx, inputs, output):
    _save(ctx, inputs, output, (0, 1), has_bias=inputs[2] is not None, conv=inputs[3:6], activation=inputs[6])


def _depthwise_backward(ctx, grad):
    x, weight, y = ctx.saved_tensors
    gz = _activation_grad(grad, y, ctx.activation)
    gx, gw, gb = _conv_backward(gz, x, weight, ctx.has_bias, ctx.needs_input_grad[:3], *ctx.conv,
                                groups=x.shape[1])
    return gx, gw, gb, None, None, None, None


_depthwise_conv2d.register_autograd(_depthwise_backward, setup_context=_depthwise_setup)


def _pair(v: int | Sequence[int], name: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    if isinstance(v, Sequence) and not isinstance(v, str):
        return list(v)
    raise TypeError(f"{name} must be an int or a pair of ints; got {v!r}")


def depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    activation: str = "none",
) -> Tensor:
    """Depthwise kxk convolution with fused bias and activation.

    Args:
        x: input, [N, C, H, W], any memory format.
        weight: [C, 1, kh, kw] (groups == C), BatchNorm folded in.
        bias: [C] or None.
        stride, padding, dilation: an int or a pair (h, w).
        activation: "none", "relu" or "relu6".

    Returns:
        activation(conv(x) + bias), [N, C, Ho, Wo], channels_last.
    """
    return torch.ops.fastconv.depthwise_conv2d(
        x, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation"),
        activation,
    )


# ----------------------------------------------------------------------------------------------------------
# pointwise_conv2d


@torch.library.custom_op("fastconv::pointwise_conv2d", mutates_args=())
def _pointwise_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, activation: str, residual: Tensor | None
) -> Tensor:
    shape = _check_pointwise(x, weight, bias, activation, residual)
    return _run("pointwise_conv2d", shape, (x, weight, bias, activation, residual), residual_index=4)


@_pointwise_conv2d.register_fake
def _(x, weight, bias, activation, residual):
    return _empty(_check_pointwise(x, weight, bias, activation, residual), x)


def _pointwise_setup(ctx, inputs, output):
    _save(ctx, inputs, output, (0, 1), has_bias=inputs[2] is not None, activation=inputs[3])


def _pointwise_backward(ctx, grad):
    x, weight, y = ctx.saved_tensors
    gz = _activation_grad(grad, y, ctx.activation)
    gx, gw, gb = _conv_backward(gz, x, weight, ctx.has_bias, ctx.needs_input_grad[:3])
    return gx, gw, gb, None, gz if ctx.needs_input_grad[4] else None


_pointwise_conv2d.register_autograd(_pointwise_backward, setup_context=_pointwise_setup)


def pointwise_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str = "none",
    residual: Tensor | None = None,
) -> Tensor:
    """1x1 convolution (a GEMM over channels) with fused bias, residual and activation.

    Args:
        x: input, [N, Cin, H, W], any memory format.
        weight: [Cout, Cin, 1, 1], BatchNorm folded in.
        bias: [Cout] or None.
        activation: "none", "relu" or "relu6".
        residual: [N, Cout, H, W] or None, added before the activation.

    Returns:
        activation(conv(x) + bias + residual), [N, Cout, H, W], channels_last.
    """
    return torch.ops.fastconv.pointwise_conv2d(x, weight, bias, activation, residual)


# ----------------------------------------------------------------------------------------------------------
# inverted_residual


@torch.library.custom_op("fastconv::inverted_residual", mutates_args=())
def _inverted_residual(
    x: Tensor,
    expand_weight: Tensor | None,
    expand_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    project_weight: Tensor,
    project_bias: Tensor | None,
    stride: int,
    residual: bool,
    activation: str,
) -> Tensor:
    args = (x, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
            activation)
    return _run("inverted_residual", _check_inverted_residual(*args), args)


@_inverted_residual.register_fake
def _(*args):
    return _empty(_check_inverted_residual(*args), args[0])


def _inverted_residual_setup(ctx, inputs, output):
    _save(ctx, inputs, output, (0, 1, 2, 3, 4, 5), has_project_bias=inputs[6] is not None, stride=inputs[7],
          residual=inputs[8], activation=inputs[9])


def _inverted_residual_backward(ctx, grad):
    x, we, be, wd, bd, wp, _ = ctx.saved_tensors
    act, need = ctx.activation, ctx.needs_input_grad
    pad = wd.shape[2] // 2
    with torch.no_grad():
        e = x if we is None else reference.activate(torch.nn.functional.conv2d(x, we, be), act)
        d = reference.activate(
            torch.nn.functional.conv2d(e, wd, bd, ctx.stride, pad, groups=wd.shape[0]), act
        )
    need_e = need[0] or need[1] or need[2]
    gd, gwp, gbp = _conv_backward(grad, d, wp, ctx.has_project_bias, (any(need[:5]), need[5], need[6]))
    ge = gwd = gbd = gx = gwe = gbe = None
    if gd is not None:
        gzd = _activation_grad(gd, d, act)
        ge, gwd, gbd = _conv_backward(gzd, e, wd, bd is not None, (need_e, need[3], need[4]),
                                      (ctx.stride,) * 2, (pad, pad), groups=wd.shape[0])
    if ge is not None:
        if we is None:
            gx = ge
        else:
            gze = _activation_grad(ge, e, act)
            gx, gwe, gbe = _conv_backward(gze, x, we, be is not None, need[:3])
    if ctx.residual and need[0]:
        gx = grad if gx is None else gx + grad
    return gx, gwe, gbe, gwd, gbd, gwp, gbp, None, None, None


_inverted_residual.register_autograd(_inverted_residual_backward, setup_context=_inverted_residual_setup)


def inverted_residual(
    x: Tensor,
    expand_weight: Tensor | None,
    expand_bias: Tensor | None,
    dw_weight: Tensor,
    dw_bias: Tensor | None,
    project_weight: Tensor,
    project_bias: Tensor | None,
    stride: int = 1,
    residual: bool = False,
    activation: str = "relu6",
) -> Tensor:
    """MobileNetV2's inverted residual block in one op.

    y = project(act(depthwise(act(expand(x))))) (+ x): 1x1 expand -> act -> kxk depthwise (stride 1 or 2,
    padding k // 2) -> act -> 1x1 linear projection -> (+ x when ``residual``).

    Args:
        x: input, [N, Cin, H, W], any memory format.
        expand_weight: [Chid, Cin, 1, 1], or None when the expansion factor is 1 (then Chid == Cin).
        expand_bias: [Chid] or None.
        dw_weight: [Chid, 1, k, k], k = 3 or 5.
        dw_bias: [Chid] or None.
        project_weight: [Cout, Chid, 1, 1].
        project_bias: [Cout] or None.
        stride: 1 or 2, of the depthwise stage.
        residual: add x to the output (needs stride 1 and Cout == Cin).
        activation: of the expand and depthwise stages; "relu6" in MobileNetV2.

    Returns:
        [N, Cout, Ho, Wo], channels_last.
    """
    return torch.ops.fastconv.inverted_residual(
        x, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
        activation,
    )


# ----------------------------------------------------------------------------------------------------------
# asymmetric_conv_pair


@torch.library.custom_op("fastconv::asymmetric_conv_pair", mutates_args=())
def _asymmetric_conv_pair(
    x: Tensor, weight1: Tensor, bias1: Tensor | None, weight2: Tensor, bias2: Tensor | None, activation: str
) -> Tensor:
    args = (x, weight1, bias1, weight2, bias2, activation)
    return _run("asymmetric_conv_pair", _check_asymmetric_pair(*args), args)


@_asymmetric_conv_pair.register_fake
def _(*args):
    return _empty(_check_asymmetric_pair(*args), args[0])


def _pair_setup(ctx, inputs, output):
    _save(ctx, inputs, output, (0, 1, 2, 3), has_bias2=inputs[4] is not None, activation=inputs[5])


def _pair_backward(ctx, grad):
    x, w1, b1, w2, y = ctx.saved_tensors
    act, need = ctx.activation, ctx.needs_input_grad
    with torch.no_grad():
        h = reference.activate(torch.nn.functional.conv2d(x, w1, b1, padding=reference.same_padding(w1)), act)
    gz2 = _activation_grad(grad, y, act)
    gh, gw2, gb2 = _conv_backward(gz2, h, w2, ctx.has_bias2, (any(need[:3]), need[3], need[4]),
                                  padding=reference.same_padding(w2))
    gx = gw1 = gb1 = None
    if gh is not None:
        gz1 = _activation_grad(gh, h, act)
        gx, gw1, gb1 = _conv_backward(gz1, x, w1, b1 is not None, need[:3], padding=reference.same_padding(w1))
    return gx, gw1, gb1, gw2, gb2, None


_asymmetric_conv_pair.register_autograd(_pair_backward, setup_context=_pair_setup)


def asymmetric_conv_pair(
    x: Tensor,
    weight1: Tensor,
    bias1: Tensor | None,
    weight2: Tensor,
    bias2: Tensor | None,
    activation: str = "relu",
) -> Tensor:
    """The sequential pair 1xn -> act -> nx1 -> act (or nx1 -> 1xn), "same" padding, stride 1.

    Args:
        x: input, [N, Cin, H, W], any memory format.
        weight1: [Cmid, Cin, 1, n] or [Cmid, Cin, n, 1], n odd.
        bias1: [Cmid] or None.
        weight2: [Cout, Cmid, m, 1] or [Cout, Cmid, 1, m] (the other orientation), m odd.
        bias2: [Cout] or None.
        activation: after each conv; "relu" in InceptionV3.

    Returns:
        [N, Cout, H, W], channels_last.
    """
    return torch.ops.fastconv.asymmetric_conv_pair(x, weight1, bias1, weight2, bias2, activation)


# ----------------------------------------------------------------------------------------------------------
# asymmetric_conv_parallel


@torch.library.custom_op("fastconv::asymmetric_conv_parallel", mutates_args=())
def _asymmetric_conv_parallel(
    x: Tensor, weight_a: Tensor, bias_a: Tensor | None, weight_b: Tensor, bias_b: Tensor | None, activation: str
) -> Tensor:
    args = (x, weight_a, bias_a, weight_b, bias_b, activation)
    return _run("asymmetric_conv_parallel", _check_asymmetric_parallel(*args), args)


@_asymmetric_conv_parallel.register_fake
def _(*args):
    return _empty(_check_asymmetric_parallel(*args), args[0])


def _parallel_setup(ctx, inputs, output):
    _save(ctx, inputs, output, (0, 1, 3), has_bias_a=inputs[2] is not None, has_bias_b=inputs[4] is not None,
          activation=inputs[5])


def _parallel_backward(ctx, grad):
    x, wa, wb, y = ctx.saved_tensors
    need = ctx.needs_input_grad
    ca = wa.shape[0]
    grads = []
    for w, has_bias, sl, mask in ((wa, ctx.has_bias_a, slice(0, ca), need[:3]),
                                  (wb, ctx.has_bias_b, slice(ca, None), (need[0], need[3], need[4]))):
        gz = _activation_grad(grad[:, sl], y[:, sl], ctx.activation)
        grads.append(_conv_backward(gz, x, w, has_bias, mask, padding=reference.same_padding(w)))
    (gxa, gwa, gba), (gxb, gwb, gbb) = grads
    gx = None if gxa is None else gxa + gxb
    return gx, gwa, gba, gwb, gbb, None


_asymmetric_conv_parallel.register_autograd(_parallel_backward, setup_context=_parallel_setup)


def asymmetric_conv_parallel(
    x: Tensor,
    weight_a: Tensor,
    bias_a: Tensor | None,
    weight_b: Tensor,
    bias_b: Tensor | None,
    activation: str = "relu",
) -> Tensor:
    """The parallel pair 1xn || nx1 over one input, written into one channel-concatenated output.

    Args:
        x: input, [N, Cin, H, W], any memory format.
        weight_a: [Ca, Cin, 1, n] (or any 1xn / nx1 kernel, n odd).
        bias_a: [Ca] or None.
        weight_b: [Cb, Cin, n, 1] (or any 1xn / nx1 kernel, n odd).
        bias_b: [Cb] or None.
        activation: after each conv; "relu" in InceptionV3.

    Returns:
        cat(act(conv_a(x)), act(conv_b(x))), [N, Ca + Cb, H, W], channels_last.
    """
    return torch.ops.fastconv.asymmetric_conv_parallel(x, weight_a, bias_a, weight_b, bias_b, activation)


OPS: dict[str, Callable[..., Tensor]] = {
    "depthwise_conv2d": depthwise_conv2d,
    "pointwise_conv2d": pointwise_conv2d,
    "inverted_residual": inverted_residual,
    "asymmetric_conv_pair": asymmetric_conv_pair,
    "asymmetric_conv_parallel": asymmetric_conv_parallel,
}
