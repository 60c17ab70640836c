"""`l2sweep confirm` end to end in a git repository of its own: a tiny real screen, a plan chosen
from it, the pre-registration rules (the plan committed alone, before any run, and never changed),
a study trained look by look to its stopping rule on tiny IDX files, and its report replayed from
the run files against the decision procedure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_mnist
from typer.testing import CliRunner

from l2reg import files, runner
from l2reg.cli.main import app
from l2reg.confirm import design as D
from l2reg.confirm.plan import plan_hash

QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100", "train.compile=false"]
pytestmark = pytest.mark.usefixtures("wide_console")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """(repo, data root, screen folder): a finished 3-seed screen of two settings in a git repo."""
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q")
    (repo / "README").write_text("a study repo\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "start")
    data = make_tiny_mnist(tmp_path_factory.mktemp("data"))
    runner.run_sweep(["alpha=0.0,1e-3,3e-2", "target=both", "seeds=3", f"data.root={data}",
                      f"results_dir={repo / 'results'}", "name=screen", *QUICK])
    return repo, data, repo / "results" / "screen"


def plan(repo: Path, screen: Path, name: str, *extra: str):
    return invoke("confirm", "plan", screen, "--name", name, "--k", "1", "--looks", "5,6",
                  "--results-dir", repo / "results", *extra)


def test_a_plan_is_chosen_by_its_rule_and_refused_until_committed_alone(screen):
    repo, data, folder = screen
    result = plan(repo, folder, "unregistered-study")
    assert result.exit_code == 0, result.output
    study = repo / "results" / "unregistered-study"
    written = json.loads((study / "plan.json").read_text())
    summary = pd.read_csv(folder / "summary.csv")
    best = summary[summary["alpha"] != 0].sort_values("delta_pp", ascending=False).iloc[0]
    assert [h["screen"]["delta_pp"] for h in written["hypotheses"]] == [pytest.approx(best["delta_pp"])]
    assert written["seeds"] == {**written["seeds"], "first": 1000, "looks": [5, 6]}
    assert written["hash"] == plan_hash(written) and "git add -f" in result.output
    assert written["futility"]["alpha"] == 0.025 and written["spending"]["name"] == D.SPENDING

    refused = invoke("confirm", "run", study, f"data.root={data}")
    assert refused.exit_code == 2 and "is not committed as it is" in refused.output
    assert not (study / "runs").exists() and not (study / "study.json").exists()

    (repo / "notes.txt").write_text("not the plan\n")
    git(repo, "add", "-f", str(study / "plan.json"), "notes.txt")
    git(repo, "commit", "-q", "-m", "plan and notes")
    refused = invoke("confirm", "run", study, f"data.root={data}")
    assert refused.exit_code == 2 and "also holds 1 other file(s) (notes.txt)" in refused.output

    too_late = plan(repo, folder, "runs-first")
    assert too_late.exit_code == 0
    late = repo / "results" / "runs-first"
    (late / "runs").mkdir()
    shutil.copy(next((folder / "runs").glob("baseline-*.json")), late / "runs")
    git(repo, "add", "-f", str(late / "plan.json"))
    git(repo, "commit", "-q", "-m", "plan")
    refused = invoke("confirm", "run", late, f"data.root={data}")
    assert refused.exit_code == 2 and "a study starts from an empty folder" in refused.output


def test_a_registered_study_runs_to_its_stopping_rule_and_its_report_replays_the_procedure(screen):
    repo, data, folder = screen
    assert plan(repo, folder, "study").exit_code == 0
    study = repo / "results" / "study"
    git(repo, "add", "-f", str(study / "plan.json"))
    git(repo, "commit", "-q", "-m", "Plan of the study")
    registered = git(repo, "rev-parse", "HEAD")

    result = invoke("confirm", "run", study, f"data.root={data}")
    assert result.exit_code == 0, result.output
    assert files.read_json(study / "study.json")["plan_commit"] == registered
    written = json.loads((study / "plan.json").read_text())
    runs = pd.read_csv(study / "runs.csv")
    assert set(runs["seed"]) <= set(range(1000, 1006)) and set(runs["status"]) == {"ok"}

    # the decisions replayed by hand from runs.csv with the design the plan declares
    design = D.Design(looks=(5, 6), alpha=written["alpha"], futility_alpha=written["futility"]["alpha"],
                      margin=written["hypotheses"][0]["margin_pp"], hypotheses=1)
    arm = written["arms"][0]["setting"]
    base = runs[runs["alpha"] == 0].set_index("seed")["test_acc"]
    mine = runs[runs["alpha"] == arm["alpha"]].set_index("seed")["test_acc"]
    state = D.start(design)
    while not state.stopped(design):
        seeds = range(1000, 1000 + design.looks[state.looks_done])
        state = D.look(design, state, [np.array([mine[s] - base[s] for s in seeds])])
    decision = state.hypotheses[0].decision
    trained = 5 if state.looks_done == 1 else 6
    assert sorted(set(runs["seed"])) == list(range(1000, 1000 + trained))

    report = (study / "confirmation.md").read_text()
    out = json.loads((study / "confirmation.json").read_text())
    assert out["plan_hash"] == written["hash"] and written["hash"][:16] in report
    assert f"registered in commit {registered[:10]}" in report
    assert out["hypotheses"][0]["decision"] == decision
    assert out["hypotheses"][0]["looks"][-1]["n"] == trained
    assert len(out["churn"]) == 1 and out["churn"][0]["n"] == trained

    # nothing to do: the study has stopped; the same command says so and trains nothing
    again = invoke("confirm", "run", study, f"data.root={data}")
    assert again.exit_code == 0 and len(pd.read_csv(study / "runs.csv")) == len(runs)

    # a changed plan is refused, by its hash and, re-hashed, by the hash its runs were made under
    edited = {**written, "alpha": 0.05}
    (study / "plan.json").write_text(json.dumps(edited))
    refused = invoke("confirm", "run", study, f"data.root={data}")
    assert refused.exit_code == 2 and "no longer matches its hash" in refused.output
    edited["hash"] = plan_hash(edited)
    (study / "plan.json").write_text(json.dumps(edited))
    for command in (["run", study, f"data.root={data}"], ["report", study]):
        refused = invoke("confirm", *command)
        assert refused.exit_code == 2, refused.output
        assert "changed plan" in refused.output or "no report of a changed plan" in refused.output


def test_a_plan_outside_git_needs_unregistered(tmp_path, screen):
    _, data, folder = screen
    result = invoke("confirm", "plan", folder, "--name", "loose", "--k", "1", "--looks", "5,6",
                    "--results-dir", tmp_path)
    assert result.exit_code == 0, result.output
    refused = invoke("confirm", "run", tmp_path / "loose", f"data.root={data}")
    assert refused.exit_code == 2 and "not in a git checkout" in refused.output and "--unregistered" in refused.output
