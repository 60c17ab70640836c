#!/usr/bin/env bash
# All GPU checks of the speed issue in one command, for a lent GPU machine (the `device` tool):
# the tests marked `gpu`, `l2sweep bench` (eager, then torch.compile), and the full claim check (`experiment=ablation`) on
# CUDA, each under its own time limit so that one slow step cannot eat the device time of the
# others. Results go to $OUT (the device tool's return folder), 8 files: machine.txt,
# pytest-gpu.txt, bench.txt, bench.json, bench-compile.json, sweep.txt, report.md, sweep.tar.gz.
#
# Prepare here first (the device image lacks hydra/omegaconf/antlr4/submitit and MNIST):
#   make device-kit        # -> .devsite/ (pure-Python packages) and .devdata/ (MNIST, gzipped)
# then call the device tool with carry [".devsite", ".devdata"] and the command
#   bash scripts/device_check.sh
# A local rehearsal on a CPU (plumbing only, minutes):
#   OUT=/tmp/check CHECK_DEVICE=cpu CHECK_EXPERIMENT=smoke bash scripts/device_check.sh
set -uo pipefail
out=${OUT:-results/device-check}
device=${CHECK_DEVICE:-cuda}
experiment=${CHECK_EXPERIMENT:-ablation}
# Time limits (s): together ~9 minutes, leaving device time for a start and a partial rerun.
tests_limit_s=${CHECK_TESTS_LIMIT_S:-60}
bench_limit_s=${CHECK_BENCH_LIMIT_S:-100}
compile_limit_s=${CHECK_COMPILE_LIMIT_S:-120}
sweep_limit_s=${CHECK_SWEEP_LIMIT_S:-240}  # a sweep stopped here keeps its finished runs
mkdir -p "$out"
export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg COLUMNS=160  # rich tables unwrapped
if [ -d .devdata ]; then  # unpack MNIST outside the working tree (torchvision reads raw IDX files)
    export L2SWEEP_DATA=/tmp/l2sweep-mnist
    mkdir -p "$L2SWEEP_DATA/MNIST/raw"
    for f in .devdata/*.gz; do gunzip -c "$f" > "$L2SWEEP_DATA/MNIST/raw/$(basename "$f" .gz)"; done
fi
work=$(mktemp -d)  # sweep folders hold hundreds of files: packed into one archive at the end
l2sweep=(python3 -m cli.main)  # the source tree itself: nothing is pip-installed there

{
    date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"
    python3 -c "import torch, hydra, omegaconf; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
} > "$out/machine.txt" 2>&1
echo "machine: $(tail -1 "$out/machine.txt")"

if [ "$device" = cuda ]; then
    timeout "$tests_limit_s" python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$out/pytest-gpu.txt" 2>&1
    echo "gpu tests: exit $? ($(tail -1 "$out/pytest-gpu.txt"))"
fi

# Eager first (quick, and safe from a slow compilation), then the compiled row on its own, with
# its own reference row: ratios are only compared within one bench process.
timeout "$bench_limit_s" "${l2sweep[@]}" bench "train.device=$device" --no-compile \
    --out "$out/bench.json" > "$out/bench.txt" 2>&1
echo "bench: exit $?"; cat "$out/bench.txt"
largest=$([ "$device" = cuda ] && echo 256 || echo 1)
timeout "$compile_limit_s" "${l2sweep[@]}" bench "train.device=$device" --compile --pack-sizes "$largest" \
    --out "$out/bench-compile.json" >> "$out/bench.txt" 2>&1
echo "bench with torch.compile (pack $largest): exit $?"; tail -12 "$out/bench.txt"

started=$(date +%s.%N)
timeout -s INT "$sweep_limit_s" "${l2sweep[@]}" run "experiment=$experiment" "results_dir=$work" \
    "train.device=$device" > "$out/sweep.txt" 2>&1
rc=$?
seconds=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
tail -25 "$out/sweep.txt"
echo "sweep experiment=$experiment on $device: exit $rc after $seconds s (limit $sweep_limit_s s)" | tee -a "$out/sweep.txt"
name=$(ls "$work" | head -1)
if [ -n "$name" ]; then
    cp "$work/$name/report.md" "$out/report.md" 2>/dev/null
    tar czf "$out/sweep.tar.gz" -C "$work" "$name"
fi
rm -rf "$work"
