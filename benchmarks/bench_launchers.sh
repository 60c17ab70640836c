#!/usr/bin/env bash
# launcher=local against one process, on this machine's CPU, for the section of
# docs/performance.md "`launcher=local`: worker processes against one process (CPU)":
# the same small real-MNIST sweep (4 runs: alpha 0 and 1e-4 x seeds 0, 1; 1 epoch on the first
# 20,000 training images), whole `l2sweep run` processes, interleaved twice (A B A B) so the
# machine's drift cancels:
#   A) launcher=inprocess: one process, torch threads = the available cores (default),
#   B) launcher=local: one worker per available core, one thread each (threads_per_worker=1).
# Prints wall seconds per command, the sum of the runs' training seconds, and B's speed-up.
# Needs the machine to itself (every core free) and L2SWEEP_DATA (real MNIST).
# Usage: bash benchmarks/bench_launchers.sh [OUT_DIR]      (EPOCHS=1 TRAIN_LIMIT=20000 SEEDS=2 to change)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${L2SWEEP_DATA:?set L2SWEEP_DATA to the folder holding MNIST/raw/}"
OUT=${1:-/tmp/l2sweep-bench-launchers}
BIN=${BIN:-.venv/bin}
CORES=$("$BIN/python" -c 'import os; print(len(os.sched_getaffinity(0)))')
rm -rf "$OUT" && mkdir -p "$OUT"
SWEEP=(alpha=0.0,1e-4 "seeds=${SEEDS:-2}" "train.epochs=${EPOCHS:-1}" "data.train_limit=${TRAIN_LIMIT:-20000}"
       "results_dir=$OUT")
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $CORES cores available; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -Is)" \
  | tee "$OUT/summary.txt"
for pass in 1 2; do
  for mode in inprocess local; do
    extra=()
    [ "$mode" = local ] && extra=(launcher=local "launcher.n_jobs=$CORES" launcher.threads_per_worker=1)
    start=$(date +%s.%N)
    "$BIN/l2sweep" run "${SWEEP[@]}" "name=$mode-$pass" "${extra[@]}" > "$OUT/$mode-$pass.log" 2>&1
    end=$(date +%s.%N)
    echo "$mode $pass $start $end" >> "$OUT/times.txt"
  done
done
"$BIN/python" - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
walls, commands = {}, {}
for line in (out / "times.txt").read_text().splitlines():
    mode, pass_, start, end = line.split()
    runs = [json.loads(p.read_text()) for p in (out / f"{mode}-{pass_}" / "runs").glob("*.json")]
    train = sum(r["train_seconds"] for r in runs)
    span = max(r["finished_unix"] for r in runs) - min(r["started_unix"] for r in runs)
    walls.setdefault(mode, []).append(span)
    commands.setdefault(mode, []).append(float(end) - float(start))
    acc = " ".join(f"{r['metrics']['test_acc']:.2f}" for r in sorted(runs, key=lambda r: r["run_id"]))
    print(f"{mode:9} pass {pass_}: command {float(end) - float(start):6.1f} s wall, runs {span:6.1f} s from first "
          f"start to last end, training {train:6.1f} s summed over {len(runs)} runs; test acc {acc}")
a, b = statistics.mean(walls["inprocess"]), statistics.mean(walls["local"])
c, d = statistics.mean(commands["inprocess"]), statistics.mean(commands["local"])
print(f"launcher=local against one process (mean of {len(walls['local'])} passes): {a / b:.2f}x on the runs "
      f"(first start to last end: {a:.1f} s against {b:.1f} s), {c / d:.2f}x on the whole command "
      f"({c:.1f} s against {d:.1f} s: imports, data, worker start-up and reports included)")
PY
