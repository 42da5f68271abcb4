"""Backend choice: set_backend / use_backend / get_backend, FASTCONV_BACKEND, auto, and why a backend cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

import fastconv
from fastconv import backends, reference
from fastconv.shapes import layer_cases

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def auto_backend():
    """Each test starts from "auto", whatever FASTCONV_BACKEND chose for this process, which gets it back."""
    before = backends._default_backend
    backends.set_backend("auto")
    yield
    backends.set_backend(before)


def _small_args(op: str) -> tuple:
    return min(layer_cases(op=op), key=lambda c: c.flops()).make_args()


def test_set_backend():
    fastconv.set_backend("reference")
    assert fastconv.get_backend() == "reference"
    fastconv.set_backend("auto")
    assert fastconv.get_backend() == "auto"


def test_use_backend_nests_and_restores():
    fastconv.set_backend("reference")
    with fastconv.use_backend("cpu"):
        assert fastconv.get_backend() == "cpu"
        with fastconv.use_backend("triton"):
            assert fastconv.get_backend() == "triton"
        assert fastconv.get_backend() == "cpu"
    assert fastconv.get_backend() == "reference"


def test_use_backend_restores_on_exception():
    with pytest.raises(KeyError), fastconv.use_backend("cuda"):
        assert fastconv.get_backend() == "cuda"
        raise KeyError("inside")
    assert fastconv.get_backend() == "auto"


def test_use_backend_is_per_thread():
    seen = []
    with fastconv.use_backend("reference"):
        thread = threading.Thread(target=lambda: seen.append(fastconv.get_backend()))
        thread.start()
        thread.join()
    assert seen == ["auto"]


@pytest.mark.parametrize("name", ["gpu", "", "Reference", None])
def test_unknown_name(name):
    with pytest.raises(ValueError, match=r"backend must be one of auto, reference, cpu, triton, cuda; got"):
        fastconv.set_backend(name)
    with pytest.raises(ValueError, match=r"backend must be one of"), fastconv.use_backend(name):
        pass
    assert fastconv.get_backend() == "auto"


def _run_python(code: str, backend: str | None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "FASTCONV_BACKEND"}
    if backend is not None:
        environ["FASTCONV_BACKEND"] = backend
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("variable", "chosen"), [(None, "auto"), (" Reference ", "reference")])
def test_environment_variable(variable, chosen):
    done = _run_python("import fastconv; print(fastconv.get_backend())", variable)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == chosen


def test_environment_variable_unknown():
    done = _run_python("import fastconv", "tpu")
    assert done.returncode != 0
    assert "environment variable FASTCONV_BACKEND: backend must be one of" in done.stderr
    assert "got 'tpu'" in done.stderr


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "Triton needs a CUDA device or TRITON_INTERPRET=1" in backends.why_not("triton", "inverted_residual", CPU)
    with fastconv.use_backend("triton"), pytest.raises(
        fastconv.BackendUnavailable,
        match=r"backend 'triton' cannot run depthwise_conv2d: Triton needs a CUDA device or TRITON_INTERPRET=1",
    ):
        fastconv.depthwise_conv2d(*_small_args("depthwise_conv2d"))


@pytest.mark.parametrize("op", backends.OPS)
def test_cuda_on_cpu_tensors(op):
    with fastconv.use_backend("cuda"), pytest.raises(
        fastconv.BackendUnavailable,
        match=rf"backend 'cuda' cannot run {op}: the cuda backend runs CUDA tensors only; the tensors are on cpu",
    ):
        getattr(fastconv, op)(*_small_args(op))


def test_cpu_backend_without_extension(monkeypatch):
    monkeypatch.setattr(backends, "_load_extension", lambda: (None, "fastconv._C could not be imported (test)"))
    assert backends.why_not("cpu", "pointwise_conv2d", CPU) == "fastconv._C could not be imported (test)"
    with fastconv.use_backend("cpu"), pytest.raises(fastconv.BackendUnavailable, match=r"could not be imported"):
        fastconv.pointwise_conv2d(*_small_args("pointwise_conv2d"))


def test_cpu_backend_needs_cpu_tensors():
    reason = backends.why_not("cpu", "pointwise_conv2d", torch.device("meta"))
    assert reason == "the cpu backend runs CPU tensors only; the tensors are on meta"


@pytest.mark.parametrize("op", backends.OPS)
def test_auto_picks_cpu_when_present(op):
    expected = "cpu" if backends.why_not("cpu", op, CPU) is None else "reference"
    if backends.extension() is not None:
        # A built extension has a CPU kernel for every op.
        assert expected == "cpu", backends.why_not("cpu", op, CPU)
    assert backends.resolve(op, CPU) == expected


@pytest.mark.parametrize("op", backends.OPS)
def test_auto_falls_back_to_reference(op, monkeypatch):
    monkeypatch.setattr(backends, "_load_extension", lambda: (None, "fastconv._C could not be imported (test)"))
    assert backends.resolve(op, CPU) == "reference"
    assert backends.resolve(op, torch.device("meta")) == "reference"


def test_chosen_backend_runs(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(len(args))
        return reference_pointwise(*args)

    reference_pointwise = reference.pointwise_conv2d
    monkeypatch.setattr(reference, "pointwise_conv2d", spy)
    args = _small_args("pointwise_conv2d")
    with fastconv.use_backend("reference"):
        fastconv.pointwise_conv2d(*args)
    assert calls == [len(args)]
    if backends.why_not("cpu", "pointwise_conv2d", CPU) is None:
        with fastconv.use_backend("cpu"):
            fastconv.pointwise_conv2d(*args)
        assert calls == [len(args)], "the cpu backend ran the reference"


def test_backend_status(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    status = backends.backend_status("cpu")
    assert list(status) == ["reference", "cpu", "triton", "cuda"]
    assert status["reference"] is None
    assert status["cpu"] == next((r for r in (backends.why_not("cpu", op, CPU) for op in backends.OPS) if r), None)
    assert "Triton needs a CUDA device or TRITON_INTERPRET=1" in status["triton"]
    assert status["cuda"] == "the cuda backend runs CUDA tensors only; the tensors are on cpu"
