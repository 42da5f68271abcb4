"""The checks every fastconv op passes, and the tolerance rule they hold outputs to.

Each ``tests/test_<op>.py`` subclasses ``OpSuite`` with what is particular to its op (edge shapes, bad input,
tests of its own); ``OpSuite`` runs the shared checks on every backend that can run here.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import fastconv
from fastconv import backends, reference
from fastconv.ops import OPS
from fastconv.shapes import LayerCase, layer_cases

CPU = torch.device("cpu")
CHANNELS_LAST = torch.channels_last
KERNEL_BACKENDS = ("reference", "cpu")

# Where each op takes its biases, so that a test can drop them.
BIAS_POSITIONS = {
    "depthwise_conv2d": (2,),
    "pointwise_conv2d": (2,),
    "inverted_residual": (2, 4, 6),
    "asymmetric_conv_pair": (2, 4),
    "asymmetric_conv_parallel": (2, 4),
}


def backend_params(op: str) -> list:
    """The CPU backends as pytest params; one that cannot run ``op`` here is skipped with the reason."""
    params = []
    for name in KERNEL_BACKENDS:
        reason = backends.why_not(name, op, CPU)
        marks = () if reason is None else pytest.mark.skip(reason=reason)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def layer_params(op: str) -> list:
    """Every layer case of both networks for ``op``, with readable ids."""
    return [pytest.param(case, id=case.id()) for case in layer_cases(op=op)]


def edge(op: str, name: str, x: tuple[int, int, int, int], weights: tuple, **params) -> object:
    """An edge shape as the pytest param (case, batch); ``x`` is [N, C, H, W] and N becomes the batch."""
    case = LayerCase("edge", op, name, (1, *x[1:]), weights, **params)
    return pytest.param(case, x[0], id=f"{case.id()}-n{x[0]}")


# ----------------------------------------------------------------------------------------------------------
# The tolerance rule (DESIGN.md §5).


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close an op's output must be to the fp64 reference, for one dtype.

    With ``scale = max(1, max|ref64|)``:
    float32: max|ours - ref64| <= atol * scale.
    float16/bfloat16: max|ours - ref64| <= factor * max|torch - ref64| + atol * scale, where ``torch`` is the
    reference op (PyTorch's own kernels) run on the same inputs in the same dtype.
    """

    dtype: torch.dtype
    atol: float
    factor: float | None = None

    def __str__(self) -> str:
        return str(self.dtype).removeprefix("torch.")


FLOAT32 = Tolerance(torch.float32, 1e-4)
# atol: half a unit in the last place at the output's scale (8 and 11 significant bits).
TOLERANCES = (FLOAT32, Tolerance(torch.bfloat16, 2.0**-8, 2.0), Tolerance(torch.float16, 2.0**-11, 2.0))
DTYPES = [pytest.param(tol, id=str(tol)) for tol in TOLERANCES]


def cast(args: Sequence, dtype: torch.dtype) -> tuple:
    """``args`` with every floating-point tensor converted to ``dtype``."""
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def assert_within_tolerance(
    out: Tensor, expected: Tensor, tol: Tolerance, same_precision: Callable[[], Tensor] | None
) -> None:
    """Holds ``out`` to the tolerance rule against ``expected`` (fp64, not empty).

    ``same_precision`` computes PyTorch's own output in ``tol.dtype``; float32 does not need it.
    """
    scale = max(1.0, expected.abs().max().item())
    error = (out.double() - expected).abs().max().item()
    bound = tol.atol * scale
    torch_error = None
    if tol.factor is not None:
        torch_error = (same_precision().double() - expected).abs().max().item()
        bound += tol.factor * torch_error
    assert error <= bound, (
        f"{tol}: max |ours - fp64 reference| = {error:.4g} > {bound:.4g} "
        f"(max |ref| {scale:.4g}, PyTorch's own {tol} error {torch_error})"
    )


# ----------------------------------------------------------------------------------------------------------
# Running and checking an op.


def run(op: str, args: Sequence, backend: str) -> Tensor:
    """``fastconv.ops.<op>(*args)`` on ``backend``."""
    with fastconv.use_backend(backend):
        return OPS[op](*args)


def check_op(op: str, args: Sequence, backend: str, tol: Tolerance = FLOAT32) -> Tensor:
    """Runs ``op`` on ``backend`` and checks everything an output promises.

    Output: the reference's shape, the input's dtype and device, channels_last, within the tolerance rule of
    the fp64 reference; inputs: unchanged by the call.

    Returns:
        The output.
    """
    before = [a.clone() if isinstance(a, Tensor) else a for a in args]
    out = run(op, args, backend)
    for i, (a, b) in enumerate(zip(args, before, strict=True)):
        if isinstance(a, Tensor):
            assert torch.equal(a, b), f"argument {i} was changed by the call"
    ref_op = getattr(reference, op)
    expected = ref_op(*cast(args, torch.float64))
    assert out.shape == expected.shape
    assert out.dtype == args[0].dtype and out.device == args[0].device
    assert out.is_contiguous(memory_format=CHANNELS_LAST), f"output strides {out.stride()} are not channels_last"
    assert_within_tolerance(out, expected, tol, lambda: ref_op(*args))
    return out


def without_biases(op: str, args: Sequence) -> tuple:
    """``args`` with every bias None."""
    return tuple(None if i in BIAS_POSITIONS[op] else a for i, a in enumerate(args))


# ----------------------------------------------------------------------------------------------------------
# Memory layouts: the same values, stored differently.

LAYOUTS = ("contiguous", "channels_last", "strided", "transposed")


def relayout(t: Tensor, layout: str) -> Tensor:
    """``t``'s values in another memory layout.

    contiguous / channels_last: as named (channels_last leaves 1-D tensors alone).
    strided: a view with a storage offset and gaps: every dim sliced from 1 in a larger buffer, every other
    element of the last dim.
    transposed: H and W swapped in memory (H has stride 1); 1-D tensors are left alone.
    """
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=CHANNELS_LAST) if t.dim() == 4 else t
    if layout == "strided":
        buffer = t.new_zeros(*(s + 1 for s in t.shape[:-1]), 2 * t.shape[-1])
        view = buffer[(*(slice(1, None) for _ in t.shape[:-1]), slice(None, None, 2))]
        return view.copy_(t)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() == 4 else t
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")


def relayout_args(args: Sequence, layout: str) -> tuple:
    return tuple(relayout(a, layout) if isinstance(a, Tensor) else a for a in args)


# ----------------------------------------------------------------------------------------------------------
# Autograd, torch.library and the compilers.


def check_empty_batch(case: LayerCase, backend: str) -> None:
    """N = 0 gives an empty channels_last output of the right shape."""
    out = run(case.op, case.make_args(batch=0), backend)
    assert out.shape == case.out_shape(batch=0)
    assert out.is_contiguous(memory_format=CHANNELS_LAST)


def check_opcheck(op: str, args: Sequence, backend: str) -> None:
    """``torch.library.opcheck``: schema, autograd registration, fake tensor, AOT dispatch."""
    args = tuple(a.requires_grad_() if isinstance(a, Tensor) else a for a in args)
    with fastconv.use_backend(backend):
        torch.library.opcheck(getattr(torch.ops.fastconv, op).default, args)


def check_gradcheck(op: str, args: Sequence, backend: str) -> None:
    """fp64 ``gradcheck`` of every tensor argument.

    Fast mode compares the analytical and numerical Jacobians projected on random vectors, which finds the
    same errors with two evaluations per input instead of two per input element.
    """
    args = cast(args, torch.float64)
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]

    def fn(*tensors: Tensor) -> Tensor:
        full = list(args)
        for i, t in zip(positions, tensors, strict=True):
            full[i] = t
        return OPS[op](*full)

    inputs = tuple(args[i].detach().requires_grad_() for i in positions)
    with fastconv.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def check_compile(op: str, args: Sequence, backend: str, compiler: str) -> None:
    """``torch.compile(fullgraph=True)`` of a function calling the op equals eager."""

    def fn(*a):
        # An ATen op after the custom op makes the compiler handle its output, strides included.
        return OPS[op](*a) * 2

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=compiler)
    with fastconv.use_backend(backend):
        torch.testing.assert_close(compiled(*args), fn(*args), rtol=0, atol=0)


class _OpModule(nn.Module):
    """Calls ``op`` with the tensors it is given in place of the tensors of ``template``."""

    def __init__(self, op: str, template: Sequence) -> None:
        super().__init__()
        self.op, self.template = op, tuple(template)

    def forward(self, *tensors: Tensor) -> Tensor:
        it = iter(tensors)
        return OPS[self.op](*(next(it) if isinstance(a, Tensor) else a for a in self.template))


def check_export(op: str, args: Sequence, backend: str) -> None:
    """``torch.export`` round trip: export, save, load, run; equals eager."""
    module = _OpModule(op, args)
    tensors = tuple(a for a in args if isinstance(a, Tensor))
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, tensors), buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with fastconv.use_backend(backend):
        torch.testing.assert_close(loaded(*tensors), module(*tensors), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------
# Bad input.


@dataclasses.dataclass(frozen=True)
class BadInput:
    """A way to break valid arguments, and the error it must raise."""

    id: str
    change: Callable[[list], None]  # edits the argument list in place
    error: type[Exception]
    match: str


def bad_input_params(bad: Sequence[BadInput]) -> list:
    return [pytest.param(b, id=b.id) for b in bad]


def check_bad_input(op: str, args: Sequence, bad: BadInput, backend: str) -> None:
    """The broken arguments raise ``bad.error`` with a message matching ``bad.match``."""
    broken = list(args)
    bad.change(broken)
    with fastconv.use_backend(backend), pytest.raises(bad.error, match=bad.match):
        OPS[op](*broken)


def replace(position: int, make: Callable[[Tensor], object]) -> Callable[[list], None]:
    """A ``BadInput.change`` that replaces argument ``position`` by ``make(that argument)``."""

    def change(args: list) -> None:
        args[position] = make(args[position])

    return change


def common_bad_inputs(weight: tuple[int, str], bias: tuple[int, str], activation: int) -> list[BadInput]:
    """Bad input every op must reject.

    Args:
        weight: (position, name) of one of the op's weights.
        bias: (position, name) of one of its biases.
        activation: position of its activation argument.
    """
    (w, w_name), (b, b_name) = weight, bias
    return [
        BadInput("x-rank", replace(0, lambda x: x[0]), ValueError, r"x must be 4-D .* got 3-D"),
        BadInput("x-int", replace(0, lambda x: x.to(torch.int32)), ValueError, r"x must be float32.*got torch.int32"),
        BadInput("x-none", replace(0, lambda x: None), TypeError, r"x must be a Tensor; got NoneType"),
        BadInput("weight-dtype", replace(w, lambda t: t.half()), ValueError,
                 rf"{w_name} must have the dtype of x \(torch.float32\); got torch.float16"),
        BadInput("weight-device", replace(w, lambda t: t.to("meta")), ValueError,
                 rf"{w_name} must be on the device of x \(cpu\); got meta"),
        BadInput("weight-rank", replace(w, lambda t: t[0]), ValueError, rf"{w_name} must have shape"),
        BadInput("bias-shape", replace(b, lambda t: t[1:]), ValueError, rf"{b_name} must have shape"),
        BadInput("bias-dtype", replace(b, lambda t: t.double()), ValueError, rf"{b_name} must have the dtype of x"),
        BadInput("activation", replace(activation, lambda a: "gelu"), ValueError,
                 r"activation must be one of 'none', 'relu', 'relu6'; got 'gelu'"),
    ]


# ----------------------------------------------------------------------------------------------------------
# The suite.

COMPILERS = ("aot_eager", "inductor")


class OpSuite:
    """The checks every op passes. A test module subclasses it as ``Test<Op>`` and sets the attributes below.

    Tests take their parameters by name: ``layer_case`` (every layer shape of both networks), ``edge_case``
    and ``batch`` (``EDGES``), ``layout``, ``compiler``, ``bad`` (``BAD_INPUTS``), ``backend`` (reference
    and cpu; skipped with the reason when one cannot run), ``tol`` (float32, bfloat16, float16 with their
    tolerances). A subclass's own tests can take them too.
    """

    OP: ClassVar[str]
    EDGES: ClassVar[list]  # edge(...) params: (case, batch)
    SMALL: ClassVar[tuple[LayerCase, int]]  # for layouts, opcheck, gradcheck, compilers, export, bad input
    BAD_INPUTS: ClassVar[list[BadInput]]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # In this order, so that ids read case-variant-backend-dtype.
        params = {
            "layer_case": layer_params(self.OP),
            ("edge_case", "batch"): self.EDGES,
            "layout": LAYOUTS,
            "compiler": COMPILERS,
            "bad": bad_input_params(self.BAD_INPUTS),
            "backend": backend_params(self.OP),
            "tol": DTYPES,
        }
        for names, values in params.items():
            if all(n in metafunc.fixturenames for n in ((names,) if isinstance(names, str) else names)):
                metafunc.parametrize(names, values)

    def small_args(self, dtype: torch.dtype = torch.float32) -> tuple:
        case, batch = self.SMALL
        return case.make_args(batch, dtype=dtype)

    def test_layer_shapes(self, layer_case: LayerCase, backend: str, tol: Tolerance) -> None:
        check_op(self.OP, layer_case.make_args(dtype=tol.dtype), backend, tol)

    def test_edge_shapes(self, edge_case: LayerCase, batch: int, backend: str, tol: Tolerance) -> None:
        check_op(self.OP, edge_case.make_args(batch, dtype=tol.dtype), backend, tol)

    def test_layouts(self, layout: str, backend: str) -> None:
        check_op(self.OP, relayout_args(self.small_args(), layout), backend)

    def test_no_bias(self, backend: str) -> None:
        check_op(self.OP, without_biases(self.OP, self.small_args()), backend)

    def test_empty_batch(self, backend: str) -> None:
        check_empty_batch(self.SMALL[0], backend)

    def test_opcheck(self, backend: str) -> None:
        check_opcheck(self.OP, self.small_args(), backend)

    def test_gradcheck(self, backend: str) -> None:
        check_gradcheck(self.OP, self.small_args(), backend)

    def test_compile(self, compiler: str, backend: str) -> None:
        check_compile(self.OP, self.small_args(), backend, compiler)

    def test_export(self, backend: str) -> None:
        check_export(self.OP, self.small_args(), backend)

    def test_bad_input(self, bad: BadInput, backend: str) -> None:
        check_bad_input(self.OP, self.small_args(), bad, backend)
