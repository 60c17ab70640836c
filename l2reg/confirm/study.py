"""A confirmation study on disk: its looks trained through the runner, its decisions replayed
from the run files and the plan alone.

The study folder is an ordinary results folder (runs/*.json, the usual reports) with plan.json
beside it. Nothing but the plan and the runs decides anything: `replay` recomputes every look in
order from them, so a study resumes (or is audited) by running the same command again. Before
the first run the plan must be committed to git when the folder lies in a git checkout (the
pre-registration: the history shows the plan before its runs), and study.json pins the plan's
hash: a folder whose runs started under another plan is refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from l2reg import axes, files
from l2reg.confirm import design as D
from l2reg.confirm.plan import PlanError, load_plan

STATE_FILE = "study.json"
FINAL = ("ok", "diverged")


def design_of(plan: dict) -> D.Design:
    """The decision procedure the plan declares (every number read from the plan)."""
    margins = {float(h["margin_pp"]) for h in plan["hypotheses"]}
    if len(margins) != 1:
        raise PlanError(f"the plan's hypotheses have margins {sorted(margins)}: this procedure tests one margin")
    for key, known in (("spending", D.SPENDING), ("multiplicity", D.MULTIPLICITY)):
        if plan[key]["name"] != known:
            raise PlanError(f"the plan declares {key} {plan[key]['name']!r}: this l2sweep implements {known!r}")
    return D.Design(looks=tuple(plan["seeds"]["looks"]), alpha=float(plan["alpha"]),
                    futility_alpha=float(plan["futility"]["alpha"]), margin=margins.pop(),
                    hypotheses=len(plan["hypotheses"]))


def seeds_of_look(plan: dict, look: int) -> range:
    first = int(plan["seeds"]["first"])
    return range(first, first + int(plan["seeds"]["looks"][look]))


def _setting_key(setting: dict) -> tuple:
    return tuple(str(setting[c]) if c != "alpha" else float(setting[c]) for c in sorted(setting))


@dataclass
class Replay:
    """The procedure replayed over the looks whose runs are all final."""

    state: D.StudyState
    runs: pd.DataFrame  # the study's run records, one row each (report.runs_frame)
    missing: list[str]  # what the next look still needs (arm: seeds), empty when it can be decided
    records: list[dict]


def _arm_runs(runs: pd.DataFrame, plan: dict, arm: dict | None) -> pd.DataFrame:
    if arm is None:
        return runs[axes.baseline_rows(runs)]
    key = _setting_key(arm["setting"])
    match = [_setting_key({c: row[c] for c in arm["setting"]}) == key for _, row in runs.iterrows()]
    return runs[np.array(match, dtype=bool)] if len(runs) else runs


def _complete(arm_runs: pd.DataFrame, seeds: range) -> list[int]:
    """The seeds of `seeds` without a final run in `arm_runs`."""
    final = set(arm_runs[arm_runs["status"].isin(FINAL)]["seed"].astype(int))
    return [s for s in seeds if s not in final]


def replay(folder: Path, plan: dict | None = None) -> Replay:
    """Every look whose runs (every open arm's and the baseline's) are final, decided in order."""
    from l2reg.report import load_records, runs_frame

    plan = plan or load_plan(folder)
    design = design_of(plan)
    records = load_records(folder).records if (Path(folder) / "runs").is_dir() else []
    runs = runs_frame(records) if records else pd.DataFrame(columns=["alpha", "seed", "status", "test_acc"])
    foreign = sorted(set(runs["context"]) - {plan["screen"]["context"]}) if len(runs) else []
    if foreign:
        raise PlanError(f"{folder} holds runs of context(s) {', '.join(foreign)}, not the screen's "
                        f"{plan['screen']['context']}: a study compares like with like; move them out")
    state = D.start(design)
    arms = {a["arm"]: a for a in plan["arms"]}
    base = _arm_runs(runs, plan, None)
    missing: list[str] = []
    while not state.stopped(design):
        seeds = seeds_of_look(plan, state.looks_done)
        open_arms = [plan["hypotheses"][i]["arm"] for i in state.open]
        missing = [f"baseline: {len(_complete(base, seeds))} seed(s)"] if _complete(base, seeds) else []
        missing += [f"{arm}: {len(_complete(_arm_runs(runs, plan, arms[arm]), seeds))} seed(s)"
                    for arm in open_arms if _complete(_arm_runs(runs, plan, arms[arm]), seeds)]
        if missing:
            break
        diffs, diverged = [], []
        base_ok = base[(base["status"] == "ok") & base["seed"].isin(seeds)].set_index("seed")["test_acc"]
        for hypothesis in plan["hypotheses"]:
            arm_runs = _arm_runs(runs, plan, arms[hypothesis["arm"]])
            in_look = arm_runs[arm_runs["seed"].isin(seeds)]
            diverged.append(bool((in_look["status"] == "diverged").any()))
            ok = in_look[in_look["status"] == "ok"].set_index("seed")[hypothesis["metric"]]
            paired = pd.concat([ok, base_ok], axis=1, join="inner").dropna()
            diffs.append((paired.iloc[:, 0] - paired.iloc[:, 1]).to_numpy(dtype=float))
        state = D.look(design, state, diffs, diverged)
    return Replay(state, runs, missing, records)


def _in_git(folder: Path) -> Path | None:
    """The git work tree `folder` lies in, or None."""
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=False)
    except OSError:
        return None
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else None


def _git(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False)


def check_committed(folder: Path) -> str:
    """The commit that registered plan.json: the commit that added it, which must touch nothing
    else and must hold no run of the study (the plan in its own commit, before any run), with
    plan.json unchanged since. Raises PlanError, saying what to do, otherwise; outside a git
    checkout too (an unregistered plan is allowed only on request: run_study's `unregistered`)."""
    tree = _in_git(folder)
    if tree is None:
        raise PlanError(f"{folder} is not in a git checkout, so its plan cannot be registered before its runs: "
                        "commit it in a git checkout, or pass --unregistered (the report then says the plan was "
                        "never registered)")
    path = (Path(folder) / "plan.json").resolve()
    relative = str(path.relative_to(tree.resolve()))
    folder_rel = str(Path(relative).parent)
    add = f"git add -f {relative} && git commit -m 'Plan of the {Path(folder).name} confirmation study'"
    if _git(tree, "ls-files", "--error-unmatch", relative).returncode != 0 or \
            _git(tree, "diff", "--quiet", "HEAD", "--", relative).returncode != 0:
        raise PlanError(f"{path} is not committed as it is: commit the plan alone, before its first run ({add}), "
                        "so the history shows it before any of its runs")
    added = _git(tree, "log", "--diff-filter=A", "--format=%H", "--", relative).stdout.split()
    if not added:
        raise PlanError(f"git has no commit that added {relative}")
    commit = added[-1]  # the oldest: the plan as first registered (a later change would show as another commit)
    touched = [line for line in _git(tree, "show", "--name-only", "--format=", commit).stdout.splitlines() if line]
    if touched != [relative]:
        others = [name for name in touched if name != relative]
        raise PlanError(f"the commit that registered {relative} ({commit[:12]}) also holds {len(others)} other "
                        f"file(s) ({', '.join(others[:3])}): a plan is registered in its own commit, before any run")
    runs_then = _git(tree, "ls-tree", "-r", "--name-only", commit, "--", f"{folder_rel}/runs").stdout.split()
    if runs_then:
        raise PlanError(f"{folder_rel}/runs held {len(runs_then)} run file(s) when its plan was committed "
                        f"({commit[:12]}): a plan comes before its runs")
    if _git(tree, "log", "--format=%H", f"{commit}..HEAD", "--", relative).stdout.strip():
        raise PlanError(f"{relative} was changed after it was registered in {commit[:12]}: a declared plan is never "
                        "edited")
    return commit


def pin_plan(folder: Path, plan: dict, unregistered: bool = False) -> dict:
    """study.json: the plan hash the runs are made under and the commit that registered the plan.
    Written once, before the first run (runs/ must hold none yet); afterwards a plan with another
    hash is refused, and a registered study is checked against git at every start."""
    path = Path(folder) / STATE_FILE
    if path.exists():
        pinned = files.read_json(path)
        if pinned.get("plan_hash") != plan["hash"]:
            raise PlanError(f"{folder}: its runs were started under plan {str(pinned.get('plan_hash'))[:12]}, and "
                            f"plan.json now has {plan['hash'][:12]}: a changed plan is refused")
        if pinned.get("plan_commit") and check_committed(folder) != pinned["plan_commit"]:
            raise PlanError(f"{folder}: plan.json was registered in {pinned['plan_commit'][:12]}, but git now shows "
                            "another commit registering it: the history was rewritten")
        return pinned
    existing = files.run_files(Path(folder) / "runs") if (Path(folder) / "runs").is_dir() else []
    if existing:
        raise PlanError(f"{folder}/runs already holds {len(existing)} run file(s) but no study.json: a study starts "
                        "from an empty folder with its plan, never from runs made before it")
    pinned = {"plan_hash": plan["hash"], "plan_commit": None if unregistered else check_committed(folder)}
    files.write_json_atomic(path, pinned)
    return pinned


def look_overrides(plan: dict, folder: Path, look: int, open_arms: Sequence[str],
                   extra: Sequence[str]) -> list[list[str]]:
    """One `l2sweep run` override list per open arm for a look (seeds of the look; the baseline
    comes with each: every sweep plans it)."""
    seeds = seeds_of_look(plan, look)
    arms = {a["arm"]: a for a in plan["arms"]}
    folder = Path(folder)
    common = [f"name={folder.name}", f"results_dir={folder.parent}", f"seed=range({seeds.start},{seeds.stop})",
              *extra]
    return [[*arms[arm]["overrides"], *common] for arm in open_arms]


def merge_plans(plans: Sequence):
    """One runner.SweepPlan of several (each arm's sweep), its runs deduplicated (the baselines they
    share), so that one invocation trains a whole look with every worker busy."""
    from l2reg import runner

    planned, seen = [], set()
    for plan in plans:
        for run in plan.planned:
            if run.run_id not in seen:
                seen.add(run.run_id)
                planned.append(run)
    planned.sort(key=lambda run: not run.is_baseline)  # baselines first, as one sweep plans them
    overrides = [item for index, plan in enumerate(plans) for item in ([] if index == 0 else ["+"]) + plan.overrides]
    return runner.SweepPlan(overrides, [point for plan in plans for point in plan.points], planned, plans[0].device,
                            plans[0].results_dir)


def run_study(folder: Path, *, extra: Sequence[str] = (), progress: Callable | None = None,
              messages: Callable | None = None, max_looks: int | None = None, config_dir: Path | None = None,
              unregistered: bool = False) -> Replay:
    """Train look after look until the stopping rule (or `max_looks` more looks) and return the
    replay. Runs that fail stop the loop (run the command again: failed runs are retried)."""
    from l2reg import runner

    folder = Path(folder)
    plan = load_plan(folder)
    pin_plan(folder, plan, unregistered)
    say = messages or (lambda kind, text: None)
    done = 0
    while True:
        result = replay(folder, plan)
        design = design_of(plan)
        if result.state.stopped(design) or (max_looks is not None and done >= max_looks):
            return result
        look = result.state.looks_done
        open_arms = [plan["hypotheses"][i]["arm"] for i in result.state.open]
        say("note", f"look {look + 1} of {len(design.looks)}: seeds {seeds_of_look(plan, look).start}.."
                    f"{seeds_of_look(plan, look).stop - 1} of {', '.join(open_arms)} and the baseline")
        plans = [runner.plan_sweep(overrides, config_dir) for overrides in look_overrides(plan, folder, look,
                                                                                         open_arms, extra)]
        merged = merge_plans(plans)
        outcome = runner.run_sweep(merged, progress=progress, messages=messages)
        done += 1
        if outcome.interrupted or outcome.not_ok and any(r["status"] == "failed" for r in outcome.not_ok):
            return replay(folder, plan)
