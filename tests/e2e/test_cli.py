"""End to end through the `l2sweep` command on tiny IDX files (and on real MNIST when available)."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from typer.testing import CliRunner

from l2reg import axes, files
from l2reg.analysis import summary_columns
from l2reg.claims.features import METRICS as FEATURE_METRICS
from l2reg.cli.main import app
from l2reg.plots import PLOTS
from l2reg.report import run_columns

runner = CliRunner()
QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100"]
M = 0.1  # report.min_effect_pp's default


# Rich wraps at 80 columns when the output is not a terminal: whole lines for the asserts
pytestmark = pytest.mark.usefixtures("wide_console")


def invoke(*args):
    return runner.invoke(app, list(args))


def squash(text: str) -> str:
    return " ".join(text.split())


def decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8)


def holm_by_hand(p):
    p = np.asarray(p, float)
    adjusted, running = np.empty_like(p), 0.0
    for rank, i in enumerate(np.argsort(p)):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_help_explains_the_grammar_and_the_axes():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    text = squash(result.output)
    for phrase in ("range()", "The alpha=0 baseline always runs, once per seed and context",
                   "form (loss|decoupled", "scope (conv|dense|all", "train.dropout (rate in [0, 1))",
                   "data.train_size (train on N of the 54,000 training images"):
        assert phrase in text, phrase


def test_sweep_writes_runs_summary_verdicts_and_report(tiny_mnist, tmp_path):
    out = tmp_path / "results"
    result = invoke("run", "alpha=0.0,1e-4,1e-3", f"data.root={tiny_mnist}", f"results_dir={out}", "name=t", *QUICK)
    assert result.exit_code == 0, result.output
    folder = out / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["plots", "report.html", "report.md", "runs", "runs.csv",
                                                        "summary.csv", "sweep.json", "verdict.json"]
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(PLOTS)
    assert len(list((folder / "runs").glob("*.json"))) == 9
    runs = pd.read_csv(folder / "runs.csv")
    assert list(runs.columns) == run_columns()
    assert len(runs) == 9 and set(runs["status"]) == {"ok"} and runs["test_acc"].between(0, 100).all()
    assert sorted(runs["seed"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (runs["compiled"] == False).all()  # noqa: E712 - auto: 9 steps per run are too few to compile
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary.columns) == summary_columns(axes.SETTING_COLUMNS)
    assert list(summary["alpha"]) == [0.0, 1e-4, 1e-3] and list(summary["target"]) == ["none", "both", "both"]
    base_row = summary.iloc[0]
    assert (base_row["n"], base_row["delta_pp"], base_row["call"]) == (3, 0, "baseline")
    assert base_row["mean_acc"] == pytest.approx(runs[runs["alpha"] == 0]["test_acc"].mean())
    # every paired statistic of summary.csv is what scipy computes from runs.csv
    base = runs[runs["alpha"] == 0].sort_values("seed")
    p_superior, p_equivalent = [], []
    for alpha in (1e-4, 1e-3):
        arm = runs[runs["alpha"] == alpha].sort_values("seed")
        d = arm["test_acc"].to_numpy() - base["test_acc"].to_numpy()
        assert d.std() > 0  # this deterministic sweep's differences have a spread: the t-tests are scipy's
        row = summary[summary["alpha"] == alpha].iloc[0]
        ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
        assert (row["n"], row["paired_n"]) == (3, 3)
        assert row["mean_acc"] == pytest.approx(arm["test_acc"].mean())
        assert row["std_acc"] == pytest.approx(arm["test_acc"].std(ddof=1))
        assert row["delta_pp"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["delta_images"] == pytest.approx(d.mean() / 100 * 200)  # 200 test images
        assert (row["paired_ci_low_pp"], row["paired_ci_high_pp"]) == pytest.approx((ci.low, ci.high))
        assert row["p_superior"] == pytest.approx(sps.ttest_1samp(d, M, alternative="greater").pvalue)
        assert row["p_inferior"] == pytest.approx(sps.ttest_1samp(d, M, alternative="less").pvalue)
        assert row["p_equivalent"] == pytest.approx(max(sps.ttest_1samp(d, -M, alternative="greater").pvalue,
                                                        sps.ttest_1samp(d, M, alternative="less").pvalue))
        welch = sps.ttest_ind(arm["test_acc"], base["test_acc"], equal_var=False)
        assert row["welch_p"] == pytest.approx(welch.pvalue)
        p_superior.append(row["p_superior"])
        p_equivalent.append(row["p_equivalent"])
        # per-image predictions: the images on which the arms disagree, from the run files themselves
        differ = []
        for seed in range(3):
            pair = [json.loads((folder / "runs" / f"{rid}.json").read_text())
                    for rid in (arm.iloc[seed]["run_id"], base.iloc[seed]["run_id"])]
            differ.append(int((decode(pair[0]["test_predictions"]) != decode(pair[1]["test_predictions"])).sum()))
        assert row["boot_n"] == 3 and row["disagreements"] == pytest.approx(np.mean(differ))
    tested = summary.iloc[1:]
    assert tested["p_superior_holm"].to_numpy() == pytest.approx(holm_by_hand(p_superior))
    assert tested["p_equivalent_holm"].to_numpy() == pytest.approx(holm_by_hand(p_equivalent))
    # a run file: config, metrics (features included), predictions that give its accuracy, provenance
    record = json.loads(next((folder / "runs").glob("baseline-s0-*.json")).read_text())
    assert record["config"]["alpha"] == 0 and record["status"] == "ok" and len(record["history"]) == 1
    assert record["compiled"] is False and record["device"] == "cpu"
    assert set(FEATURE_METRICS) <= set(record["metrics"])
    assert 0 <= record["metrics"]["zero_fraction"] <= 1
    predictions, labels = decode(record["test_predictions"]), decode(record["test_labels"])
    assert len(predictions) == len(labels) == record["metrics"]["n_test"] == 200
    assert (predictions == labels).mean() * 100 == pytest.approx(record["metrics"]["test_acc"])
    assert record["versions"] == files.versions()  # torch, torchvision, hydra-core, numpy, l2sweep, python
    assert record["git_commit"] == files.git_commit()
    # verdict.json and report.md say the same verdicts; the console shows the table and the verdicts
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["runs"] == verdict["runs_ok"] == 9 and verdict["skipped_files"] == []
    [(context, content)] = verdict["contexts"].items()
    assert context == runs["context"].iloc[0]
    claims = content["claims"]
    assert list(claims) == ["accuracy", "overfitting", "stability", "churn", "features"]  # the registry order
    assert [row["min_effect_pp"] for row in content["sensitivity"]] == [0.05, 0.1, 0.2, 0.3]
    report = (folder / "report.md").read_text()
    text = squash(result.output)
    for claim, body in claims.items():
        assert body["verdict"] in ("supported", "not supported", "inconclusive")
        assert f"{claim}: {body['verdict']} - {body['reasons'][0]}" in text
        assert f"## {claim.capitalize()}: {body['verdict']}\n" in report
    assert "Test accuracy (%)" in result.output and "verdicts (smallest effect of interest 0.1 pp):" in text
    sweep_json = json.loads((folder / "sweep.json").read_text())
    [invocation] = sweep_json["invocations"]
    assert invocation["command"][:2] == ["l2sweep", "run"] and "alpha=0.0,1e-4,1e-3" in invocation["command"]
    assert sorted(invocation["planned_runs"]) == sorted(runs["run_id"])
    assert invocation["decisions"] == {"device": "cpu", "pack_size": 1, "compile_by_context": {context: False}}
    assert invocation["environment"]["torch"] == torch.__version__


def test_packs_report_their_peak_memory(tiny_mnist, tmp_path):
    result = invoke("run", "alpha=0.0,1e-3", "seeds=2", "train.pack_size=3", f"data.root={tiny_mnist}",
                    f"results_dir={tmp_path}", "name=p", *QUICK)
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(tmp_path / "p" / "runs.csv")
    assert sorted(runs["pack_size"]) == [1, 3, 3, 3]  # 4 runs in packs of at most 3
    pack = runs[runs["pack_size"] == 3]
    assert pack["peak_memory_mib"].nunique() == 1  # one measurement per pack
    assert 50 < pack["peak_memory_mib"].iloc[0] < 24 * 1024  # a torch process' RSS, in MiB
    assert "pack of 3 runs:" in result.output and "MiB (process RSS)" in result.output
    assert "pack of 1 runs" not in result.output


def test_rerun_skips_finished_runs(tiny_mnist, tmp_path):
    args = ["run", "alpha=1e-3", "seeds=1", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=r", *QUICK]
    assert invoke(*args).exit_code == 0
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*.json")}
    assert len(stamp) == 2
    again = invoke(*args)
    assert again.exit_code == 0 and "2 of 2 runs already done" in again.output
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*.json")}
    assert len(json.loads((tmp_path / "r" / "sweep.json").read_text())["invocations"]) == 2  # both recorded


def test_sweep_json_keeps_the_uncommitted_code(tmp_path):
    """sweep.json's git entry: the commit, and with a dirty tree the diff of the code first, new untracked
    modules included (a new file changes what runs as much as an edit); outside a checkout, 'unknown'."""
    from l2reg.provenance import git_state

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "l2reg").mkdir()
    (tmp_path / "l2reg" / "model.py").write_text("WIDTH = 64\n")
    (tmp_path / "notes.txt").write_text("old\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    clean = git_state(tmp_path)
    assert clean == {"commit": files.git_commit(tmp_path)} and re.fullmatch(r"[0-9a-f]{40}", clean["commit"])
    # a change outside the code (results, notes) leaves the commit clean, and is still recorded
    (tmp_path / "notes.txt").write_text("results only\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    outside = git_state(tmp_path)
    assert outside["commit"] == clean["commit"] == files.git_commit(tmp_path)
    assert "+results only" in outside["diff"] and outside["untracked"] == ["results/run.json"]
    (tmp_path / "results" / "run.json").unlink()
    (tmp_path / "l2reg" / "model.py").write_text("WIDTH = 128\n")
    (tmp_path / "notes.txt").write_text("new\n")
    (tmp_path / "l2reg" / "extra.py").write_text("NEW = True\n")
    (tmp_path / "scratch.bin").write_bytes(b"\xff\xfe")
    dirty = git_state(tmp_path)
    assert dirty["commit"] == clean["commit"] + "+dirty"
    assert dirty["untracked"] == ["l2reg/extra.py", "scratch.bin"]
    diff = dirty["diff"]
    assert diff.index("+WIDTH = 128") < diff.index("+NEW = True") < diff.index("+new")  # code first
    assert "scratch.bin" not in diff
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == {"commit": "unknown", "note": f"{plain} is not a git checkout (an installed package)"}


def plan_rows(output: str) -> list[list[str]]:
    """The cells of the dry-run table's body rows."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()
            if line.startswith("│")]


def test_dry_run_plans_and_writes_nothing(tiny_mnist, tmp_path):
    result = invoke("run", "--dry-run", "alpha=1e-4,1e-3", "target=weights,both", f"results_dir={tmp_path}",
                    "name=d", f"data.root={tiny_mnist}")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"15 planned runs -> {tmp_path / 'd'} (0 done)"
    header = next(line for line in result.output.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["run_id", "alpha", "target", "seed", "done"]
    rows = plan_rows(result.output)
    assert len(rows) == 15 and [r[0] for r in rows[:3]] == [r[0] for r in rows if r[0].startswith("baseline")]
    assert sorted((r[1], r[2]) for r in rows if r[1] != "0") == sorted(
        [(a, t) for a in ("0.0001", "0.001") for t in ("weights", "both")] * 3)
    assert all(r[-1] == "" for r in rows)  # nothing done yet
    assert ("every run: norm=l2, schedule=constant, form=loss, scope=conv, dropout=0.5, train_size=None"
            in squash(result.output))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("override,message", [
    ("alpha=-1", "alpha=-1.0 is not allowed: alpha must be a finite number >= 0"),
    ("target=bias", "target=bias is unknown: choose one of weights, activations, both"),
    ("norm=l3", "norm=l3 is unknown: choose one of l2, l1"),
    ("schedule=sawtooth", "schedule=sawtooth is unknown: choose one of"),
    ("form=sgd", "form=sgd is unknown: choose one of loss, decoupled"),
    ("scope=bias", "scope=bias is unknown: choose one of conv, dense, all"),
    ("form=decoupled", "form=decoupled is weight decay and acts on kernels only: it needs target=weights "
                       "(got target=both)"),
    ("train.dropout=1", "train.dropout=1.0: must be in [0, 1)"),
    ("train.epochs=0", "train.epochs=0: must be >= 1"),
    ("data.root=/nonexistent/mnist", "MNIST is not in /nonexistent/mnist/MNIST/raw"),
])
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(override, message, tiny_mnist, tmp_path):
    args = ["run", f"results_dir={tmp_path / 'res'}", "name=x", *QUICK]
    if not override.startswith("data.root"):
        args.append(f"data.root={tiny_mnist}")
    result = invoke(*args, override)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "res").exists()


def test_report_rebuilds_the_files(tiny_mnist, tmp_path):
    args = ["run", "alpha=1e-3", "seeds=2", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=p", *QUICK]
    assert invoke(*args).exit_code == 0
    folder = tmp_path / "p"
    names = ("runs.csv", "summary.csv", "verdict.json", "report.md")
    before = {name: (folder / name).read_bytes() for name in names}
    for name in names:
        (folder / name).unlink()
    result = invoke("report", str(folder))
    assert result.exit_code == 0, result.output
    assert {name: (folder / name).read_bytes() for name in names} == before
    assert f"report: {folder / 'report.md'} (verdict.json for scripts)" in result.output
    missing = invoke("report", str(tmp_path / "nothing"))
    assert missing.exit_code == 2
    assert missing.output.strip() == (f"error: {tmp_path / 'nothing'} has no runs/ folder: is it a results folder "
                                      "written by `l2sweep run`?")
    bad_margin = invoke("report", str(folder), "--min-effect-pp", "0")
    assert bad_margin.exit_code == 2
    assert bad_margin.output.strip() == "error: --min-effect-pp=0.0: must be > 0 (percentage points)"


def test_the_installed_command_runs_in_a_fresh_process(tiny_mnist, tmp_path):
    program = Path(sys.executable).with_name("l2sweep")  # the console script pip installed
    command = [str(program), "run", "alpha=1e-3", "seeds=1", f"data.root={tiny_mnist}",
               f"results_dir={tmp_path}", "name=proc", *QUICK]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "proc" / "runs.csv")) == 2
    assert re.search(r"^baseline-s0-[0-9a-f]{8}: ok test \d+\.\d\d % \(\d+ s\)$", done.stderr, re.M), done.stderr


@pytest.mark.mnist
def test_real_mnist_slice(real_mnist, tmp_path):
    result = invoke("run", "alpha=0.0,1e-3", "seeds=1", f"data.root={real_mnist}", "data.train_limit=3000",
                    "data.test_limit=2000", "train.epochs=1", f"results_dir={tmp_path}", "name=real")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(tmp_path / "real" / "runs.csv")
    assert len(runs) == 2
    assert (runs["test_acc"] > 50).all()  # 22 steps on 2 700 real images: ~68 %, chance is 10 %
