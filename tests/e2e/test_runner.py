"""l2reg.runner, the library's entry point, called as a script would call it: a tiny real sweep end
to end with no CLI (no typer, no rich, no sys.argv), what it reports through its two callbacks and
returns, Ctrl-C as a result rather than an error, and the user's errors it raises."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from l2reg import runner
from l2reg.config import ConfigError

QUICK = ["train.batch_size=64", "train.eval_batch_size=100", "train.compile=false", "train.epochs=1"]

SCRIPT = """
import json, sys
from l2reg import runner

log = []
argv = list(sys.argv)
result = runner.run_sweep(json.loads(sys.argv[1]), progress=lambda event, **info: log.append(["progress", event]),
                          messages=lambda kind, text: log.append([kind, text]))
print(json.dumps({"log": log, "argv_untouched": sys.argv == argv,
                  "imported": sorted(m for m in ("typer", "rich", "click") if m in sys.modules),
                  "planned": result.planned, "skipped": result.skipped, "interrupted": result.interrupted,
                  "waited": result.waited, "trained": [r["status"] for r in result.trained],
                  "not_ok": result.not_ok, "report": result.report is not None,
                  "results_dir": str(result.results_dir)}))
"""


def run_script(overrides: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_sweep_end_to_end_in_a_script_without_the_cli(tiny_mnist, tmp_path):
    overrides = ["alpha=0.0,1e-3", "seed=0", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=lib", *QUICK]
    first = run_script(overrides)
    assert first["imported"] == [] and first["argv_untouched"]
    assert (first["planned"], first["skipped"], first["trained"], first["not_ok"]) == (2, 0, ["ok", "ok"], [])
    assert first["report"] and not first["interrupted"] and first["waited"]
    assert first["results_dir"] == str(tmp_path / "lib")
    events = [entry[1] for entry in first["log"] if entry[0] == "progress"]
    assert events[0] == "start" and events[-1] == "end" and events.count("done") == 2 and "epoch" in events
    assert [entry for entry in first["log"] if entry[0] != "progress"] == []  # nothing to say
    assert len(pd.read_csv(tmp_path / "lib" / "runs.csv")) == 2
    assert (tmp_path / "lib" / "report.md").is_file() and (tmp_path / "lib" / "verdict.json").is_file()
    sweep_json = json.loads((tmp_path / "lib" / "sweep.json").read_text())
    assert sweep_json["invocations"][-1]["command"] == ["l2sweep", "run", *overrides]
    assert sweep_json["invocations"][-1]["launcher"]["name"] == "inprocess"

    again = run_script(overrides)  # the same sweep: nothing trains, the note says why
    assert (again["skipped"], again["trained"], again["report"]) == (2, [], True)
    assert [entry for entry in again["log"] if entry[0] != "progress"] == [
        ["note", "2 of 2 runs already done: skipping them"]]


def test_ctrl_c_is_a_result_with_its_notes_after_the_progress_ends(tiny_mnist, tmp_path, monkeypatch):
    import l2reg.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(l2reg.train, "train_pack", interrupted)
    log = []
    result = runner.run_sweep(["alpha=1e-3", "seed=0", f"data.root={tiny_mnist}", f"results_dir={tmp_path}",
                               "name=stop", *QUICK], progress=lambda event, **info: log.append(event),
                              messages=lambda kind, text: log.append((kind, text)))
    assert result.interrupted and result.report is None and result.trained == []
    assert log[-3:] == ["end", ("interrupted", "interrupted: the run(s) in flight are lost; finished runs are kept; "
                                               "the same command resumes (finished runs are skipped)"),
                        ("note", "no run had finished: no reports written")]
    assert not list((tmp_path / "stop" / "runs").glob("*.json"))


def test_the_plan_and_the_errors_a_user_causes(tiny_mnist, tmp_path):
    plan = runner.plan_sweep(["alpha=1e-4,1e-3", "seeds=2", f"data.root={tiny_mnist}", f"results_dir={tmp_path}",
                              "name=p"])
    assert [run.is_baseline for run in plan.planned] == [True, True, False, False, False, False]
    assert plan.results_dir == tmp_path / "p" and plan.launcher.name == "inprocess"
    assert plan.finished() == set() and not (tmp_path / "p").exists()  # planning writes nothing
    assert plan.command(force=True)[-1] == "--force" and plan.command()[:2] == ["l2sweep", "run"]
    with pytest.raises(ConfigError, match="--no-wait applies to launcher=slurm only"):
        runner.plan_sweep([f"results_dir={tmp_path}"], wait=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(runner.ResultsFolderError, match=r"results folder .* is not writable \(.*\): choose another"):
        runner.run_sweep(["alpha=1e-3", "seed=0", f"data.root={tiny_mnist}", f"results_dir={blocker}", "name=x",
                          *QUICK])
    assert blocker.read_text() == "not a folder"
