"""The fastconv command line: ``python -m fastconv demo | bench | info`` (also the ``fastconv`` script)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

DESCRIPTION = """\
fastconv: fused kernels for MobileNetV2's inverted residual and InceptionV3's asymmetric conv pairs.

commands:
  demo   build MobileNetV2, InceptionV3 and the SSDLite detector on MobileNetV2 with the same random weights
         (random BatchNorm statistics too) in torchvision and in fastconv, check that their outputs agree, time
         both and print a table
  bench  run the pytest-benchmark suite in bench/ and print a summary table (source checkout only)
  info   print versions, devices, and which backends can run here (and why the others cannot)

Run `python -m fastconv COMMAND --help` for the options of each.
"""

NETWORKS = ("mobilenet_v2", "inception_v3", "ssdlite_mobilenet_v2")
INPUT_SIZE = {"mobilenet_v2": 224, "inception_v3": 299, "ssdlite_mobilenet_v2": 320}
# The detector's score threshold: with random weights every class scores about 1/91, so torchvision's 0.001
# would send every candidate box through NMS (seconds on a CPU, the same work on both sides of the comparison).
DETECTOR_KWARGS = {"score_thresh": 0.5}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_pair(network: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The network of torchvision's modules and fastconv's, in eval mode, holding the same random weights.

    For the detector, torchvision's side is ``ssdlite_mobilenet_v2(fused=False)``: torchvision ships SSDLite only
    on MobileNetV3, so the baseline is the same detector built from torchvision's modules alone.
    """
    import torchvision

    import fastconv.models
    from fastconv.testing import randomize_batchnorm_

    torch.manual_seed(seed)
    if network == "ssdlite_mobilenet_v2":
        tv = fastconv.models.ssdlite_mobilenet_v2(fused=False, **DETECTOR_KWARGS)
        fc = fastconv.models.ssdlite_mobilenet_v2(**DETECTOR_KWARGS)
    else:
        kwargs = {"aux_logits": False, "init_weights": False} if network == "inception_v3" else {}
        tv = getattr(torchvision.models, network)(weights=None, **kwargs)
        fc = getattr(fastconv.models, network)(**kwargs)
    randomize_batchnorm_(tv, torch.Generator().manual_seed(seed))
    fc.load_state_dict(tv.state_dict(), strict=True)
    tv = tv.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()
    fc = fc.to(device=device, dtype=dtype).eval()
    return tv, fc


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, runs: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *map(line, rows)])


def _demo_network(net: str, batches: Sequence[int], device: torch.device, dtype: torch.dtype,
                  args: argparse.Namespace, step: Callable[[int], str]) -> list[tuple]:
    """Checks and times one network; one (batch, backends, torchvision ms, fastconv ms, error, scale) per batch."""
    import fastconv

    _progress(f"building {net} (torchvision and fastconv, same random weights) on {device}")
    tv, fc = build_pair(net, device, dtype)
    size = INPUT_SIZE[net]
    results = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        check = lambda model, x: model(x)
        if net == "ssdlite_mobilenet_v2":
            from fastconv.models.ssdlite import dense_predictions

            # A detector takes a list of images in [0, 1]; its raw predictions at every default box are what
            # is compared (detections can legitimately differ where a score sits at a threshold).
            x = list(x.sigmoid())
            check = dense_predictions
        with torch.inference_mode():
            _progress(f"{step(batch)}: checking outputs against torchvision")
            ref = check(tv, x).float()
            err = (check(fc, x).float() - ref).abs().max().item()
            _progress(f"{step(batch)}: timing torchvision ({args.runs} runs)")
            t_tv = time_ms(lambda: tv(x), device, args.warmup, args.runs)  # noqa: B023 (called at once)
            _progress(f"{step(batch)}: timing fastconv ({args.runs} runs)")
            t_fc = time_ms(lambda: fc(x), device, args.warmup, args.runs)  # noqa: B023 (called at once)
        used = sorted({fastconv.backends.resolve(op, device) for op in fastconv.backends.OPS})
        results.append((batch, "+".join(used), t_tv, t_fc, err, max(1.0, ref.abs().max().item())))
    return results


def demo(args: argparse.Namespace) -> int:
    import fastconv

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    batches = args.batch or ([1, 64] if device.type == "cuda" else [1, 8])
    # float32 follows the op tolerance rule; a whole network in half precision gets a looser bound
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    fastconv.set_backend(args.backend)
    rows, failures = [], 0
    total = len(args.models) * len(batches)
    for i, net in enumerate(args.models):
        step = lambda b, i=i, net=net: f"[{i * len(batches) + batches.index(b) + 1}/{total}] {net} batch {b}"
        for batch, used, t_tv, t_fc, err, scale in _demo_network(net, batches, device, dtype, args, step):
            ok = err <= tolerance * scale
            failures += not ok
            rows.append([net, str(batch), str(device), str(dtype).removeprefix("torch."), used,
                         f"{t_tv:.2f}", f"{t_fc:.2f}", f"{t_tv / t_fc:.2f}x", f"{err:.1e}" + ("" if ok else " !")])
    print()
    print(_table(["model", "batch", "device", "dtype", "backend", "torchvision ms", "fastconv ms", "speedup",
                  "max error"], rows))
    verdict = f"{failures} row(s) marked ! exceed the tolerance" if failures else "all within tolerance"
    print(f"\ntorchvision runs eager in channels_last; times are medians of {args.runs} runs after {args.warmup} "
          f"warm-up runs; max error is against torchvision's output: {verdict}")
    return 1 if failures else 0


def info_cmd(args: argparse.Namespace) -> int:
    from fastconv.info import format_info, info

    print(format_info(info()))
    return 0


def bench(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    bench_dir = root / "bench"
    if not (bench_dir / "conftest.py").exists():
        print("fastconv bench: the benchmarks live in the source tree (bench/); run this from a checkout "
              "installed with `pip install --no-build-isolation -e .`", file=sys.stderr)
        return 2
    json_path = Path(args.json or root / ".benchmarks" / "latest.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(bench_dir), "--benchmark-only", f"--benchmark-json={json_path}",
           "-q", *(["--bench-quick"] if args.quick else []), *args.pytest_args]
    _progress("running: " + " ".join(cmd))
    rc = subprocess.call(cmd, cwd=root)
    if json_path.exists():
        report = [sys.executable, str(bench_dir / "report.py"), str(json_path)]
        if args.markdown:
            report += ["-o", args.markdown]
        rc = subprocess.call(report, cwd=root) or rc
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    backend_names = ("auto", "reference", "cpu", "triton", "cuda")

    p = sub.add_parser("demo", help="compare fastconv's networks with torchvision's: outputs and speed",
                       description="Builds MobileNetV2, InceptionV3 and SSDLite320-MobileNetV2 in torchvision "
                       "and fastconv with the same random weights, checks that the outputs agree, times both "
                       "(median after warm-up) at batch 1 and a larger batch, and prints a table. Exits 1 if an "
                       "output disagrees.")
    p.add_argument("--models", nargs="+", choices=NETWORKS, default=list(NETWORKS), help="networks to run")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 1 8 on CPU, 1 64 on CUDA)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present, else cpu)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="default: float16 on CUDA, float32 on CPU")
    p.add_argument("--backend", choices=backend_names, default="auto", help="fastconv backend (default auto)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs (default 3)")
    p.set_defaults(func=demo)

    p = sub.add_parser("bench", help="run the benchmark suite and print a summary",
                       description="Runs `pytest --benchmark-only bench/` and turns its JSON into a table of "
                       "speedups (bench/report.py). Extra arguments after -- go to pytest.")
    p.add_argument("--quick", action="store_true", help="one shape per op and the networks at batch 1 only")
    p.add_argument("--json", help="where to write pytest-benchmark's JSON (default .benchmarks/latest.json)")
    p.add_argument("--markdown", help="also write the summary table to this markdown file")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    p.set_defaults(func=bench)

    p = sub.add_parser("info", help="versions, devices and available backends",
                       description="Prints versions, devices, whether fastconv._C loaded with CPU and CUDA "
                       "kernels, and for each device which backends can run and why the others cannot.")
    p.set_defaults(func=info_cmd)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
