"""The CUDA kernels of fastconv._C as compiled: registered per op, and within the H100/H200's resources.

setup.py keeps ptxas's report of each CUDA source in build/ptxas/<source>.txt (``-Xptxas=-v``). These tests
read it: no kernel may spill registers or use local memory, nor declare more shared memory than a Hopper block
can have. They need no GPU; they skip, saying why, when fastconv._C was built without its CUDA kernels.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from fastconv import backends

ROOT = Path(__file__).resolve().parent.parent

# The kernel ops with a CUDA kernel in csrc/cuda: all of them.
CUDA_OPS = backends.OPS
# Shared memory of one block on sm_90 (H100/H200): 227 KB.
MAX_SMEM_BYTES = 227 * 1024


def _load_setup():
    spec = importlib.util.spec_from_file_location("fastconv_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_py = _load_setup()


def _built_with_cuda() -> bool:
    importlib.import_module("fastconv._C")
    return any(backends.has_kernel(op, "CUDA") for op in backends.OPS)


needs_cuda_build = pytest.mark.skipif(
    backends.extension() is None or not _built_with_cuda(),
    reason="fastconv._C was built without CUDA kernels (FASTCONV_BUILD_CUDA=0, or no CUDA toolkit)",
)


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """ptxas's report of one kernel for one architecture."""

    name: str
    arch: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    smem_bytes: int


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>[^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_report(text: str) -> list[KernelResources]:
    """Every kernel in a ptxas ``-v`` report."""
    starts = list(_ENTRY.finditer(text))
    kernels = []
    for entry, following in zip(starts, [*starts[1:], None], strict=True):
        block = text[entry.end() : following.start() if following else len(text)]
        frame, used, smem = _FRAME.search(block), _USED.search(block), _SMEM.search(block)
        assert frame and used, f"no resource lines for {entry['name']} in the ptxas report"
        kernels.append(
            KernelResources(entry["name"], entry["arch"], int(used[1]), int(frame[1]), int(frame[2]),
                            int(frame[3]), int(smem[1]) if smem else 0)
        )
    return kernels


def _reports() -> dict[str, list[KernelResources]]:
    sources = [p for p in setup_py.cuda_sources() if p.suffix == ".cu"]
    reports = {}
    for source in sources:
        path = setup_py.PTXAS_REPORT_DIR / f"{source.name}.txt"
        assert path.is_file(), f"no ptxas report {path} for {source.name}: rebuild with pip install -e ."
        reports[source.name] = parse_ptxas_report(path.read_text())
    return reports


# ----------------------------------------------------------------------------------------------------------
# The built extension.


@needs_cuda_build
@pytest.mark.parametrize("op", CUDA_OPS)
def test_cuda_kernel_registered(op):
    assert backends.has_kernel(op, "CUDA")
    assert backends.why_not("cuda", op, torch.device("cuda")) is None


@needs_cuda_build
def test_every_source_has_kernels_in_its_report():
    for source, kernels in _reports().items():
        assert kernels, f"{source}: the ptxas report names no kernel"
        assert {k.arch for k in kernels} >= {"sm_90"}, f"{source}: not compiled for sm_90"


@needs_cuda_build
def test_no_spills_no_local_memory():
    bad = [
        f"{source}: {k.name} ({k.arch}): {k.stack_bytes} B stack, {k.spill_store_bytes} B spill stores, "
        f"{k.spill_load_bytes} B spill loads"
        for source, kernels in _reports().items()
        for k in kernels
        if k.stack_bytes or k.spill_store_bytes or k.spill_load_bytes
    ]
    assert not bad, "\n".join(bad)


@needs_cuda_build
def test_static_shared_memory_fits_a_block():
    bad = [
        f"{source}: {k.name}: {k.smem_bytes} B of static shared memory"
        for source, kernels in _reports().items()
        for k in kernels
        if k.smem_bytes > MAX_SMEM_BYTES
    ]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------------------------
# The report itself, without a GPU or a toolkit.

SAMPLE_REPORT = """\
ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'
ptxas info    : Function properties for _Z1kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Compiling entry function '_Z1gPf' for 'sm_90'
ptxas info    : Function properties for _Z1gPf
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
"""


def test_parse_ptxas_report():
    assert parse_ptxas_report(SAMPLE_REPORT) == [
        KernelResources("_Z1kPf", "sm_90", 40, 0, 0, 0, 2048),
        KernelResources("_Z1gPf", "sm_90", 255, 16, 8, 4, 0),
    ]


def test_nvcc_report_is_kept_per_source(tmp_path):
    """setup.py, as torch's PYTORCH_NVCC, passes nvcc's status and stderr on and keeps the stderr."""
    fake_nvcc = tmp_path / "nvcc"
    fake_nvcc.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('ptxas info: ' + sys.argv[-1])\n"
                         "sys.exit(3)\n")
    fake_nvcc.chmod(0o755)
    report_dir = tmp_path / "ptxas"
    command = setup_py.nvcc_report_command(fake_nvcc, report_dir)
    assert str(fake_nvcc) in command and "--nvcc-report" in command
    rc = setup_py.run_nvcc_with_report([str(report_dir), "--", str(fake_nvcc), "-c", "csrc/cuda/a.cu", "-o", "a.o"])
    assert rc == 3
    assert (report_dir / "a.cu.txt").read_text() == "ptxas info: a.o"
