"""What this installation of fastconv has: versions, devices, backends and why some cannot run."""

from __future__ import annotations

import platform
from typing import Any

import torch

from fastconv import backends


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _cpu_kernel_threads(ext: object) -> int | None:
    """Threads one parallel region of the CPU kernels runs on (torch.get_num_threads() when the extension was
    built with OpenMP, 1 when not), or None without the extension or with one that cannot tell."""
    if ext is None or not hasattr(torch.ops.fastconv_C, "cpu_kernel_threads"):
        return None
    return int(torch.ops.fastconv_C.cpu_kernel_threads())


def info() -> dict[str, Any]:
    """Versions, devices and backend availability, as a plain dict (``python -m fastconv info`` prints it).

    Returns:
        A dict with "versions", "devices", "extension" (whether ``fastconv._C`` loaded and with which kernels),
        "backend" (the current choice) and "backends": per device type, each backend mapped to None when it can
        run every op there, or to the reason it cannot.
    """
    import fastconv

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    ext = backends.extension()
    cuda_kernels = ext is not None and any(backends.has_kernel(op, "CUDA") for op in backends.OPS)
    return {
        "versions": {
            "fastconv": fastconv.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch CUDA": torch.version.cuda,
            "torchvision": _version("torchvision"),
            "triton": _version("triton"),
        },
        "devices": {
            "cpu": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            **({"cuda": torch.cuda.get_device_name()} if "cuda" in devices else {}),
        },
        "extension": {
            "loaded": ext is not None,
            "error": backends.extension_error(),
            "cpu kernels": ext is not None and all(backends.has_kernel(op, "CPU") for op in backends.OPS),
            "cpu kernel threads": _cpu_kernel_threads(ext),
            "cuda kernels": cuda_kernels,
        },
        "backend": backends.get_backend(),
        "backends": {dev: backends.backend_status(dev) for dev in devices},
    }


def format_info(data: dict[str, Any]) -> str:
    """Renders ``info()`` as readable text."""
    lines = ["fastconv " + data["versions"]["fastconv"], "", "versions:"]
    lines += [f"  {k:<12} {v if v is not None else 'not installed'}" for k, v in data["versions"].items()]
    lines += ["", "devices:"] + [f"  {k:<12} {v}" for k, v in data["devices"].items()]
    ext = data["extension"]
    lines += ["", "fastconv._C:"]
    if ext["loaded"]:
        lines.append(f"  CPU kernels: {'yes' if ext['cpu kernels'] else 'no'}; "
                     f"CUDA kernels: {'yes' if ext['cuda kernels'] else 'no (built without CUDA kernels)'}")
        threads = ext["cpu kernel threads"]
        if threads is not None:
            note = "" if threads == torch.get_num_threads() else (
                f" of torch's {torch.get_num_threads()} (the extension was built without OpenMP: see setup.py)")
            lines.append(f"  CPU kernel threads: {threads}{note}")
    else:
        lines.append(f"  missing: {ext['error']}")
    lines += ["", f"backend in force: {data['backend']}"]
    for dev, status in data["backends"].items():
        lines.append(f"backends for {dev} tensors:")
        for name, reason in status.items():
            lines.append(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    return "\n".join(lines)
