#!/usr/bin/env bash
# One-shot GPU check, for a machine with a CUDA GPU where torch (>= 2.11), Triton (>= 3.6), nvcc, pytest and
# pytest-benchmark are installed and nothing can be downloaded. In one run, well under 8 minutes on an H200:
#   1. build the extension (CUDA kernels included when csrc/cuda has sources),
#   2. the GPU and Triton tests (markers gpu, triton) on the real device,
#   3. compute-sanitizer (memcheck) over one small case per op and GPU backend, where the tool works,
#   4. the GPU benchmarks (fp16: every layer case at batch 1 and 256, both whole networks at 1, 32 and 256,
#      against eager and CUDA graphs; torch.compile incl. max-autotune and bf16 on the quick selection),
# writing logs, the benchmark JSON and a markdown summary into the folder given as the first argument, and
# printing a short table last. A failing step is reported and the next one still runs; the exit status is
# non-zero if any step failed.
#
#   bash bench/gpu_check.sh OUT_DIR
set -u
out=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to torch here; this script needs one (nothing was run)." >&2
  exit 2
fi

# Everything must fit one call of a lent machine (8 minutes here, 10 at most): each step's limit is cut to
# what is left of BUDGET_S, and a step with under 20 s left is skipped and reported as such.
budget=${BUDGET_S:-470}
logs="$out/logs"
mkdir -p "$logs"
status="$out/steps.txt"
: > "$status"
failed=0
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/logs/NAME.log, record the outcome
  local name=$1 limit=$2; shift 2
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    printf '%-14s %-34s\n' "$name" "SKIPPED (time budget spent)" | tee -a "$status"; failed=1; return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  local start=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 0 ] || { verdict="FAILED (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))"; failed=1; }
  printf '%-14s %-34s %4ss\n' "$name" "$verdict" "$((SECONDS - start))" | tee -a "$status"
  tail -n 5 "$logs/$name.log"
}

# The toolkit root: nvcc's own directory's parent (setup.py also looks, but says so only in the log).
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null; then
  export CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

step build 210 $PY -m pip install --no-build-isolation --no-deps --no-index -e .
step tests 100 $PY -m pytest tests -m "gpu or triton" -q -p no:cacheprovider
if command -v compute-sanitizer >/dev/null; then
  step sanitize 60 compute-sanitizer --tool memcheck --error-exitcode 3 $PY bench/sanitize_cases.py
else
  printf '%-14s %s\n' sanitize "skipped: compute-sanitizer is not installed" | tee -a "$status"
fi
# fp16: every layer case at batch 1 and 256, the networks at 1, 32 and 256, against eager, and CUDA graphs at
# batch 1 (fastconv.graphs.inference_graph, torch.compile's reduce-overhead mode). torch.compile (default,
# freezing, max-autotune) compiles for minutes per network and batch, so it gets MobileNetV2 at batch 1 only
# (--bench-quick); bf16 the quick selection. Every step's limit is its own; the sum is
# cut to what is left of the budget.
step bench 150 $PY -m pytest bench --benchmark-only --bench-device cuda --bench-dtype float16 -q \
  --bench-baselines eager,graph -p no:cacheprovider --benchmark-json="$out/bench.json"
step bench-compile 60 $PY -m pytest bench --benchmark-only --bench-device cuda --bench-dtype float16 -q \
  --bench-quick --bench-baselines eager,compile,autotune -p no:cacheprovider \
  --benchmark-json="$out/bench-compile.json"
step bench-bf16 30 $PY -m pytest bench --benchmark-only --bench-device cuda --bench-dtype bfloat16 -q \
  --bench-quick --bench-baselines eager,graph -p no:cacheprovider --benchmark-json="$out/bench-bf16.json"

# The summary: when, where, what, then the report of the benchmark JSON.
{
  echo "# GPU check"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  echo "- versions: $($PY -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}")' 2>&1)"
  echo
  echo '```'
  cat "$status"
  echo '```'
  echo
  for json in "$out"/bench*.json; do  # a chart for the main run only: few files come back from the machine
    [ -s "$json" ] && $PY bench/report.py "$json" $([ "$json" = "$out/bench.json" ] && echo --png "$out/bench.png")
  done
} > "$out/summary.md" 2>> "$logs/report.log"
# What comes back from a lent machine is a few files: the logs travel as one archive.
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$logs"

echo
echo "== steps"
cat "$status"
if [ -s "$out/bench.json" ]; then
  echo "== speedups (geometric means; full tables in summary.md)"
  $PY bench/report.py "$out/bench.json" | sed -n '/^## Summary/,/^## [^S]/p' | head -n 30
fi
exit $failed
