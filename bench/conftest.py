"""What every fastconv benchmark shares: options, the table of variants, timing and the recorded metadata.

A benchmark runs one *case* (a layer case of ``fastconv.shapes`` at one batch size, or a whole network) on one
*variant*: a fastconv backend or a PyTorch baseline, all listed in ``VARIANTS``. All variants of a case share
one pytest-benchmark group, so their times sit side by side in one table and ``bench/report.py`` can turn them
into speedups. Options (``pytest bench/ --help``): ``--bench-quick``, ``--bench-device``, ``--bench-dtype``.

On CUDA the timer defaults to ``torch.utils.benchmark.utils.timer.timer``, which synchronises the device at
both ends of every round; every benchmark warms up before it is measured, so Triton compilation, autotuning
and cuDNN's algorithm search stay out of the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import inspect
import math
import os
import platform
import subprocess
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
from fastconv.shapes import LayerCase, layer_cases

SYNC_TIMER = "torch.utils.benchmark.utils.timer.timer"
DEFAULT_TIMER = "time.perf_counter"  # pytest-benchmark's default, as its option stores it

# Per device type: default dtype and the two batch sizes (latency, throughput).
DEVICE_DEFAULTS: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {
    "cpu": (torch.float32, (1, 8)),
    "cuda": (torch.float16, (1, 256)),
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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run a case.

    Attributes:
        name: the test id and the report's column, e.g. "fastconv-cpu" or "eager-nchw".
        kind: "fastconv" (a fastconv backend, compared against every baseline) or "baseline".
        memory_format: of the input activations; baselines also convert their conv weights to it, as
            ``model.to(memory_format=...)`` does.
        backend: the fastconv backend, for kind "fastconv".
        device_types: where it is benchmarked at all; elsewhere it is not even collected. (Triton runs CPU
            tensors only in its interpreter, a correctness tool whose timings mean nothing.)
    """

    name: str
    kind: str
    memory_format: torch.memory_format
    backend: str | None = None
    device_types: tuple[str, ...] = ("cpu", "cuda")

    def why_not(self, ops: tuple[str, ...], device: torch.device) -> str | None:
        """None when this variant can run all of ``ops`` on ``device``, else the reason it cannot."""
        if self.kind != "fastconv":
            return None
        reasons = (backends.why_not(self.backend, op, device) for op in ops)
        return next((r for r in reasons if r is not None), None)

    def info(self) -> dict[str, str]:
        memory_format = "channels_last" if self.memory_format == torch.channels_last else "nchw"
        return {"variant": self.name, "kind": self.kind, "backend": self.backend or "eager",
                "memory_format": memory_format}


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fastconv-cpu", "fastconv", torch.channels_last, "cpu", ("cpu",)),
    Variant("fastconv-triton", "fastconv", torch.channels_last, "triton", ("cuda",)),
    Variant("fastconv-cuda", "fastconv", torch.channels_last, "cuda", ("cuda",)),
    Variant("eager-nchw", "baseline", torch.contiguous_format),
    Variant("eager-channels_last", "baseline", torch.channels_last),
)}


# ----------------------------------------------------------------------------------------------------------
# Options and settings.


@dataclasses.dataclass(frozen=True)
class Settings:
    """What this run measures, from the command line."""

    device: torch.device
    dtype: torch.dtype
    batches: tuple[int, ...]
    quick: bool

    @property
    def network_batches(self) -> tuple[int, ...]:
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


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads the timer option
def pytest_configure(config: pytest.Config) -> None:
    device_type = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: torch sees no CUDA device")
    default_dtype, batches = DEVICE_DEFAULTS[device_type]
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
        quick=config.getoption("--bench-quick"),
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


def _params(entries: dict[str, tuple[str, ...]], batches: tuple[int, ...], group: str,
            device: torch.device) -> list[object]:
    """pytest params (case id, batch, variant name) from entries {case id: the ops it runs}.

    Plain strings and ints keep the params readable in the JSON; the fixtures look the objects up.
    """
    params = []
    # Variants vary fastest, so that consecutive tests share one cached set of arguments.
    for case_id, ops in entries.items():
        for batch in batches:
            for variant in VARIANTS.values():
                if device.type not in variant.device_types:
                    continue
                marks = [pytest.mark.benchmark(group=f"{group} {case_id} b{batch}")]
                reason = variant.why_not(ops, device)
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
        if settings.quick:
            cases = [_representative(cases)]
        entries = {c.id(): (op,) for c in cases}
        metafunc.parametrize(("case", "batch", "variant"), _params(entries, settings.batches, op, settings.device))
    elif {"network", "batch", "variant"} <= names:
        # Which ops a network runs (and so whether a backend can run it) shows only when it runs: see _run.
        entries = {n: () for n in NETWORKS}
        metafunc.parametrize(("network", "batch", "variant"),
                             _params(entries, settings.network_batches, "network", settings.device))


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
    machine_info["fastconv"] = environment_info(config.stash[SETTINGS].device)


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


def _record_rates(benchmark, flops: int, min_bytes: int) -> None:
    info = benchmark.extra_info
    info["flops"], info["min_bytes"] = flops, min_bytes
    if benchmark.stats:
        median = benchmark.stats.stats.median
        info["gflops_per_s"] = flops / median / 1e9
        info["gb_per_s"] = min_bytes / median / 1e9


def _run(benchmark, settings: Settings, variant: Variant, fn: Callable[[], object], budget_s: float,
         info: dict[str, object], flops: int, min_bytes: int) -> None:
    benchmark.extra_info.update(environment_info(settings.device))
    benchmark.extra_info.update(variant.info())
    benchmark.extra_info.update(info, dtype=str(settings.dtype).removeprefix("torch."), load_average=_load_average())
    backend = fastconv.use_backend(variant.backend) if variant.backend else contextlib.nullcontext()
    with backend, torch.no_grad():
        try:
            _measure(benchmark, settings, fn, budget_s)
        except backends.BackendUnavailable as e:  # raised by the first call, before anything is timed
            pytest.skip(f"{variant.name}: {e}")
    _record_rates(benchmark, flops, min_bytes)


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


def op_callable(variant: Variant, case: LayerCase, args: tuple) -> Callable[[], object]:
    """A no-argument call of ``case.op`` on ``args`` (NCHW, contiguous) as ``variant`` runs it."""
    if variant.kind == "fastconv":
        # Weights stay contiguous, as the kernels want them; only activations (x, residual) change format.
        weights = _weight_positions(case.op)
        args = tuple(a if i in weights else _to_format(a, variant.memory_format) for i, a in enumerate(args))
        return functools.partial(fastconv.ops.OPS[case.op], *args)
    # PyTorch eager: the unfused ATen path of the op, with every 4-D tensor in the variant's format.
    args = tuple(_to_format(a, variant.memory_format) for a in args)
    return functools.partial(getattr(reference, case.op), *args)


@pytest.fixture
def bench_op(benchmark, settings: Settings) -> Callable[[str, int, str], None]:
    """Runs one layer case (by id) at one batch size on one variant (by name) and records what it measured."""

    def run(case_id: str, batch: int, variant_name: str) -> None:
        case, variant = _layer_cases_by_id()[case_id], VARIANTS[variant_name]
        args = _case_args(case, batch, settings.dtype, settings.device)
        info = {"op": case.op, "case": case.id(), "network": case.network, "layer": case.name,
                "batch": batch, "count": case.count}
        _run(benchmark, settings, variant, op_callable(variant, case, args), settings.time_budget_s("op"),
             info, case.flops(batch), case.min_bytes(batch, settings.dtype))

    return run


# ----------------------------------------------------------------------------------------------------------
# Whole networks.


def _randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    # Default statistics (mean 0, var 1, weight 1, bias 0) would make BatchNorm folding a no-op.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)


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
    _randomize_batchnorm(fast, torch.Generator().manual_seed(SEED))
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


def network_callable(variant: Variant, networks: Networks, x: torch.Tensor) -> Callable[[], object]:
    """A no-argument forward pass of ``x`` (NCHW) through the network as ``variant`` runs it."""
    model = networks.fast if variant.kind == "fastconv" else networks.eager[variant.memory_format]
    return functools.partial(model, _to_format(x, variant.memory_format))


@pytest.fixture
def bench_network(benchmark, settings: Settings) -> Callable[[str, int, str], None]:
    """Runs one network at one batch size on one variant (by name) and records what it measured."""

    def run(network: str, batch: int, variant_name: str) -> None:
        variant = VARIANTS[variant_name]
        nets = _networks(network, settings.dtype, settings.device)
        generator = torch.Generator().manual_seed(SEED)
        x = torch.randn(batch, 3, nets.image_size, nets.image_size, generator=generator)
        x = x.to(device=settings.device, dtype=settings.dtype)
        # Input, folded weights and logits, each moved once.
        min_bytes = nets.weight_bytes + (x.numel() + batch * nets.out_features) * x.element_size()
        info = {"network": network, "case": network, "batch": batch}
        _run(benchmark, settings, variant, network_callable(variant, nets, x), settings.time_budget_s("network"),
             info, nets.flops_per_image * batch, min_bytes)

    return run
