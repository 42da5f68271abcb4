"""Runs every op once on its smallest network layer shape on each GPU backend: the workload that
``bench/gpu_check.sh`` hands to ``compute-sanitizer``. Exits non-zero if a backend raised or disagreed with
the reference (float32 tolerance rule: max abs error <= 1e-4 * max(1, max |ref|), tf32 allowed for Triton)."""

from __future__ import annotations

import argparse
import sys

import torch

import fastconv
from fastconv import backends
from fastconv.shapes import layer_cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", nargs="+", default=["triton", "cuda"], help="GPU backends to run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("sanitize_cases: no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    failures = 0
    for op in backends.OPS:
        case = min(layer_cases(op=op), key=lambda c: c.flops())
        inputs = case.make_args(1, torch.float32, device, torch.Generator().manual_seed(0))
        with fastconv.use_backend("reference"):
            ref = fastconv.ops.OPS[op](*inputs)
        for backend in args.backends:
            reason = backends.why_not(backend, op, device)
            if reason is not None:
                print(f"{op:<26} {backend:<7} skipped: {reason}")
                continue
            try:
                with fastconv.use_backend(backend):
                    out = fastconv.ops.OPS[op](*inputs)
                torch.cuda.synchronize()
            except Exception as e:  # report every backend, then fail
                failures += 1
                print(f"{op:<26} {backend:<7} FAILED: {type(e).__name__}: {e}")
                continue
            err = (out.float() - ref.float()).abs().max().item()
            # Triton's fp32 tl.dot runs in tf32 unless told otherwise: 10 mantissa bits
            tol = (1e-4 if backend == "cuda" else 5e-3) * max(1.0, ref.abs().max().item())
            ok = err <= tol
            failures += not ok
            print(f"{op:<26} {backend:<7} {case.id():<40} max error {err:.2e} {'ok' if ok else 'TOO LARGE'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
