"""Which backends exist on this machine, which one runs an op, and why another cannot.

Backends:
    reference  pure PyTorch, any device: the oracle.
    cpu        C++ kernels of ``fastconv._C`` for CPU tensors.
    triton     Triton kernels of ``fastconv.kernels`` for CUDA tensors (CPU tensors under TRITON_INTERPRET=1).
    cuda       CUDA kernels of ``fastconv._C`` for CUDA tensors.
    auto       per op and device, the fastest implementation present (order from measurement).

The choice is process-wide (``set_backend``), scoped (``use_backend``) or from the environment variable
``FASTCONV_BACKEND`` read at import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from collections.abc import Iterator

import torch

__all__ = [
    "BACKENDS",
    "OPS",
    "BackendUnavailable",
    "backend_status",
    "extension",
    "extension_error",
    "get_backend",
    "has_kernel",
    "resolve",
    "set_backend",
    "use_backend",
]

BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")
OPS = (
    "depthwise_conv2d",
    "pointwise_conv2d",
    "inverted_residual",
    "asymmetric_conv_pair",
    "asymmetric_conv_parallel",
)

# What `auto` tries, per device type and op, first to last; the first that can run wins. The order comes
# from the committed benchmark results (bench/results/): on CUDA the faster of triton and cuda by the GPU results
# comes first, triton while none compares them (tests/test_backends.py holds this); `reference` closes the list.
AUTO_ORDER: dict[str, dict[str, tuple[str, ...]]] = {
    "cpu": {op: ("cpu", "reference") for op in OPS},
    "cuda": {op: ("triton", "cuda", "reference") for op in OPS},
}


class BackendUnavailable(RuntimeError):
    """Raised when the requested backend cannot run an op on the given tensors."""


_state = threading.local()
_default_backend = "auto"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Sets the process-wide backend ("auto", "reference", "cpu", "triton" or "cuda")."""
    global _default_backend
    _default_backend = _check_name(name)


def get_backend() -> str:
    """The backend in force in this thread: the innermost ``use_backend``, else the process-wide one."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _default_backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Runs the enclosed fastconv ops on backend ``name``, then restores the previous choice."""
    _check_name(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


@functools.cache
def _load_extension() -> tuple[object | None, str | None]:
    try:
        return importlib.import_module("fastconv._C"), None
    except ImportError as e:
        return None, (
            f"fastconv._C could not be imported ({e}); reinstall with "
            "`pip install --no-build-isolation -e .` to build the C++ kernels"
        )


def extension() -> object | None:
    """The compiled extension module ``fastconv._C``, or None when it is missing."""
    return _load_extension()[0]


def extension_error() -> str | None:
    """Why ``fastconv._C`` is missing, or None when it loaded."""
    return _load_extension()[1]


# Kernels found registered: the dispatcher query costs about as much as a small kernel, and fastconv._C never
# unregisters its kernels.
_found_kernels: set[tuple[str, str]] = set()


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``fastconv_C::<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    if (op, dispatch_key) in _found_kernels:
        return True
    found = torch._C._dispatch_has_kernel_for_dispatch_key(f"fastconv_C::{op}", dispatch_key)
    if found:
        _found_kernels.add((op, dispatch_key))
    return found


def pin_cpu_weights(tensors: Iterator[torch.Tensor] | list[torch.Tensor]) -> None:
    """Declares CPU weight tensors constant for the cpu backend's kernels (``fastconv_C::pin_weights``), which then
    pack each into their GEMM layout once instead of on every call; nothing without the extension. Other devices'
    tensors are skipped. A pinned tensor must not change through ``.data`` (in-place ops are seen)."""
    cpu = [t for t in tensors if t is not None and t.device.type == "cpu"]
    if cpu and extension() is not None and hasattr(torch.ops.fastconv_C, "pin_weights"):
        torch.ops.fastconv_C.pin_weights(cpu)


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_ops() -> tuple[dict[str, object], str | None]:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return {}, f"Triton is not installed ({e})"
    try:
        kernels = importlib.import_module("fastconv.kernels")
    except ImportError as e:
        return {}, f"fastconv.kernels could not be imported ({e})"
    return dict(getattr(kernels, "LAUNCHERS", {})), None


def triton_launcher(op: str) -> object:
    """The Triton launcher of ``op`` (only valid after ``resolve`` chose "triton")."""
    return _triton_ops()[0][op]


def why_not(backend: str, op: str, device: torch.device) -> str | None:
    """None when ``backend`` can run ``op`` on tensors of ``device``; otherwise the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the cpu backend runs CPU tensors only; the tensors are on {device}"
        if extension() is None:
            return extension_error()
        if not has_kernel(op, "CPU"):
            return f"fastconv._C has no CPU kernel for {op}"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs CUDA tensors only; the tensors are on {device}"
        if extension() is None:
            return extension_error()
        if not has_kernel(op, "CUDA"):
            return (
                "fastconv._C was built without CUDA kernels "
                f"(no CUDA kernel for {op}); rebuild with nvcc present or FASTCONV_BUILD_CUDA=1"
            )
        return None
    if backend == "triton":
        if device.type != "cuda" and not (device.type == "cpu" and _triton_interpret()):
            return "Triton needs a CUDA device or TRITON_INTERPRET=1 (for CPU tensors)"
        launchers, error = _triton_ops()
        if error is not None:
            return error
        if op not in launchers:
            return f"fastconv.kernels has no Triton kernel for {op}"
        return None
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def resolve(op: str, device: torch.device) -> str:
    """The concrete backend that runs ``op`` on ``device`` under the current choice.

    Raises:
        BackendUnavailable: the chosen backend cannot run here; the message says why.
    """
    name = get_backend()
    if name != "auto":
        reason = why_not(name, op, device)
        if reason is not None:
            raise BackendUnavailable(f"fastconv backend {name!r} cannot run {op}: {reason}")
        return name
    for candidate in AUTO_ORDER.get(device.type, {}).get(op, ("reference",)):
        if why_not(candidate, op, device) is None:
            return candidate
    return "reference"


def backend_status(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """For each concrete backend: None when it can run every op on ``device``, else the first reason."""
    device = torch.device(device)
    status: dict[str, str | None] = {}
    for backend in BACKENDS[1:]:
        reasons = [why_not(backend, op, device) for op in OPS]
        status[backend] = next((r for r in reasons if r is not None), None)
    return status


_env_backend = os.environ.get("FASTCONV_BACKEND")
if _env_backend:
    try:
        set_backend(_env_backend.strip().lower())
    except ValueError as e:
        raise ValueError(f"environment variable FASTCONV_BACKEND: {e}") from None
