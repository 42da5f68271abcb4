"""Every shipped config of every Triton kernel, compiled for the H200 (sm_90) on this CPU-only machine.

What the interpreter cannot show: shared memory within the SM's 227 KB, no register spills, and tensor-core
``wgmma`` code for the kernels whose products are ``tl.dot`` in fp16/bf16. ``triton.compile`` runs the whole
pipeline down to a cubin with the ptxas of the triton wheel; ``cuobjdump`` from the same wheel reads the
cubin's registers and stack frame (spilled registers live there).

Each config is compiled, per dtype, for the call of a network layer that makes its tiles largest among the
layers whose shapes keep it (autotuning prunes by shape); a config that no layer keeps is an error. This
process must not be in interpreter mode: ``@triton.jit`` chooses the mode when the kernels are imported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")
if triton.knobs.runtime.interpret:
    pytest.skip("compiling for sm_90 needs non-interpreted kernels: run without TRITON_INTERPRET",
                allow_module_level=True)

from fastconv.kernels import MODULES  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from fastconv.shapes import layer_cases  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
SHARED_LIMIT = 227 * 1024  # bytes of shared memory one block may use on sm_90
DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kernel specialisation to compile: an op's kernel, a config of it, a dtype, all constexprs."""

    op: str
    config: int  # index into the module's CONFIGS
    dtype: str
    signature: tuple[tuple[str, str], ...]  # (parameter, Triton type or "constexpr")
    constexprs: tuple[tuple[str, object], ...]
    aligned: tuple[int, ...]  # parameters known divisible by 16 (pointers, and ints that are), as at launch
    num_warps: int
    num_stages: int
    layer: str  # the layer case it was taken from

    def id(self) -> str:
        return f"{self.op}-config{self.config}-{self.dtype}"


def _kernel_parts(op: str) -> tuple[object, JITFunction, dict]:
    """(autotuner, the jit function, its heuristics {name: fn}) of an op's kernel."""
    tuner = getattr(MODULES[op], f"{op}_kernel")
    fn, heuristics = tuner.fn, {}
    while not isinstance(fn, JITFunction):
        heuristics.update(getattr(fn, "values", {}))
        fn = fn.fn
    return tuner, fn, heuristics


def _normalised(args: tuple, op: str) -> tuple:
    """The op's arguments as ``fastconv.ops._run`` hands them to a launcher."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            is_activation = i == 0 or (op == "pointwise_conv2d" and i == 4)
            a = a.contiguous(memory_format=torch.channels_last) if is_activation else a.contiguous()
        out.append(a)
    return tuple(out)


def _type_of(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    raise TypeError(f"no Triton type for {type(value).__name__}")


def _variant(op: str, index: int, config: object, kwargs: dict, layer: str) -> Variant:
    _, fn, heuristics = _kernel_parts(op)
    full = {**kwargs, **config.kwargs}
    for name, heuristic in heuristics.items():
        full[name] = heuristic(full)
    signature, constexprs, aligned = [], [], []
    for i, p in enumerate(fn.params):
        value = full[p.name]
        if p.is_constexpr:
            signature.append((p.name, "constexpr"))
            constexprs.append((p.name, value))
        else:
            signature.append((p.name, _type_of(value)))
            if isinstance(value, torch.Tensor) or (type(value) is int and value % 16 == 0):
                aligned.append(i)
    dtype = DTYPES[kwargs["x_ptr"].dtype]
    return Variant(op, index, dtype, tuple(signature), tuple(constexprs), tuple(aligned), config.num_warps,
                   config.num_stages, layer)


def _size(variant: Variant) -> int:
    """How large a variant's tiles are: the sum of its integer constexprs (block sizes dominate it)."""
    return sum(v for _, v in variant.constexprs if type(v) is int)


@functools.cache
def variants() -> list[Variant]:
    """Per op, config and dtype: the variant of the network layer with the largest tiles that keeps it."""
    chosen: dict[tuple[str, int, str], Variant] = {}
    for op, module in MODULES.items():
        tuner, _, _ = _kernel_parts(op)
        index = {id(c): i for i, c in enumerate(module.CONFIGS)}
        for case in layer_cases(op=op):
            for dtype in DTYPES:
                kwargs = module.launch_args(*_normalised(case.make_args(1, dtype=dtype, device="meta"), op))
                for config in tuner.early_config_prune(tuner.configs, {}, **kwargs):
                    v = _variant(op, index[id(config)], config, kwargs, case.id())
                    key = (op, v.config, v.dtype)
                    if key not in chosen or _size(v) > _size(chosen[key]):
                        chosen[key] = v
    return sorted(chosen.values(), key=lambda v: (v.op, v.config, v.dtype))


@dataclasses.dataclass(frozen=True)
class Compiled:
    registers: int
    stack: int  # bytes of stack frame per thread: spilled registers
    shared: int  # bytes of shared memory
    wgmma: bool
    seconds: float


def compile_variant(variant: Variant) -> Compiled:
    """Compiles ``variant`` for sm_90 and reads its resources from the cubin."""
    _, fn, _ = _kernel_parts(variant.op)
    start = time.perf_counter()
    source = ASTSource(fn, dict(variant.signature), dict(variant.constexprs),
                       {(i,): [["tt.divisibility", 16]] for i in variant.aligned})
    kernel = triton.compile(source, target=TARGET,
                            options={"num_warps": variant.num_warps, "num_stages": variant.num_stages})
    seconds = time.perf_counter() - start
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", f.name], capture_output=True, text=True,
                               check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    assert found, f"cuobjdump printed no resource usage:\n{usage}"
    return Compiled(int(found[1]), int(found[2]), kernel.metadata.shared, "wgmma" in kernel.asm["ptx"], seconds)


@functools.cache
def compiled() -> dict[Variant, Compiled]:
    """Every variant compiled, two at a time (one process per core; spawned: forking a process that runs
    torch's threads can deadlock)."""
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(2, os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return dict(zip(variants(), pool.map(compile_variant, variants()), strict=True))


def test_every_config_is_reachable():
    """Every shipped config serves at least one layer of the networks: none is dead."""
    covered = {(v.op, v.config) for v in variants()}
    for op, module in MODULES.items():
        for i, config in enumerate(module.CONFIGS):
            assert (op, i) in covered, f"{op} config {i} ({config}) serves no layer of the networks"


@pytest.mark.parametrize("variant", variants(), ids=Variant.id)
def test_compiles_for_sm90(variant: Variant):
    """Fits the SM's shared memory, spills no register, and multiplies on tensor cores (wgmma) in fp16/bf16."""
    result = compiled()[variant]
    where = f"{variant.id()} ({variant.layer}, {dict(variant.constexprs)}, {variant.num_warps} warps)"
    assert result.shared <= SHARED_LIMIT, f"{where}: {result.shared} B of shared memory > {SHARED_LIMIT}"
    assert result.stack == 0, f"{where}: {result.registers} registers and a {result.stack} B stack frame (spills)"
    uses_dot = variant.op != "depthwise_conv2d"
    if uses_dot and variant.dtype != "fp32":
        assert result.wgmma, f"{where}: no wgmma in the PTX"
