#!/usr/bin/env bash
# One worker of the claim check on this project's CPU machines, resumable across sessions
# (README "The claim check: what runs"). Usage, from the repository root:
#
#   nohup scripts/claim_check_worker.sh 1 >> ../claim-check-core1.log 2>&1 &   # a worker on core 1
#   nohup scripts/claim_check_worker.sh 0 >> ../claim-check-core0.log 2>&1 &   # and one on core 0
#   scripts/claim_check_worker.sh sync        # copy finished runs back here, rebuild the reports and
#                                             # results/claim-check.md (make overview)
#   scripts/claim_check_worker.sh prepare     # only set up the worktree (the workers do it themselves)
#   scripts/claim_check_worker.sh 0 controls-epochs   # one step only (here: the 20-epoch control)
#   scripts/claim_check_worker.sh 1 confirm            # the confirmation study (results/confirm-accuracy/)
#
# (The frozen commit has experiment=controls-l1 for the L1 half of controls-literal; later commits
# declare both halves as point sets of one experiment.)
# Every run of the claim check comes from one commit's training code (CLAIM_CHECK_COMMIT, the
# commit its first runs used), so the runs train in a git worktree frozen at that commit
# (CLAIM_CHECK_TREE), with this checkout's .venv. The worktree starts from this checkout's
# committed run files, so finished runs are skipped (the run ids make a restart resume exactly);
# the per-run locks split the runs between workers on different cores; one torch thread each
# (taskset). Steps: the main grid (make ablation), then the controls (make controls), in the
# order of the Makefile's claim-check target.
# The confirmation study (`confirm`) trains in a second worktree (CONFIRM_TREE), frozen at the
# commit that registered its plan: its runs all come from the code the plan was made with, and
# `l2sweep confirm run` there checks the registration (the plan alone in that commit, before any
# run). Each worker trains its share of a look (per-run locks), waits for the other's, replays
# the look and goes on to the next, until the study's stopping rule.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
commit="$(git -C "$here" rev-parse --verify "${CLAIM_CHECK_COMMIT:-fadefd8df815ff0e7e2c6d913435b59dbd87dbc0}^{commit}")"
tree="${CLAIM_CHECK_TREE:-$here/../l2sweep-claim-check}"
if [ -z "${L2SWEEP_DATA:-}" ]; then  # as the Makefile: ../shared/data where it exists, else ./data
  if [ -d "$here/../shared/data/MNIST/raw" ]; then L2SWEEP_DATA="$(cd "$here/../shared/data" && pwd)"
  else L2SWEEP_DATA="$here/data"; fi
fi
export L2SWEEP_DATA
py="$here/.venv/bin/python"
folders=(ablation controls-decay-pilot controls-decay controls-scope controls-literal controls-dropout
         controls-small-data controls-epochs)
study=confirm-accuracy
confirm_tree="${CONFIRM_TREE:-$here/../l2sweep-confirm}"

prepare() {  # under a lock: two workers started together must not both create the worktree
  exec 9> "$here/.git/claim-check.lock"
  flock 9
  if [ ! -e "$tree/.git" ]; then
    git -C "$here" worktree prune  # a registered worktree whose folder is gone
    git -C "$here" worktree add --detach "$tree" "$commit"
  fi
  [ "$(git -C "$tree" rev-parse HEAD)" = "$commit" ] || { echo "$tree is not at $commit" >&2; exit 2; }
  for name in "${folders[@]}"; do  # resume from what is committed here (never overwrite newer files there)
    if ls "$here/results/$name/runs/"*.json > /dev/null 2>&1; then
      mkdir -p "$tree/results/$name/runs"
      cp -n "$here/results/$name/runs/"*.json "$tree/results/$name/runs/" || true  # coreutils 9.2+: 1 on skips
      [ -f "$here/results/$name/sweep.json" ] && { cp -n "$here/results/$name/sweep.json" "$tree/results/$name/" || true; }
    fi
  done
  # results are outputs: the commit's code would count changed result files as a dirty tree
  git -C "$tree" ls-files results/ | xargs -r git -C "$tree" update-index --skip-worktree
  flock -u 9
}

prepare_confirm() {  # the worktree at the plan's registering commit, with the runs finished so far
  exec 9> "$here/.git/claim-check.lock"
  flock 9
  local plan="results/$study/plan.json" registered
  registered="$(git -C "$here" log --diff-filter=A --format=%H -- "$plan" | tail -1)"
  [ -n "$registered" ] || { echo "$plan is not committed: commit it alone first" >&2; exit 2; }
  if [ ! -e "$confirm_tree/.git" ]; then
    git -C "$here" worktree prune
    git -C "$here" worktree add --detach "$confirm_tree" "$registered"
  fi
  [ "$(git -C "$confirm_tree" rev-parse HEAD)" = "$registered" ] || { echo "$confirm_tree is not at $registered" >&2; exit 2; }
  if ls "$here/results/$study/runs/"*.json > /dev/null 2>&1; then
    mkdir -p "$confirm_tree/results/$study/runs"
    cp -n "$here/results/$study/runs/"*.json "$confirm_tree/results/$study/runs/" || true
  fi
  for name in study.json sweep.json; do
    [ -f "$here/results/$study/$name" ] && { cp -n "$here/results/$study/$name" "$confirm_tree/results/$study/" || true; }
  done
  flock -u 9
}

sync_back() {
  for name in "${folders[@]}"; do
    ls "$tree/results/$name/runs/"*.json > /dev/null 2>&1 || continue
    mkdir -p "$here/results/$name/runs"
    # run files are written atomically there (a dot-named temporary, then a rename): *.json never
    # sees half a file; a committed run file is never replaced
    cp -n -p "$tree/results/$name/runs/"*.json "$here/results/$name/runs/" || true
    # sweep.json there started from the committed one (prepare) and only gained invocations
    if [ -f "$tree/results/$name/sweep.json" ]; then cp -p "$tree/results/$name/sweep.json" "$here/results/$name/"; fi
    # the frozen commit predates code fingerprints: each run gets its commit's (l2reg/fingerprint.py)
    "$py" "$here/scripts/backfill_fingerprints.py" "$here/results/$name" > /dev/null
    "$here/.venv/bin/l2sweep" report "$here/results/$name" > /dev/null
    echo "$name: $(ls "$here/results/$name/runs/"*.json | wc -l) runs, reports rebuilt"
  done
  if ls "$confirm_tree/results/$study/runs/"*.json > /dev/null 2>&1; then
    mkdir -p "$here/results/$study/runs"
    cp -n -p "$confirm_tree/results/$study/runs/"*.json "$here/results/$study/runs/" || true
    for name in study.json sweep.json; do
      [ -f "$confirm_tree/results/$study/$name" ] && cp -p "$confirm_tree/results/$study/$name" "$here/results/$study/"
    done
    "$py" "$here/scripts/backfill_fingerprints.py" "$here/results/$study" > /dev/null
    "$here/.venv/bin/l2sweep" report "$here/results/$study" > /dev/null
    "$here/.venv/bin/l2sweep" confirm report "$here/results/$study" > /dev/null
    echo "$study: $(ls "$here/results/$study/runs/"*.json | wc -l) runs, reports and confirmation.md rebuilt"
  fi
}

case "${1:-}" in
  sync) sync_back; make -C "$here" --no-print-directory overview > /dev/null
        echo "results/claim-check.md rebuilt"; exit 0 ;;
  prepare) prepare; echo "$tree: at $commit, committed runs copied in"; exit 0 ;;
esac
core="${1:?usage: $0 CORE [controls-epochs | confirm] | prepare | sync}"
step="${2:-all}"
if [ "$step" = confirm ]; then
  prepare_confirm
  cd "$confirm_tree"
  export PYTHONPATH="$confirm_tree"
  echo "=== $(date -Is) [core $core] l2sweep confirm run results/$study"
  taskset -c "$core" "$py" -m cli.main confirm run "results/$study" || true
  echo "=== $(date -Is) [core $core] confirm: stopped"; exit 0
fi
prepare
cd "$tree"
export PYTHONPATH="$tree"
run() { echo "=== $(date -Is) [core $core] l2sweep run $*"; taskset -c "$core" "$py" -m cli.main run "$@" || true; }
if [ "$step" = controls-epochs ]; then
  # The longer-training control: the baseline, the main grid's top 3 settings by paired gain among
  # those not called worse (the confirmation study's candidate rule) and the article's case
  # (both 1e-4 constant), at 20 epochs, 10 seeds, its own context. Not a cartesian product, so two
  # sweeps into one folder sharing their baselines (same run ids). The commit frozen for the claim
  # check has no experiment file for it: every key is given here. The two workers start the two
  # sweeps in opposite orders, so both advance seed by seed together and share the baselines' locks.
  exponential=(alpha=1e-3,1e-2 target=activations schedule=exponential)
  constant=(alpha=1e-4 target=activations,both schedule=constant)
  common=(name=controls-epochs seeds=10 train.epochs=20)
  if [ $((core % 2)) -eq 0 ]; then first=("${exponential[@]}"); second=("${constant[@]}")
  else first=("${constant[@]}"); second=("${exponential[@]}"); fi
  run "${common[@]}" "${first[@]}"
  run "${common[@]}" "${second[@]}"
  echo "=== $(date -Is) [core $core] controls-epochs done"; exit 0
fi
[ "$step" = all ] || { echo "unknown step: $step (all | controls-epochs | confirm)" >&2; exit 2; }
run experiment=ablation
for name in controls-decay controls-scope controls-literal; do  # the default context's baselines: the main grid's
  mkdir -p "results/$name/runs"
  cp -n results/ablation/runs/baseline-s*-*.json "results/$name/runs/" 2>/dev/null || true
done
run experiment=controls-decay-pilot
for scope in conv all; do
  # its own statement, so that a failure (an unfinished pilot) stops this worker, as `make controls` does
  decay="$(taskset -c "$core" "$py" scripts/choose_decay.py results/controls-decay-pilot --scope $scope)"
  run experiment=controls-decay scope=$scope alpha="$decay"
done
for e in controls-scope controls-literal controls-l1 controls-dropout controls-small-data; do run experiment=$e; done
echo "=== $(date -Is) [core $core] all done"
