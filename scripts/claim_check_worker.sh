#!/usr/bin/env bash
# One worker of the claim check on this project's CPU machines, resumable across sessions
# (README "The claim check: what runs"). Usage, from the repository root:
#
#   nohup scripts/claim_check_worker.sh 1 >> ../claim-check-core1.log 2>&1 &   # a worker on core 1
#   nohup scripts/claim_check_worker.sh 0 >> ../claim-check-core0.log 2>&1 &   # and one on core 0
#   scripts/claim_check_worker.sh sync        # copy finished runs back here and rebuild the reports
#   scripts/claim_check_worker.sh prepare     # only set up the worktree (the workers do it themselves)
#
# Every run of the claim check comes from one commit's training code (CLAIM_CHECK_COMMIT, the
# commit its first runs used), so the runs train in a git worktree frozen at that commit
# (CLAIM_CHECK_TREE), with this checkout's .venv. The worktree starts from this checkout's
# committed run files, so finished runs are skipped (the run ids make a restart resume exactly);
# the per-run locks split the runs between workers on different cores; one torch thread each
# (taskset). Steps: the main grid (make ablation), then the controls (make controls), in the
# order of the Makefile's claim-check target.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
commit="${CLAIM_CHECK_COMMIT:-fadefd8df815ff0e7e2c6d913435b59dbd87dbc0}"
tree="${CLAIM_CHECK_TREE:-$here/../l2sweep-claim-check}"
export L2SWEEP_DATA="${L2SWEEP_DATA:-$(cd "$here/.." && pwd)/shared/data}"
py="$here/.venv/bin/python"
folders=(ablation controls-decay-pilot controls-decay controls-scope controls-literal controls-dropout
         controls-small-data)

prepare() {
  if [ ! -e "$tree/.git" ]; then
    git -C "$here" worktree add --detach "$tree" "$commit"
  fi
  [ "$(git -C "$tree" rev-parse HEAD)" = "$commit" ] || { echo "$tree is not at $commit" >&2; exit 2; }
  for name in "${folders[@]}"; do  # resume from what is committed here (never overwrite newer runs there)
    if ls "$here/results/$name/runs/"*.json > /dev/null 2>&1; then
      mkdir -p "$tree/results/$name/runs"
      cp -n "$here/results/$name/runs/"*.json "$tree/results/$name/runs/"
    fi
  done
  # results are outputs: the commit's code would count changed result files as a dirty tree
  git -C "$tree" ls-files results/ | xargs -r git -C "$tree" update-index --skip-worktree
}

sync_back() {
  for name in "${folders[@]}"; do
    ls "$tree/results/$name/runs/"*.json > /dev/null 2>&1 || continue
    mkdir -p "$here/results/$name/runs"
    cp -p "$tree/results/$name/runs/"*.json "$here/results/$name/runs/"  # written atomically there
    [ -f "$tree/results/$name/sweep.json" ] && cp -p "$tree/results/$name/sweep.json" "$here/results/$name/"
    "$here/.venv/bin/l2sweep" report "$here/results/$name" > /dev/null
    echo "$name: $(ls "$here/results/$name/runs/"*.json | wc -l) runs, reports rebuilt"
  done
}

case "${1:-}" in
  sync) sync_back; exit 0 ;;
  prepare) prepare; echo "$tree: at $commit, committed runs copied in"; exit 0 ;;
esac
core="${1:?usage: $0 CORE | prepare | sync}"
prepare
cd "$tree"
export PYTHONPATH="$tree"
run() { echo "=== $(date -Is) [core $core] l2sweep run $*"; taskset -c "$core" "$py" -m cli.main run "$@" || true; }
run experiment=ablation
for name in controls-decay controls-scope controls-literal; do  # the default context's baselines: the main grid's
  mkdir -p "results/$name/runs" && cp -n results/ablation/runs/baseline-s*-*.json "results/$name/runs/" 2>/dev/null || true
done
run experiment=controls-decay-pilot
for scope in conv all; do
  run experiment=controls-decay scope=$scope \
    alpha="$(taskset -c "$core" "$py" scripts/choose_decay.py results/controls-decay-pilot --scope $scope)"
done
for e in controls-scope controls-literal controls-l1 controls-dropout controls-small-data; do run experiment=$e; done
echo "=== $(date -Is) [core $core] all done"
