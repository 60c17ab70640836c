#!/usr/bin/env bash
# All GPU checks of the speed issue in one command, for a lent GPU machine (the `device` tool):
# the tests marked `gpu`, `l2sweep bench`, and the full claim check (`experiment=ablation`) on
# CUDA, each under its own time limit so that one slow step cannot eat the device time of the
# others. Results go to $OUT (the device tool's return folder), at most 8 files.
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
sweep_limit_s=${CHECK_SWEEP_LIMIT_S:-300}  # a sweep stopped here keeps its finished runs
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
    timeout 180 python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$out/pytest-gpu.txt" 2>&1
    echo "gpu tests: exit $? ($(tail -1 "$out/pytest-gpu.txt"))"
fi

timeout 180 "${l2sweep[@]}" bench "train.device=$device" --out "$out/bench.json" > "$out/bench.txt" 2>&1
echo "bench: exit $?"; cat "$out/bench.txt"

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
