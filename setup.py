"""Builds fastconv and its compiled extension ``fastconv._C``.

Install with ``pip install --no-build-isolation -e .`` (torch must be installed first, as for every torch
extension). The C++ CPU kernels (``csrc/cpu``) are always built. The CUDA kernels (``csrc/cuda/*.cu``) follow
the environment variable ``FASTCONV_BUILD_CUDA``:

    auto (default)  built when csrc/cuda holds .cu files, torch is a CUDA build and a CUDA toolkit is found,
                    whether or not a GPU is visible
    1               required: the build stops, saying why, when they cannot be built
    0               never built

When the CUDA kernels are built, nvcc runs through this file (``python setup.py --nvcc-report DIR -- nvcc ...``,
via torch's ``PYTORCH_NVCC``), which keeps ptxas's resource report (registers, shared memory, spills per
kernel, from ``-Xptxas=-v``) of each source in ``build/ptxas/<source>.txt``; tests/test_cuda_build.py reads it.

Other variables: ``CUDA_HOME`` or ``CUDA_PATH`` (the toolkit root; otherwise found from ``nvcc`` on PATH,
which may be a wrapper script), ``TORCH_CUDA_ARCH_LIST`` (default "9.0", the H100/H200) and ``MAX_JOBS``
(parallel compile jobs).

The decisions are plain functions of their inputs, so that tests can import this file and check them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"

BUILD_CUDA_MODES = ("auto", "0", "1")
# One architecture: each extra one costs a full device compile of every .cu file.
DEFAULT_CUDA_ARCH_LIST = "9.0"
CXX_FLAGS = ["-O3", "-g0"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--use_fast_math", "-Xptxas=-v"]
# Where the ptxas resource report of each CUDA source is kept.
PTXAS_REPORT_DIR = ROOT / "build" / "ptxas"
# Where toolkits live when nothing names one.
TOOLKIT_SEARCH_ROOTS = (Path("/usr/local"),)


class BuildConfigError(RuntimeError):
    """The requested build cannot be made (an unknown mode, or FASTCONV_BUILD_CUDA=1 without the means)."""


def cpp_sources(csrc: Path = CSRC) -> list[Path]:
    """The C++ sources always built: the module and the CPU kernels."""
    return [csrc / "module.cpp", *sorted((csrc / "cpu").glob("*.cpp"))]


def cuda_sources(csrc: Path = CSRC) -> list[Path]:
    """The CUDA kernel sources (and any C++ files beside them that need the CUDA headers)."""
    return sorted((csrc / "cuda").glob("*.cu")) + sorted((csrc / "cuda").glob("*.cpp"))


def is_toolkit_root(path: Path) -> bool:
    """True when ``path`` holds a CUDA toolkit: ``include/cuda_runtime.h`` and ``bin/nvcc``."""
    return (path / "include" / "cuda_runtime.h").is_file() and (path / "bin" / "nvcc").is_file()


def _wrapper_targets(nvcc: Path) -> list[Path]:
    """The nvcc paths a wrapper script execs (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``); none for a binary."""
    try:
        with open(nvcc, "rb") as f:
            head = f.read(64 * 1024)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    text = head.decode("utf-8", errors="replace")
    return [Path(p) for p in re.findall(r"(/[^\s'\"]*/bin/nvcc)(?![\w.])", text)]


def _version_key(path: Path) -> tuple[int, ...]:
    """(13, 0) for ``cuda-13.0``: newest toolkit first when sorted in reverse."""
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_cuda_home(
    environ: Mapping[str, str],
    which: Callable[..., str | None] = shutil.which,
    search_roots: Sequence[Path] = TOOLKIT_SEARCH_ROOTS,
) -> tuple[Path | None, str]:
    """Finds the CUDA toolkit root.

    Order: ``CUDA_HOME``, ``CUDA_PATH``; else from ``nvcc`` on PATH (its real location, or the nvcc a wrapper
    script execs), then ``<root>/cuda`` and ``<root>/cuda-*`` (newest first) for each search root. A candidate
    counts only when it has ``include/cuda_runtime.h`` and ``bin/nvcc``: a wrapper ``nvcc`` in /usr/local/bin
    would otherwise make /usr/local look like the toolkit.

    Args:
        environ: the environment to read (CUDA_HOME, CUDA_PATH, PATH).
        which: ``shutil.which``-like lookup, called as ``which("nvcc", path=environ["PATH"])``.
        search_roots: directories holding ``cuda`` or ``cuda-<version>`` toolkits.

    Returns:
        (root, how it was found), or (None, why no toolkit was found).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = environ.get(var)
        if value:
            if is_toolkit_root(Path(value)):
                return Path(value), f"{var}={value}"
            return None, f"{var}={value} is not a CUDA toolkit root (no include/cuda_runtime.h and bin/nvcc)"
    candidates: list[tuple[Path, str]] = []
    nvcc = which("nvcc", path=environ.get("PATH"))
    if nvcc:
        nvcc_path = Path(nvcc)
        candidates.append((nvcc_path.resolve().parent.parent, f"from nvcc at {nvcc}"))
        for target in _wrapper_targets(nvcc_path):
            candidates.append((target.resolve().parent.parent, f"from the nvcc wrapper {nvcc}"))
    for root in search_roots:
        candidates.append((root / "cuda", "default location"))
        candidates += [(p, "default location") for p in sorted(root.glob("cuda-*"), key=_version_key, reverse=True)]
    for path, how in candidates:
        if is_toolkit_root(path):
            return path, how
    where = f"nvcc at {nvcc} is not inside a toolkit" if nvcc else "no nvcc on PATH"
    return None, f"no CUDA toolkit found ({where}); set CUDA_HOME to the toolkit root"


def decide_cuda_build(
    mode: str, sources: Sequence[Path], torch_cuda: str | None, cuda_home: Path | None, cuda_home_note: str
) -> tuple[bool, str]:
    """Whether to build the CUDA kernels, and why, in one line.

    Never looks at whether a GPU is visible: a machine without one can build them for one that has one.

    Args:
        mode: the value of FASTCONV_BUILD_CUDA: "auto", "0" or "1".
        sources: the CUDA sources (``cuda_sources()``).
        torch_cuda: ``torch.version.cuda`` (None for a CPU-only build of torch).
        cuda_home: the toolkit root from ``find_cuda_home``, or None.
        cuda_home_note: how it was found, or why none was (``find_cuda_home``'s second result).

    Returns:
        (build, reason).

    Raises:
        BuildConfigError: ``mode`` is unknown, or "1" and the kernels cannot be built.
    """
    if mode not in BUILD_CUDA_MODES:
        raise BuildConfigError(f"FASTCONV_BUILD_CUDA must be one of {', '.join(BUILD_CUDA_MODES)}; got {mode!r}")
    if mode == "0":
        return False, "FASTCONV_BUILD_CUDA=0"
    if not any(s.suffix == ".cu" for s in sources):
        reason = "csrc/cuda has no .cu sources"
    elif torch_cuda is None:
        reason = "this torch is a CPU-only build (torch.version.cuda is None)"
    elif cuda_home is None:
        reason = cuda_home_note
    else:
        return True, f"torch CUDA {torch_cuda}, toolkit {cuda_home} ({cuda_home_note}), FASTCONV_BUILD_CUDA={mode}"
    if mode == "1":
        raise BuildConfigError(f"FASTCONV_BUILD_CUDA=1, but the CUDA kernels cannot be built: {reason}")
    return False, f"{reason} (FASTCONV_BUILD_CUDA=auto)"


def cuda_arch_list(environ: Mapping[str, str]) -> str:
    """TORCH_CUDA_ARCH_LIST to build for: the user's, else DEFAULT_CUDA_ARCH_LIST.

    torch can only guess the architecture from a visible GPU, and fails without one.
    """
    return environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_CUDA_ARCH_LIST


def nvidia_include_dirs(site_dir: Path) -> list[Path]:
    """Header directories of the ``nvidia`` wheels installed with a CUDA build of torch.

    torch's CUDA headers include cuBLAS and cuSPARSE headers that a minimal toolkit lacks; the wheels have them
    (``nvidia/cu13/include`` for CUDA 13, ``nvidia/<library>/include`` for older ones).
    """
    return sorted(p for p in (site_dir / "nvidia").glob("*/include") if p.is_dir())


def nvcc_report_command(nvcc: Path, report_dir: Path) -> str:
    """The nvcc command (torch's ``PYTORCH_NVCC``) that runs ``nvcc`` and keeps its ptxas report in ``report_dir``."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--nvcc-report", str(report_dir), "--", str(nvcc)]
    return shlex.join(argv)


def ptxas_report_path(nvcc_args: Sequence[str], report_dir: Path) -> Path:
    """``report_dir/<source>.txt`` for the .cu file an nvcc command line compiles (``-c <source>``)."""
    sources = [a for a in nvcc_args if a.endswith(".cu")]
    name = Path(sources[-1]).name if sources else "nvcc"
    return report_dir / f"{name}.txt"


def run_nvcc_with_report(argv: Sequence[str]) -> int:
    """Runs ``nvcc`` (argv: ``DIR -- nvcc args...``), passing its output on and saving its stderr in DIR.

    Returns:
        nvcc's exit status.
    """
    report_dir, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit("usage: setup.py --nvcc-report DIR -- nvcc ARGS...")
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr)
    path = ptxas_report_path(command[1:], Path(report_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.stderr)
    return result.returncode


def _relative(paths: Sequence[Path]) -> list[str]:
    return [os.path.relpath(p, ROOT) for p in paths]


def openmp_flags(torch_has_openmp: bool, platform: str) -> tuple[list[str], list[str]]:
    """(compile flags, link flags) that make the CPU kernels' ``at::parallel_for`` run on torch's threads.

    ``at::parallel_for`` is a header template: with torch's OpenMP backend it is an ``omp parallel`` region
    compiled into the extension, which runs on one thread unless the extension itself is built with OpenMP.
    Linux (GCC, Clang) and Windows (MSVC, clang-cl) get it; macOS's Apple Clang has no ``-fopenmp``, so builds
    there run the kernels on one thread. A torch without OpenMP needs no flag: its native thread pool is reached
    through libtorch.
    """
    if not torch_has_openmp or platform == "darwin":
        return [], []
    if platform == "win32":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


def extensions(environ: MutableMapping[str, str]) -> list:
    """The extension fastconv._C, with the CUDA kernels or without, as FASTCONV_BUILD_CUDA decides.

    Sets CUDA_HOME and TORCH_CUDA_ARCH_LIST in ``environ`` (os.environ) when building them: torch's
    cpp_extension reads both, CUDA_HOME at import, so this runs before it is imported.
    """
    import torch

    mode = environ.get("FASTCONV_BUILD_CUDA", "auto").strip().lower()
    sources = cuda_sources()
    cuda_home, note = find_cuda_home(environ) if mode != "0" else (None, "")
    build_cuda, reason = decide_cuda_build(mode, sources, torch.version.cuda, cuda_home, note)
    print(f"fastconv: {'building' if build_cuda else 'not building'} the CUDA kernels: {reason}", flush=True)
    omp_compile, omp_link = openmp_flags(torch.backends.openmp.is_available(), sys.platform)
    kwargs = {
        "name": "fastconv._C",
        "include_dirs": [str(CSRC)],
        "extra_compile_args": {"cxx": CXX_FLAGS + omp_compile},
        "extra_link_args": omp_link,
        "py_limited_api": True,
    }
    if not build_cuda:
        from torch.utils.cpp_extension import CppExtension

        return [CppExtension(sources=_relative(cpp_sources()), **kwargs)]
    environ["CUDA_HOME"] = str(cuda_home)
    environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list(environ)
    environ["PYTORCH_NVCC"] = nvcc_report_command(cuda_home / "bin" / "nvcc", PTXAS_REPORT_DIR)
    from torch.utils.cpp_extension import CUDAExtension

    site_dir = Path(torch.__file__).resolve().parent.parent
    kwargs["include_dirs"] += [str(p) for p in nvidia_include_dirs(site_dir)]
    kwargs["extra_compile_args"]["nvcc"] = NVCC_FLAGS
    return [CUDAExtension(sources=_relative(cpp_sources() + sources), **kwargs)]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--nvcc-report"]:
        sys.exit(run_nvcc_with_report(sys.argv[2:]))
    try:
        ext_modules = extensions(os.environ)
    except BuildConfigError as e:
        raise SystemExit(f"fastconv: {e}") from None
    from torch.utils.cpp_extension import BuildExtension

    setup(
        packages=[*find_packages(include=["fastconv", "fastconv.*"]), "fastconv.kernels"],
        # The Triton kernels live in kernels/ and install as fastconv.kernels: a top-level package named
        # `kernels` would collide with an unrelated one on PyPI.
        package_dir={"fastconv.kernels": "kernels"},
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension},
        options={"bdist_wheel": {"py_limited_api": "cp310"}},
    )
