"""Backend choice: set_backend / use_backend / get_backend, FASTCONV_BACKEND, auto, and why a backend cannot run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

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


# ----------------------------------------------------------------------------------------------------------
# `auto` on CUDA follows the committed GPU benchmark results.

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
GPU_BACKENDS = ("triton", "cuda")


def gpu_speed_ratios(paths: list[Path]) -> dict[str, float]:
    """Per op: the geometric mean over every (layer case, batch, dtype) timed on both GPU backends in one run of
    the cuda backend's median time over the triton backend's (below 1: cuda is faster). Ops that no committed
    run timed on both backends are absent."""
    logs: dict[str, list[float]] = {}
    for path in paths:
        medians: dict[tuple, dict[str, float]] = {}
        for bench in json.loads(path.read_text()).get("benchmarks", []):
            info = bench.get("extra_info", {})
            if info.get("device") != "cuda" or info.get("backend") not in GPU_BACKENDS or "op" not in info:
                continue
            key = (info["op"], info.get("case"), info.get("batch"), info.get("dtype"))
            medians.setdefault(key, {})[info["backend"]] = bench["stats"]["median"]
        for (op, *_), times in medians.items():
            if len(times) == len(GPU_BACKENDS):
                logs.setdefault(op, []).append(math.log(times["cuda"] / times["triton"]))
    return {op: math.exp(sum(v) / len(v)) for op, v in logs.items()}


def test_gpu_speed_ratios(tmp_path):
    def bench(backend, median, case="c", device="cuda"):
        return {"extra_info": {"device": device, "backend": backend, "op": "pointwise_conv2d", "case": case,
                               "batch": 1, "dtype": "float16"}, "stats": {"median": median}}

    run = {"benchmarks": [bench("triton", 2.0), bench("cuda", 1.0), bench("triton", 1.0, "d"), bench("cuda", 4.0, "d"),
                          bench("cuda", 9.0, "only-cuda"), bench("triton", 1.0, device="cpu")]}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert gpu_speed_ratios([tmp_path / "run.json"]) == pytest.approx({"pointwise_conv2d": math.sqrt(0.5 * 4.0)})


@pytest.mark.parametrize("op", backends.OPS)
def test_auto_order_on_cuda_follows_committed_results(op):
    """The faster GPU backend by the committed results comes first; triton while no result compares them."""
    ratio = gpu_speed_ratios(sorted(RESULTS.glob("*.json"))).get(op)
    order = [b for b in backends.AUTO_ORDER["cuda"][op] if b in GPU_BACKENDS]
    expected = ["cuda", "triton"] if ratio is not None and ratio < 1 else ["triton", "cuda"]
    assert order == expected, (f"{op}: committed results give cuda/triton time ratio {ratio}; "
                               f"AUTO_ORDER['cuda'] should try {expected} first")
    assert backends.AUTO_ORDER["cuda"][op][-1] == "reference"
