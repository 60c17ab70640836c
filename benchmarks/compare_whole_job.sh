#!/usr/bin/env bash
# The card's smallest real job, timed as whole processes back to back, in one go (docs/performance.md):
# the baseline plus alpha=1e-4 target=both, 5 epochs each on full MNIST, seed 1, by
#   (1) l2sweep (one process, both runs: `l2sweep run alpha=1e-4 target=both seed=1`),
#   (2) Keras on TensorFlow (benchmarks/keras_reference.py, one process per run, as a Keras user runs it),
#   (3) the plain PyTorch DataLoader loop (l2reg.bench.plain_whole_run, one process per run).
# Needs L2SWEEP_DATA and, for (2), KERAS_PYTHON: a python with tensorflow-cpu and keras.
# Optional L2SWEEP_BEFORE: a checkout of an earlier commit (git worktree), whose l2sweep is timed
# first, the same way, so that a speed change is measured in the same go as the references.
# Usage: KERAS_PYTHON=/path/to/venv/bin/python bash benchmarks/compare_whole_job.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-/tmp/compare-whole-job}")  # absolute: the "before" run works in another folder
DATA=$(realpath "${L2SWEEP_DATA:?set L2SWEEP_DATA to the folder holding MNIST/raw/}")
export L2SWEEP_DATA="$DATA"
if [ -n "${L2SWEEP_BEFORE:-}" ] && ! git -C "$L2SWEEP_BEFORE" rev-parse --short HEAD > /dev/null 2>&1; then
  echo "L2SWEEP_BEFORE=$L2SWEEP_BEFORE is not a git checkout of l2sweep (make one: git worktree add DIR COMMIT)" >&2
  exit 2
fi
BIN=${BIN:-.venv/bin}
rm -rf "$OUT" && mkdir -p "$OUT"
now() { date +%s.%N; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -Is)" | tee "$OUT/summary.txt"

before_s=-
if [ -n "${L2SWEEP_BEFORE:-}" ]; then  # cwd there: `-m cli.main` must import that checkout's code
  python_abs="$(cd "$BIN" && pwd)/python"
  start=$(now)
  (cd "$L2SWEEP_BEFORE" && "$python_abs" -m cli.main run alpha=1e-4 target=both seed=1 name=job \
     "results_dir=$OUT/results-before") > "$OUT/l2sweep-before.log" 2>&1
  before_s=$(echo "$(now) - $start" | bc)
fi

start=$(now)
"$BIN/l2sweep" run alpha=1e-4 target=both seed=1 name=job "results_dir=$OUT/results" > "$OUT/l2sweep.log" 2>&1
l2sweep_s=$(echo "$(now) - $start" | bc)

keras_s=-
if [ -n "${KERAS_PYTHON:-}" ]; then
  start=$(now)
  for alpha in 0 1e-4; do
    "$KERAS_PYTHON" benchmarks/keras_reference.py --data "$DATA" --alpha $alpha --seed 1 >> "$OUT/keras.jsonl" 2> "$OUT/keras.err"
  done
  keras_s=$(echo "$(now) - $start" | bc)
fi

start=$(now)
for alpha in 0.0 1e-4; do
  "$BIN/python" -c "
import json, sys
from dataclasses import replace
import torch
from l2reg.bench import plain_whole_run
from l2reg.compose import expand_and_compose
from l2reg.device import configure_device
[(_, cfg)] = expand_and_compose(['alpha=$alpha', 'target=both', 'seed=1'])
configure_device(torch.device('cpu'), False)
print(json.dumps(plain_whole_run(cfg, torch.device('cpu'))))" >> "$OUT/plain.jsonl"
done
plain_s=$(echo "$(now) - $start" | bc)

{
  echo "| the two-run job, whole processes | wall s | l2sweep is x faster |"
  echo "| --- | ---: | ---: |"
  printf "| l2sweep run (1 process, 2 runs) | %.1f | 1.00 |\n" "$l2sweep_s"
  [ "$before_s" != "-" ] && printf "| l2sweep at %s (1 process, 2 runs) | %.1f | %.2f |\n" \
    "$(git -C "$L2SWEEP_BEFORE" rev-parse --short HEAD)" "$before_s" "$(echo "$before_s / $l2sweep_s" | bc -l)"
  [ "$keras_s" != "-" ] && printf "| Keras %s on TensorFlow %s (2 processes) | %.1f | %.2f |\n" \
    "$(sed -n 's/.*"keras": "\([^"]*\)".*/\1/p' "$OUT/keras.jsonl" | head -1)" \
    "$(sed -n 's/.*"tensorflow": "\([^"]*\)".*/\1/p' "$OUT/keras.jsonl" | head -1)" \
    "$keras_s" "$(echo "$keras_s / $l2sweep_s" | bc -l)"
  printf "| plain PyTorch DataLoader loop (2 processes) | %.1f | %.2f |\n" "$plain_s" "$(echo "$plain_s / $l2sweep_s" | bc -l)"
} | tee -a "$OUT/summary.txt"
grep -h "test" "$OUT"/*.jsonl >> "$OUT/summary.txt" || true
grep -E "^(baseline|both)" "$OUT/l2sweep.log" >> "$OUT/summary.txt" || true
