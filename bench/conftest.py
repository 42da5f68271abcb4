"""What every fastconv benchmark shares: options, the table of variants, timing and the recorded metadata.

A benchmark runs one *case* (a layer case of ``fastconv.shapes`` at one batch size, or a whole network) on one
*variant*: a fastconv backend or a PyTorch baseline, all listed in ``VARIANTS``. All variants of a case share
one pytest-benchmark group, so their times sit side by side in one table and ``bench/report.py`` can turn them
into speedups. Options (``pytest bench/ --help``): ``--bench-quick``, ``--bench-device``, ``--bench-dtype``,
``--bench-threads``, ``--bench-baselines``.

On CUDA the timer defaults to ``torch.utils.benchmark.utils.timer.timer``, which synchronises the device at
both ends of every round; every benchmark warms up before it is measured, so Triton compilation, autotuning,
torch.compile, graph capture and cuDNN's algorithm search stay out of the numbers, and small working sets
cycle through several input buffers so that they are not timed from a warm L2 cache. A session fixture
measures the machine's ceilings once (a large copy, a large matmul), and every result records the fraction
of them it reached.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import importlib.util
import inspect
import itertools
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import fastconv
from fastconv import backends, reference
from fastconv.graphs import inference_graph
from fastconv.shapes import LayerCase, layer_cases
from fastconv.testing import randomize_batchnorm_

SYNC_TIMER = "torch.utils.benchmark.utils.timer.timer"
DEFAULT_TIMER = "time.perf_counter"  # pytest-benchmark's default, as its option stores it

# Per device type: default dtype, batch sizes of the layer cases and of the networks (latency first).
DEVICE_DEFAULTS: dict[str, tuple[torch.dtype, tuple[int, ...], tuple[int, ...]]] = {
    "cpu": (torch.float32, (1, 8), (1, 8)),
    "cuda": (torch.float16, (1, 256), (1, 32, 256)),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Seconds of timed rounds per benchmark of a (layer case, network), by (device type, --bench-quick). On CPU
# they are sized so that the full suite takes about ten minutes on an idle 2-core machine (78 layer cases x 2
# batches x 3 variants, plus the networks) and --bench-quick under two; on CUDA, where 0.05 s is thousands of
# calls, so that the suite fits a few minutes of a shared GPU (78 x 2 x 4 variants).
TIME_BUDGET_S = {
    ("cpu", False): (0.9, 4.0),
    ("cpu", True): (0.4, 2.0),
    ("cuda", False): (0.05, 0.5),
    ("cuda", True): (0.03, 0.3),
}
MIN_ROUNDS = 3  # the floor for slow cases (InceptionV3 at batch 8 on CPU: about 1 s a call)
MAX_ROUNDS = 1000
# A round runs enough calls to last this long, so that the per-round device synchronisation of the CUDA
# timer (tens of microseconds) does not swamp kernels that take a few microseconds.
MIN_ROUND_S = {"cpu": 1e-4, "cuda": 1e-3}

# Image size of each network, and the builder arguments that fastconv and torchvision get alike (InceptionV3:
# no auxiliary classifier, which eval mode never runs, and no slow truncated-normal init we overwrite anyway).
NETWORKS: dict[str, tuple[int, dict[str, object]]] = {
    "mobilenet_v2": (224, {}),
    "inception_v3": (299, {"aux_logits": False, "init_weights": False}),
}
SEED = 0


# ----------------------------------------------------------------------------------------------------------
# Variants: the one table of things a case runs on. A new baseline is a new row (and, if it is a new kind,
# a branch in ``op_callable`` / ``network_callable``).


# Baseline families, for --bench-baselines; the defaults per device type. "graph" is fastconv's own CUDA graph
# and torch.compile's reduce-overhead mode, both at batch 1.
# "autotune" (torch.compile's max-autotune mode, minutes of autotuning per network) is off unless asked for.
FAMILIES = ("eager", "compile", "autotune", "ort", "openvino", "graph")
DEFAULT_FAMILIES = {"cpu": ("eager", "compile", "ort", "openvino"), "cuda": ("eager", "compile", "graph")}
# Families whose preparation (compilation, export) takes seconds to minutes per case: under --bench-quick they
# run on the first network at batch 1 only, and under --benchmark-disable not at all unless asked for.
HEAVY_FAMILIES = ("compile", "autotune", "ort", "openvino")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run a case.

    Attributes:
        name: the test id and the report's column, e.g. "fastconv-cpu" or "eager-nchw".
        kind: "fastconv" (fastconv's code, compared against every baseline) or "baseline".
        family: "fastconv" for fastconv backends, else how it runs: "eager", "compile", "autotune"
            (torch.compile's max-autotune mode), "ort", "openvino", "graph" (a CUDA graph). Baselines are
            switched on and off by family (--bench-baselines).
        memory_format: of the input activations; baselines also convert their conv weights to it, as
            ``model.to(memory_format=...)`` does.
        backend: the fastconv backend, for kind "fastconv".
        device_types: where it is benchmarked at all; elsewhere it is not even collected. (Triton runs CPU
            tensors only in its interpreter, a correctness tool whose timings mean nothing.)
        scopes: "op" (layer cases) and/or "network" (whole networks).
        compile_options: torch.compile keyword arguments; a variant that has them is torch.compile'd.
        freezing: compile with ``torch._inductor.config.freezing`` (weights become constants, folded ahead).
        max_batch: the largest batch it runs at (CUDA graphs: latency at batch 1).
        quick: whether it runs under --bench-quick (where one compiled baseline per network is enough).
    """

    name: str
    kind: str
    memory_format: torch.memory_format
    backend: str | None = None
    device_types: tuple[str, ...] = ("cpu", "cuda")
    family: str = "fastconv"
    scopes: tuple[str, ...] = ("op", "network")
    compile_options: tuple[tuple[str, object], ...] = ()
    freezing: bool = False
    max_batch: int | None = None
    quick: bool = True

    def why_not(self, ops: tuple[str, ...], device: torch.device) -> str | None:
        """None when this variant can run all of ``ops`` on ``device``, else the reason it cannot."""
        if self.kind != "fastconv":
            return None
        reasons = (backends.why_not(self.backend, op, device) for op in ops)
        return next((r for r in reasons if r is not None), None)

    def info(self) -> dict[str, str]:
        memory_format = "channels_last" if self.memory_format == torch.channels_last else "nchw"
        return {"variant": self.name, "kind": self.kind, "family": self.family,
                "backend": self.backend or self.family, "memory_format": memory_format}


_CL, _NCHW = torch.channels_last, torch.contiguous_format
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fastconv-cpu", "fastconv", _CL, "cpu", ("cpu",)),
    Variant("fastconv-triton", "fastconv", _CL, "triton", ("cuda",)),
    Variant("fastconv-cuda", "fastconv", _CL, "cuda", ("cuda",)),
    Variant("fastconv-graph", "fastconv", _CL, "auto", ("cuda",), "graph", ("network",), max_batch=1),
    Variant("eager-nchw", "baseline", _NCHW, family="eager"),
    Variant("eager-channels_last", "baseline", _CL, family="eager"),
    # torch.compile of the channels_last eager model (Inductor chooses its own layouts anyway).
    # Under --bench-quick the networks get the freezing variant only: each compilation of a network costs
    # about a minute on 2 CPU cores.
    Variant("compile", "baseline", _CL, family="compile", compile_options=(("dynamic", False),), quick=False),
    # Freezing folds weights as constants: it changes nothing where they are arguments (the layer cases).
    Variant("compile-freezing", "baseline", _CL, family="compile", scopes=("network",),
            compile_options=(("dynamic", False),), freezing=True),
    Variant("compile-max-autotune", "baseline", _CL, device_types=("cuda",), family="autotune",
            compile_options=(("dynamic", False), ("mode", "max-autotune")), freezing=True),
    Variant("compile-reduce-overhead", "baseline", _CL, device_types=("cuda",), family="graph",
            scopes=("network",), compile_options=(("dynamic", False), ("mode", "reduce-overhead")), max_batch=1),
    # Exported from torchvision's model, fp32 on CPU, with as many threads as torch uses.
    Variant("onnxruntime", "baseline", _NCHW, device_types=("cpu",), family="ort", scopes=("network",)),
    Variant("openvino", "baseline", _NCHW, device_types=("cpu",), family="openvino", scopes=("network",)),
)}


# ----------------------------------------------------------------------------------------------------------
# Options and settings.


@dataclasses.dataclass(frozen=True)
class Settings:
    """What this run measures, from the command line."""

    device: torch.device
    dtype: torch.dtype
    batches: tuple[int, ...]  # of the layer cases
    all_network_batches: tuple[int, ...]
    quick: bool
    families: tuple[str, ...]  # baseline families switched on
    disabled: bool  # --benchmark-disable: every benchmark runs once, untimed

    @property
    def network_batches(self) -> tuple[int, ...]:
        return self.all_network_batches[:1] if self.quick else self.all_network_batches

    @property
    def layer_batches(self) -> tuple[int, ...]:
        """Batch sizes of the layer cases: the first (batch 1, latency) only under --bench-quick."""
        return self.batches[:1] if self.quick else self.batches

    def time_budget_s(self, what: str) -> float:
        """Seconds of timed rounds for one benchmark of ``what`` ("op" or "network")."""
        op_s, network_s = TIME_BUDGET_S[self.device.type, self.quick]
        return op_s if what == "op" else network_s


SETTINGS = pytest.StashKey[Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastconv benchmarks")
    group.addoption("--bench-quick", action="store_true",
                    help="a first look: one layer case per op (the median by FLOPs) and the networks at "
                    "batch 1 only, with shorter timings (under two minutes on a 2-core CPU)")
    group.addoption("--bench-device", choices=("cpu", "cuda"),
                    help="device to benchmark on (default: cuda when available, else cpu)")
    group.addoption("--bench-dtype", choices=tuple(DTYPES),
                    help="dtype of every tensor (default: float16 on cuda, float32 on cpu)")
    group.addoption("--bench-threads", type=int,
                    help="torch CPU threads (torch.set_num_threads; default: torch's choice). On a shared machine "
                    "1 keeps the comparison fair: multithreaded kernels suffer most from other processes")
    group.addoption("--bench-baselines",
                    help=f"comma-separated baseline families among {','.join(FAMILIES)} (default: "
                    f"{','.join(DEFAULT_FAMILIES['cpu'])} on cpu, {','.join(DEFAULT_FAMILIES['cuda'])} on cuda; "
                    f"without ort,openvino under --bench-quick; eager only under --benchmark-disable)")


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads the timer option
def pytest_configure(config: pytest.Config) -> None:
    device_type = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: torch sees no CUDA device")
    default_dtype, batches, network_batches = DEVICE_DEFAULTS[device_type]
    disabled = bool(config.getoption("benchmark_disable"))
    families_option = config.getoption("--bench-baselines")
    if families_option is None:
        # The smoke test must stay short: compiling and exporting both networks alone takes minutes.
        families = ("eager",) if disabled else DEFAULT_FAMILIES[device_type]
        if config.getoption("--bench-quick"):
            # Exporting costs as much as compiling: a first look keeps torch.compile only.
            families = tuple(f for f in families if f not in ("ort", "openvino"))
    else:
        families = tuple(f.strip() for f in families_option.split(",") if f.strip())
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise pytest.UsageError(f"--bench-baselines: unknown families {unknown}; expected some of {FAMILIES}")
    dtype_name = config.getoption("--bench-dtype")
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads must be at least 1; got {threads}")
        torch.set_num_threads(threads)
    config.stash[SETTINGS] = Settings(
        device=torch.device(device_type),
        dtype=DTYPES[dtype_name] if dtype_name else default_dtype,
        batches=batches,
        all_network_batches=network_batches,
        quick=config.getoption("--bench-quick"),
        families=families,
        disabled=disabled,
    )
    if device_type == "cuda":
        # pytest-benchmark's default timer would time kernel launches, not kernels; an explicit
        # --benchmark-timer is kept.
        if config.getoption("benchmark_timer") == DEFAULT_TIMER:
            config.option.benchmark_timer = SYNC_TIMER
        torch.backends.cudnn.benchmark = True  # the eager baselines get cuDNN's fastest algorithms


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS]


# ----------------------------------------------------------------------------------------------------------
# Parametrization: test functions that take (case, batch, variant) get every layer case of their module's
# OP; those that take (network, batch, variant) get both networks. Variants that cannot run are skipped
# with the reason.


def _representative(cases: list[LayerCase]) -> LayerCase:
    """The case of median FLOPs: neither the tiniest nor the largest layer."""
    return sorted(cases, key=lambda c: c.flops())[len(cases) // 2]


def _params(entries: dict[str, tuple[str, ...]], batches: tuple[int, ...], group: str, scope: str,
            settings: Settings, heavy: Callable[[str, int], bool]) -> list[object]:
    """pytest params (case id, batch, variant name) from entries {case id: the ops it runs}.

    ``heavy(case id, batch)`` says whether the compiled and exported baselines run on that case. Plain strings
    and ints keep the params readable in the JSON; the fixtures look the objects up.
    """
    params = []
    # Variants vary fastest, so that consecutive tests share one cached set of arguments.
    for case_id, ops in entries.items():
        for batch in batches:
            for variant in VARIANTS.values():
                if (settings.device.type not in variant.device_types or scope not in variant.scopes
                        or (variant.kind == "baseline" and variant.family not in settings.families)
                        or (variant.family == "graph" and "graph" not in settings.families)
                        or (variant.max_batch is not None and batch > variant.max_batch)
                        or (settings.quick and not variant.quick)
                        or (variant.family in HEAVY_FAMILIES and not heavy(case_id, batch))):
                    continue
                marks = [pytest.mark.benchmark(group=f"{group} {case_id} b{batch}")]
                reason = variant.why_not(ops, settings.device)
                if reason is not None:
                    marks.append(pytest.mark.skip(reason=f"{variant.name}: {reason}"))
                params.append(pytest.param(case_id, batch, variant.name, marks=marks,
                                           id=f"{case_id}-b{batch}-{variant.name}"))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS]
    names = set(metafunc.fixturenames)
    if {"case", "batch", "variant"} <= names:
        op = metafunc.module.OP
        cases = layer_cases(op=op)
        representative = _representative(cases).id()
        if settings.quick:
            cases = [_representative(cases)]
        entries = {c.id(): (op,) for c in cases}

        # Compiling each of 78 layer shapes at each batch would take most of an hour on CPU: torch.compile
        # runs on the op's median case only (and under --bench-quick, on the networks only).
        def heavy(case_id: str, batch: int) -> bool:
            return case_id == representative and not settings.quick

        metafunc.parametrize(("case", "batch", "variant"),
                             _params(entries, settings.layer_batches, op, "op", settings, heavy))
    elif {"network", "batch", "variant"} <= names:
        # Which ops a network runs (and so whether a backend can run it) shows only when it runs: see _run.
        entries = {n: () for n in NETWORKS}
        first = next(iter(NETWORKS))

        def heavy(network: str, batch: int) -> bool:
            return not settings.quick or (network == first and batch == settings.network_batches[0])

        metafunc.parametrize(("network", "batch", "variant"),
                             _params(entries, settings.network_batches, "network", "network", settings, heavy))


# ----------------------------------------------------------------------------------------------------------
# Recorded metadata.


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def environment_info(device: torch.device) -> dict[str, object]:
    """Device name, versions, threads and commit: the same for every result of a run."""
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "fastconv": fastconv.__version__,
        "fastconv_C": backends.extension_error() or "loaded",
        "commit": _git_commit(),
    }


def _load_average() -> float | None:
    """The 1-minute load average, None where the system has none: on a shared machine it says how far to
    trust the timings (another process's threads compete with ours)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    settings = config.stash[SETTINGS]
    machine_info["fastconv"] = dict(environment_info(settings.device))
    ceiling = config.stash.get(CEILING, None)
    if ceiling is not None:
        machine_info["fastconv"].update(ceiling.info())


# ----------------------------------------------------------------------------------------------------------
# The machine's ceilings: what a kernel could reach at best, measured once per run.

# (bytes of the copy, side of the square matmul) per device type: far beyond every cache, and long enough
# (tens of milliseconds) to time well.
CEILING_SIZES = {"cpu": (256 * 2**20, 2048), "cuda": (2 * 2**30, 8192)}
CEILING_REPEATS = 5


@dataclasses.dataclass(frozen=True)
class Ceiling:
    """Best bandwidth of a large device copy and best FLOP rate of a large matmul, in this run's threads.

    Attributes:
        gb_per_s: bytes read plus bytes written per second (1e9) of a copy of CEILING_SIZES bytes.
        gflops_per_s: FLOPs (2 x multiply-adds) per second (1e9) of a square matmul.
        matmul_dtype: float32 on CPU, the run's dtype on CUDA (tensor cores).
    """

    gb_per_s: float
    gflops_per_s: float
    matmul_dtype: str

    def info(self) -> dict[str, object]:
        return {"ceiling_gb_per_s": self.gb_per_s, "ceiling_gflops_per_s": self.gflops_per_s,
                "ceiling_matmul_dtype": self.matmul_dtype}


CEILING = pytest.StashKey[Ceiling]()


def _best_seconds(fn: Callable[[], object], device: torch.device, repeats: int = CEILING_REPEATS) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_ceiling(device: torch.device, dtype: torch.dtype) -> Ceiling:
    """The machine's copy bandwidth and matmul rate on ``device`` (the best of a few calls each)."""
    copy_bytes, n = CEILING_SIZES[device.type]
    src = torch.ones(copy_bytes, dtype=torch.uint8, device=device)  # ones, not empty: every page is mapped
    dst = torch.zeros_like(src)
    bandwidth = 2 * copy_bytes / _best_seconds(functools.partial(dst.copy_, src), device) / 1e9
    del src, dst  # [copy_bytes] each: freed before the matmul allocates
    matmul_dtype = torch.float32 if device.type == "cpu" else dtype
    a, b = (torch.randn(n, n, device=device, dtype=matmul_dtype) for _ in range(2))
    rate = 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), device) / 1e9
    return Ceiling(bandwidth, rate, str(matmul_dtype).removeprefix("torch."))


@pytest.fixture(scope="session")
def ceiling(pytestconfig: pytest.Config, settings: Settings) -> Ceiling:
    if CEILING not in pytestconfig.stash:
        pytestconfig.stash[CEILING] = measure_ceiling(settings.device, settings.dtype)
    return pytestconfig.stash[CEILING]


# ----------------------------------------------------------------------------------------------------------
# Timing.


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rounds(seconds_per_call: float, budget_s: float, min_round_s: float) -> tuple[int, int]:
    """(rounds, iterations per round) that fill ``budget_s`` with rounds of at least ``min_round_s``."""
    seconds_per_call = max(seconds_per_call, 1e-9)
    iterations = max(1, math.ceil(min_round_s / seconds_per_call))
    rounds = int(budget_s / (seconds_per_call * iterations))
    return min(max(rounds, MIN_ROUNDS), MAX_ROUNDS), iterations


# On CUDA a working set under this many L2 caches is cycled through several copies, so that consecutive calls
# do not find their inputs in L2 (a layer of a network reads what the previous layer wrote, not what it read
# itself one call ago). On CPU the suite times warm caches, as a layer-by-layer loop would have them.
ROTATE_L2_MULTIPLE = 3
MAX_BUFFERS = 16


def buffer_count(device: torch.device, working_set_bytes: int) -> int:
    """How many copies of the inputs a benchmark cycles through (1: no rotation)."""
    if device.type != "cuda":
        return 1
    l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
    if working_set_bytes >= ROTATE_L2_MULTIPLE * l2_bytes:
        return 1
    return min(MAX_BUFFERS, math.ceil(ROTATE_L2_MULTIPLE * l2_bytes / max(working_set_bytes, 1)))


def _rotating(fns: list[Callable[[], object]]) -> Callable[[], object]:
    """One call of the next of ``fns`` per call, round robin."""
    if len(fns) == 1:
        return fns[0]
    calls = itertools.cycle(fns)
    return lambda: next(calls)()


def _measure(benchmark, settings: Settings, fn: Callable[[], object], budget_s: float) -> None:
    """Warms ``fn`` up, then times it in as many rounds as ``budget_s`` allows.

    Under --benchmark-disable ``fn`` runs once, untimed: a smoke test.
    """
    if benchmark.disabled:
        benchmark.pedantic(fn)
        return
    # The first call compiles (Triton), autotunes, or picks algorithms (cuDNN, oneDNN); the second estimates
    # the time of one call to size the rounds.
    fn()
    _synchronize(settings.device)
    start = time.perf_counter()
    fn()
    _synchronize(settings.device)
    rounds, iterations = _rounds(time.perf_counter() - start, budget_s, MIN_ROUND_S[settings.device.type])
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations)


def _record_rates(benchmark, flops: int, min_bytes: int, ceiling: Ceiling) -> None:
    info = benchmark.extra_info
    info["flops"], info["min_bytes"] = flops, min_bytes
    info.update(ceiling.info())
    if benchmark.stats:
        median = benchmark.stats.stats.median
        info["gflops_per_s"] = flops / median / 1e9
        info["tflops_per_s"] = info["gflops_per_s"] / 1e3
        info["gb_per_s"] = min_bytes / median / 1e9
        info["bandwidth_fraction"] = info["gb_per_s"] / ceiling.gb_per_s
        info["compute_fraction"] = info["gflops_per_s"] / ceiling.gflops_per_s
        RECORDS.append({"extra_info": dict(info),
                        "stats": {stat: getattr(benchmark.stats.stats, stat) for stat in ("median", "min", "mean")}})


# Every timed result of this session, in the shape of pytest-benchmark's JSON, for the terminal summary.
RECORDS: list[dict[str, object]] = []


def run_benchmark(benchmark, settings: Settings, ceiling: Ceiling, variant: Variant,
         prepare: Callable[[], Callable[[], object]], budget_s: float, info: dict[str, object], flops: int,
         min_bytes: int) -> None:
    """Prepares (compiles, exports, captures) and times one variant; ``prepare`` gives the function to time."""
    benchmark.extra_info.update(environment_info(settings.device))
    benchmark.extra_info.update(variant.info())
    benchmark.extra_info.update(info, dtype=str(settings.dtype).removeprefix("torch."), load_average=_load_average())
    backend = fastconv.use_backend(variant.backend) if variant.backend else contextlib.nullcontext()
    with backend, torch.no_grad():
        try:
            fn = prepare()
            _measure(benchmark, settings, fn, budget_s)
        except backends.BackendUnavailable as e:  # raised by the first call, before anything is timed
            pytest.skip(f"{variant.name}: {e}")
    _record_rates(benchmark, flops, min_bytes, ceiling)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Geometric-mean speedups of this run, per op and network, after pytest-benchmark's tables."""
    if not RECORDS:
        return
    report = _report_module()
    results = report.from_benchmarks(RECORDS, environment=RECORDS[0]["extra_info"], datetime="this run")
    lines = report.summary(results)
    if lines:
        terminalreporter.write_sep("=", "fastconv speedups (median times; full report: bench/report.py)")
        for line in lines[2:]:
            terminalreporter.write_line(line)


@functools.cache
def _report_module():
    spec = importlib.util.spec_from_file_location("fastconv_bench_report", Path(__file__).with_name("report.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# Compiled and exported baselines.


def compiled(variant: Variant, fn: Callable[..., object], example: tuple) -> Callable[..., object]:
    """``torch.compile(fn)`` with the variant's options, compiled (and warmed up) on ``example``."""
    # A fresh Dynamo cache: two variants compiling the same module must not share compiled code (the cache
    # does not tell Inductor's freezing apart).
    torch._dynamo.reset()
    out = torch.compile(fn, **dict(variant.compile_options))
    with torch._inductor.config.patch(freezing=variant.freezing):
        out(*example)
    return out


def exported(variant: Variant, model: nn.Module, x: torch.Tensor, workdir: Path) -> Callable[[torch.Tensor], object]:
    """``model`` exported to ONNX Runtime or OpenVINO for inputs shaped like ``x``: a function of the input."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        pytest.skip(f"{variant.name}: benchmarked on CPU in float32 only; the run is {x.dtype} on {x.device}")
    threads = torch.get_num_threads()
    if variant.family == "ort":
        ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[bench]')")
        path = workdir / f"{variant.name}-{tuple(x.shape)}.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda t: session.run(None, {name: t.numpy()})
    ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[bench]')")
    compiled_model = ov.Core().compile_model(ov.convert_model(model, example_input=x), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        # OpenVINO would run bf16 on CPUs that have it: the comparison is fp32 against fp32.
        "INFERENCE_PRECISION_HINT": "f32",
    })
    request = compiled_model.create_infer_request()
    return lambda t: request.infer({0: t.numpy()}, share_inputs=True)


# ----------------------------------------------------------------------------------------------------------
# Layer cases.


def _to_format(t: object, memory_format: torch.memory_format) -> object:
    return t.contiguous(memory_format=memory_format) if isinstance(t, torch.Tensor) and t.dim() == 4 else t


@functools.cache
def _layer_cases_by_id() -> dict[str, LayerCase]:
    return {c.id(): c for c in layer_cases()}


@functools.cache
def _weight_positions(op: str) -> tuple[int, ...]:
    """Positions of the conv weights among the op's arguments (expand_weight, weight1, weight_a, ...)."""
    names = inspect.signature(fastconv.ops.OPS[op]).parameters
    return tuple(i for i, name in enumerate(names) if "weight" in name)


@functools.lru_cache(maxsize=1)  # the variants of one case run back to back
def _case_args(case: LayerCase, batch: int, dtype: torch.dtype, device: torch.device) -> tuple:
    return case.make_args(batch, dtype, device)


@functools.cache
def _parameter_positions(op: str) -> tuple[int, ...]:
    """Positions of the conv weights and biases among the op's arguments."""
    names = inspect.signature(fastconv.ops.OPS[op]).parameters
    return tuple(i for i, name in enumerate(names) if "weight" in name or "bias" in name)


def op_callable(variant: Variant, case: LayerCase, args: tuple) -> Callable[[], object]:
    """A no-argument call of ``case.op`` on ``args`` (NCHW, contiguous) as ``variant`` runs it."""
    if variant.kind == "fastconv":
        # Weights stay contiguous, as the kernels want them; only activations (x, residual) change format.
        weights = _weight_positions(case.op)
        args = tuple(a if i in weights else _to_format(a, variant.memory_format) for i, a in enumerate(args))
        if variant.backend == "cpu":
            # Pinned as fastconv.nn modules pin their folded weights (packed once, not on every call), so that
            # the layer cases time the kernels as the networks run them. Eager's F.conv2d reorders its weights
            # on every call; compile-freezing prepacks them.
            backends.pin_cpu_weights([args[i] for i in _parameter_positions(case.op)])
        return functools.partial(fastconv.ops.OPS[case.op], *args)
    # PyTorch: the unfused ATen path of the op, with every 4-D tensor in the variant's format.
    args = tuple(_to_format(a, variant.memory_format) for a in args)
    fn = getattr(reference, case.op)
    if variant.compile_options:
        fn = compiled(variant, fn, args)
    return functools.partial(fn, *args)


def _copies(args: tuple, count: int) -> list[tuple]:
    """``args`` and ``count - 1`` copies of its tensors (same memory formats)."""
    return [args, *(tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
                    for _ in range(count - 1))]


@pytest.fixture
def bench_op(benchmark, settings: Settings, ceiling: Ceiling) -> Callable[[str, int, str], None]:
    """Runs one layer case (by id) at one batch size on one variant (by name) and records what it measured."""

    def run(case_id: str, batch: int, variant_name: str) -> None:
        case, variant = _layer_cases_by_id()[case_id], VARIANTS[variant_name]
        args = _case_args(case, batch, settings.dtype, settings.device)
        min_bytes = case.min_bytes(batch, settings.dtype)
        buffers = buffer_count(settings.device, min_bytes)
        info = {"op": case.op, "case": case.id(), "network": case.network, "layer": case.name,
                "batch": batch, "count": case.count, "input_buffers": buffers}

        def prepare() -> Callable[[], object]:
            return _rotating([op_callable(variant, case, a) for a in _copies(args, buffers)])

        run_benchmark(benchmark, settings, ceiling, variant, prepare, settings.time_budget_s("op"), info,
             case.flops(batch), min_bytes)

    return run


# ----------------------------------------------------------------------------------------------------------
# Whole networks.


@dataclasses.dataclass
class Networks:
    """One network in fastconv and in torchvision (NCHW and channels_last), with the same weights.

    Attributes:
        fast: the fastconv model.
        eager: the torchvision model by memory format of its weights.
        image_size: H and W of its input.
        flops_per_image: FLOPs of one forward pass at batch 1 (2 x multiply-adds of convs and classifier).
        weight_bytes: bytes of the BatchNorm-folded weights and biases.
        out_features: logits per image.
    """

    fast: nn.Module
    eager: dict[torch.memory_format, nn.Module]
    image_size: int
    flops_per_image: int
    weight_bytes: int
    out_features: int


def _cost(network: str, dtype: torch.dtype) -> tuple[int, int, int]:
    """(FLOPs of one image, bytes of the folded weights, logits per image), counted on the meta device."""
    image_size, kwargs = NETWORKS[network]
    with torch.device("meta"):
        model = getattr(torchvision.models, network)(**kwargs).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            logits = model(torch.empty(1, 3, image_size, image_size))
    # A folded conv keeps its weight and gains a bias per output channel; the classifier keeps its own.
    elements = sum(m.weight.numel() + m.weight.shape[0] for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)))
    return counter.get_total_flops(), elements * torch.empty((), dtype=dtype).element_size(), logits.shape[1]


@functools.lru_cache(maxsize=1)  # the variants of one network run back to back
def _networks(network: str, dtype: torch.dtype, device: torch.device) -> Networks:
    image_size, kwargs = NETWORKS[network]
    torch.manual_seed(SEED)
    fast = getattr(fastconv.models, network)(**kwargs)
    randomize_batchnorm_(fast, torch.Generator().manual_seed(SEED))
    eager = getattr(torchvision.models, network)(**kwargs)
    eager.load_state_dict(fast.state_dict())
    eager = eager.to(device=device, dtype=dtype).eval()
    return Networks(
        fast.to(device=device, dtype=dtype).eval(),
        {torch.contiguous_format: eager,
         torch.channels_last: copy.deepcopy(eager).to(memory_format=torch.channels_last)},
        image_size,
        *_cost(network, dtype),
    )


def network_forward(variant: Variant, networks: Networks, x: torch.Tensor,
                    workdir: Path) -> Callable[[torch.Tensor], object]:
    """The network's forward pass as ``variant`` runs it, prepared (compiled, exported, captured) for inputs
    shaped like ``x``, which it takes in the variant's memory format."""
    if variant.kind == "fastconv":
        if variant.family == "graph":
            return inference_graph(networks.fast, x)
        return networks.fast
    model = networks.eager[variant.memory_format]
    if variant.family == "eager":
        return model
    if variant.compile_options:
        return compiled(variant, copy.deepcopy(model), (x,))
    return exported(variant, networks.eager[torch.contiguous_format], x, workdir)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exported")


@pytest.fixture
def bench_network(benchmark, settings: Settings, ceiling: Ceiling,
                  export_dir: Path) -> Callable[[str, int, str], None]:
    """Runs one network at one batch size on one variant (by name) and records what it measured."""

    def run(network: str, batch: int, variant_name: str) -> None:
        variant = VARIANTS[variant_name]
        nets = _networks(network, settings.dtype, settings.device)
        generator = torch.Generator().manual_seed(SEED)
        x = torch.randn(batch, 3, nets.image_size, nets.image_size, generator=generator)
        x = x.to(device=settings.device, dtype=settings.dtype, memory_format=variant.memory_format)
        # Input, folded weights and logits, each moved once.
        min_bytes = nets.weight_bytes + (x.numel() + batch * nets.out_features) * x.element_size()
        # The inputs rotate; the weights, which a serving loop reads again every call, stay.
        buffers = buffer_count(settings.device, x.numel() * x.element_size())
        info = {"network": network, "case": network, "batch": batch, "input_buffers": buffers}

        def prepare() -> Callable[[], object]:
            forward = network_forward(variant, nets, x, export_dir)
            return _rotating([functools.partial(forward, a[0]) for a in _copies((x,), buffers)])

        run_benchmark(benchmark, settings, ceiling, variant, prepare, settings.time_budget_s("network"), info,
             nets.flops_per_image * batch, min_bytes)

    return run
