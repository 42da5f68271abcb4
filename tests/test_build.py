"""The compiled extension fastconv._C and the build decisions of setup.py.

The extension: it imports, every kernel op has a CPU kernel and the schema fastconv/ops.py calls it with, one
small case per op matches the reference in float32 and bfloat16, the portable (non-AVX2) kernels agree too,
and bad arguments fail with errors naming them. setup.py: when the CUDA kernels are built (FASTCONV_BUILD_CUDA),
where the CUDA toolkit is found, and the architecture list, on fake directory layouts.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from op_testing import DTYPES, Tolerance, assert_within_tolerance, cast

from fastconv import backends, reference

ROOT = Path(__file__).resolve().parent.parent


def _load_setup():
    spec = importlib.util.spec_from_file_location("fastconv_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


setup_py = _load_setup()


# ----------------------------------------------------------------------------------------------------------
# The extension.


def test_extension_imports():
    importlib.import_module("fastconv._C")
    assert backends.extension() is not None, backends.extension_error()


@pytest.mark.skipif(not torch.backends.openmp.is_available() or sys.platform == "darwin",
                    reason="the kernels are built with OpenMP only where torch uses it and the compiler has it "
                           "(setup.py: openmp_flags)")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_kernels_run_on_torch_threads(threads):
    """at::parallel_for in the kernels is an OpenMP region compiled into the extension: built without OpenMP it
    runs every kernel on one thread whatever torch.set_num_threads says."""
    importlib.import_module("fastconv._C")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.ops.fastconv_C.cpu_kernel_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.backends.openmp.is_available() or sys.platform == "darwin",
                    reason="the kernels are built with OpenMP only where torch uses it and the compiler has it")
def test_info_reports_cpu_kernel_threads():
    from fastconv.info import format_info, info

    data = info()
    assert data["extension"]["cpu kernel threads"] == torch.get_num_threads()
    assert f"CPU kernel threads: {torch.get_num_threads()}\n" in format_info(data) + "\n"


@pytest.mark.parametrize("op", backends.OPS)
def test_cpu_kernel_registered(op):
    importlib.import_module("fastconv._C")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastconv_C::{op}", "CPU")


@pytest.mark.parametrize("op", backends.OPS)
def test_kernel_schema_matches_public_op(op):
    """fastconv/ops.py calls fastconv_C::<op> positionally with the public op's arguments."""
    importlib.import_module("fastconv._C")
    kernel = getattr(torch.ops.fastconv_C, op).default._schema
    public = getattr(torch.ops.fastconv, op).default._schema
    assert [a.name for a in kernel.arguments] == [a.name for a in public.arguments]
    assert [str(a.type).replace("SymInt", "int") for a in kernel.arguments] == [
        str(a.type).replace("SymInt", "int") for a in public.arguments
    ]


def _cl(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape).contiguous(memory_format=torch.channels_last)


# One small case per kernel op, in the kernel op's argument order: odd sizes, channel counts that are not
# multiples of a vector, biases and an activation.
SMOKE = {
    "depthwise_conv2d": lambda: (_cl((2, 17, 9, 11)), torch.randn(17, 1, 3, 3), torch.randn(17), [2, 1], [1, 1],
                                 [1, 2], "relu6"),
    "pointwise_conv2d": lambda: (_cl((2, 17, 5, 7)), torch.randn(24, 17, 1, 1) / 4, torch.randn(24), "relu",
                                 _cl((2, 24, 5, 7))),
    "inverted_residual": lambda: (_cl((2, 24, 9, 7)), torch.randn(96, 24, 1, 1) / 5, torch.randn(96),
                                  torch.randn(96, 1, 3, 3) / 3, torch.randn(96), torch.randn(24, 96, 1, 1) / 10,
                                  torch.randn(24), 1, True, "relu6"),
    "asymmetric_conv_pair": lambda: (_cl((2, 17, 9, 11)), torch.randn(12, 17, 1, 7) / 11, torch.randn(12),
                                     torch.randn(19, 12, 7, 1) / 9, torch.randn(19), "relu"),
    "asymmetric_conv_parallel": lambda: (_cl((2, 17, 8, 7)), torch.randn(12, 17, 1, 3) / 7, torch.randn(12),
                                         torch.randn(19, 17, 3, 1) / 7, None, "relu"),
}


@pytest.mark.parametrize("tol", [p for p in DTYPES if p.values[0].dtype in (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("op", backends.OPS)
def test_kernel_matches_reference(op, tol: Tolerance):
    importlib.import_module("fastconv._C")
    args = cast(SMOKE[op](), tol.dtype)
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    out = getattr(torch.ops.fastconv_C, op)(*args)
    assert all(not isinstance(a, torch.Tensor) or torch.equal(a, b) for a, b in zip(args, before, strict=True))
    ref_op = getattr(reference, op)
    expected = ref_op(*cast(args, torch.float64))
    assert out.shape == expected.shape and out.dtype == tol.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_within_tolerance(out, expected, tol, lambda: ref_op(*args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", backends.OPS)
def test_repeated_call_allocates_no_scratch(op, dtype):
    """With pinned weights, a second call on the same shapes allocates none of the kernel's scratch buffers: they
    come back from the thread's pool (csrc/cpu/scratch_pool.h). One thread, so that one pool serves the calls."""
    importlib.import_module("fastconv._C")
    args = cast(SMOKE[op](), dtype)
    kernel = getattr(torch.ops.fastconv_C, op)
    names = getattr(torch.ops.fastconv_C, op).default._schema.arguments
    torch.ops.fastconv_C.pin_weights([a for arg, a in zip(names, args, strict=True)
                                      if isinstance(a, torch.Tensor) and ("weight" in arg.name or "bias" in arg.name)])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = kernel(*args)
        allocated = torch.ops.fastconv_C.cpu_scratch_allocations()
        second = kernel(*args)
        assert torch.ops.fastconv_C.cpu_scratch_allocations() == allocated
    finally:
        torch.set_num_threads(before)
    assert torch.equal(first, second)


def test_process_exits_cleanly_after_the_kernels_ran():
    """Scratch pools (one per thread) and the packed-weight cache (static) both outlive the calls; at exit the
    main thread's pool goes before the cache releases its buffers, which must then bypass the pool."""
    script = (
        "import torch, fastconv._C, test_build as t\n"
        "torch.set_num_threads(2)\n"
        "for op, make in t.SMOKE.items():\n"
        "    args = make()\n"
        "    torch.ops.fastconv_C.pin_weights([a for a in args[1:] if isinstance(a, torch.Tensor)])\n"
        "    getattr(torch.ops.fastconv_C, op)(*args)\n"
        "    getattr(torch.ops.fastconv_C, op)(*args)\n"
        "print('done')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]


def test_portable_kernels_match_reference():
    """FASTCONV_CPU_ISA=generic selects the kernels built for any CPU (AVX2 machines never run them otherwise)."""
    script = (
        "import torch, fastconv._C, test_build as t\n"
        "from fastconv import reference\n"
        "for op, make in t.SMOKE.items():\n"
        "    args = make()\n"
        "    out = getattr(torch.ops.fastconv_C, op)(*args)\n"
        "    ref = getattr(reference, op)(*args)\n"
        "    err = (out - ref).abs().max().item()\n"
        "    assert err <= 1e-4 * max(1.0, ref.abs().max().item()), (op, err)\n"
    )
    env = {**os.environ, "FASTCONV_CPU_ISA": "generic"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_empty_batch():
    importlib.import_module("fastconv._C")
    x = torch.empty(0, 17, 9, 11).contiguous(memory_format=torch.channels_last)
    out = torch.ops.fastconv_C.asymmetric_conv_parallel(
        x, torch.randn(12, 17, 1, 3), None, torch.randn(19, 17, 3, 1), None, "relu"
    )
    assert out.shape == (0, 31, 9, 11) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("op", "args", "match"),
    [
        ("pointwise_conv2d", lambda: (_cl((1, 3, 4, 4)), torch.randn(2, 4, 1, 1), None, "relu", None),
         r"weight must have shape \[\*, 3, 1, 1\]; got \[2, 4, 1, 1\]"),
        ("pointwise_conv2d", lambda: (_cl((1, 3, 4, 4)), torch.randn(2, 3, 1, 1), None, "gelu", None),
         r"activation must be one of 'none', 'relu', 'relu6'; got 'gelu'"),
        ("depthwise_conv2d", lambda: (_cl((1, 3, 4, 4)), torch.randn(3, 1, 7, 3), None, [1, 1], [0, 0], [1, 1],
                                      "none"), r"x of spatial size 4x4 is smaller than the 7x3 kernel"),
        ("inverted_residual", lambda: (_cl((1, 3, 4, 4)), None, None, torch.randn(3, 1, 3, 3), None,
                                       torch.randn(4, 3, 1, 1), None, 1, True, "relu6"),
         r"residual=True needs stride 1 and as many output as input channels"),
        ("asymmetric_conv_pair", lambda: (_cl((1, 3, 4, 4)), torch.randn(5, 3, 1, 4), None,
                                          torch.randn(5, 5, 3, 1), None, "relu"),
         r"weight1 must have an odd kernel"),
        ("asymmetric_conv_parallel", lambda: (_cl((1, 3, 4, 4)), torch.randn(5, 3, 1, 3),
                                              torch.randn(4, dtype=torch.float64), torch.randn(5, 3, 3, 1), None,
                                              "relu"), r"bias_a must have the dtype of x"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith(("weight", "activation", "x ", "residual", "bias"))
    else None,
)
def test_bad_arguments_name_the_argument(op, args, match):
    importlib.import_module("fastconv._C")
    with pytest.raises(ValueError, match=match):
        getattr(torch.ops.fastconv_C, op)(*args())


# ----------------------------------------------------------------------------------------------------------
# setup.py: the CUDA build decision.

CUDA_SOURCES = [Path("csrc/cuda/depthwise_conv2d.cu")]


def test_build_cuda_0_never_builds():
    build, reason = setup_py.decide_cuda_build("0", CUDA_SOURCES, "13.0", Path("/cuda"), "CUDA_HOME=/cuda")
    assert not build and "FASTCONV_BUILD_CUDA=0" in reason


@pytest.mark.parametrize(
    ("sources", "torch_cuda", "home", "reason"),
    [
        ([], "13.0", Path("/cuda"), "no .cu sources"),
        ([Path("csrc/cuda/README.md")], "13.0", Path("/cuda"), "no .cu sources"),
        (CUDA_SOURCES, None, Path("/cuda"), "CPU-only build"),
        (CUDA_SOURCES, "13.0", None, "no CUDA toolkit found"),
    ],
    ids=["no-sources", "no-cu-sources", "cpu-torch", "no-toolkit"],
)
def test_build_cuda_auto_skips_and_1_fails(sources, torch_cuda, home, reason):
    note = "no CUDA toolkit found (no nvcc on PATH)" if home is None else "CUDA_HOME=/cuda"
    build, why = setup_py.decide_cuda_build("auto", sources, torch_cuda, home, note)
    assert not build and reason in why
    with pytest.raises(setup_py.BuildConfigError, match=reason):
        setup_py.decide_cuda_build("1", sources, torch_cuda, home, note)


@pytest.mark.parametrize("mode", ["auto", "1"])
def test_build_cuda_builds_when_everything_is_there(mode):
    build, reason = setup_py.decide_cuda_build(mode, CUDA_SOURCES, "13.0", Path("/cuda"), "CUDA_HOME=/cuda")
    assert build and "/cuda" in reason


def test_build_cuda_unknown_mode():
    with pytest.raises(setup_py.BuildConfigError, match="must be one of auto, 0, 1; got 'yes'"):
        setup_py.decide_cuda_build("yes", CUDA_SOURCES, "13.0", Path("/cuda"), "")


def test_cuda_sources_are_the_cu_files(tmp_path):
    (tmp_path / "cuda").mkdir()
    for name in ("README.md", "b.cu", "a.cu", "register.cpp"):
        (tmp_path / "cuda" / name).write_text("")
    assert [p.name for p in setup_py.cuda_sources(tmp_path)] == ["a.cu", "b.cu", "register.cpp"]


def test_cpp_sources_hold_every_cpu_kernel():
    names = {p.name for p in setup_py.cpp_sources()}
    assert "module.cpp" in names
    assert {f"{op}.cpp" for op in backends.OPS} <= names


# ----------------------------------------------------------------------------------------------------------
# setup.py: finding the CUDA toolkit, on fake layouts.


def _toolkit(root: Path) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "bin").mkdir()
    (root / "bin" / "nvcc").write_bytes(b"\x7fELF")
    return root


def _find(tmp_path, environ, roots=()):
    return setup_py.find_cuda_home(environ, search_roots=roots or (tmp_path / "nowhere",))


def test_cuda_home_from_environment(tmp_path):
    root = _toolkit(tmp_path / "cuda-12.4")
    assert _find(tmp_path, {"CUDA_HOME": str(root), "PATH": ""}) == (root, f"CUDA_HOME={root}")
    assert _find(tmp_path, {"CUDA_PATH": str(root), "PATH": ""})[0] == root


def test_cuda_home_that_is_no_toolkit(tmp_path):
    home, reason = _find(tmp_path, {"CUDA_HOME": str(tmp_path), "PATH": ""})
    assert home is None and "is not a CUDA toolkit root" in reason


def test_cuda_home_from_a_wrapper_nvcc(tmp_path):
    """The nvcc on PATH is a script that execs the real one: its directory's parent is no toolkit."""
    root = _toolkit(tmp_path / "opt" / "cuda-13.0")
    bin_dir = tmp_path / "local" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {root}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    home, how = _find(tmp_path, {"PATH": str(bin_dir)})
    assert home == root and "wrapper" in how


def test_cuda_home_from_a_symlinked_nvcc(tmp_path):
    root = _toolkit(tmp_path / "cuda-12.8")
    (root / "bin" / "nvcc").chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvcc").symlink_to(root / "bin" / "nvcc")
    home, how = _find(tmp_path, {"PATH": str(bin_dir)})
    assert home == root and "from nvcc at" in how


def test_cuda_home_from_default_locations_newest_first(tmp_path):
    for version in ("11.8", "13.0", "12.10"):
        _toolkit(tmp_path / f"cuda-{version}")
    assert _find(tmp_path, {"PATH": ""}, roots=(tmp_path,))[0] == tmp_path / "cuda-13.0"
    _toolkit(tmp_path / "cuda")
    assert _find(tmp_path, {"PATH": ""}, roots=(tmp_path,))[0] == tmp_path / "cuda"


def test_no_cuda_toolkit(tmp_path):
    home, reason = _find(tmp_path, {"PATH": str(tmp_path)})
    assert home is None and "no nvcc on PATH" in reason and "CUDA_HOME" in reason


# ----------------------------------------------------------------------------------------------------------
# setup.py: the architecture list and the header directories of torch's nvidia wheels.


@pytest.mark.parametrize(("has_openmp", "platform", "expected"), [
    (True, "linux", (["-fopenmp"], ["-fopenmp"])),
    (True, "win32", (["/openmp"], [])),
    (True, "darwin", ([], [])),
    (False, "linux", ([], [])),
])
def test_openmp_flags(has_openmp, platform, expected):
    assert setup_py.openmp_flags(has_openmp, platform) == expected


@pytest.mark.parametrize(("value", "expected"), [(None, "9.0"), ("", "9.0"), ("8.0;9.0a", "8.0;9.0a")])
def test_cuda_arch_list(value, expected):
    environ = {} if value is None else {"TORCH_CUDA_ARCH_LIST": value}
    assert setup_py.cuda_arch_list(environ) == expected


def test_nvidia_include_dirs(tmp_path):
    for name in ("cu13/include", "cudnn/include", "nccl/lib"):
        (tmp_path / "nvidia" / name).mkdir(parents=True)
    assert setup_py.nvidia_include_dirs(tmp_path) == [
        tmp_path / "nvidia" / "cu13" / "include",
        tmp_path / "nvidia" / "cudnn" / "include",
    ]
