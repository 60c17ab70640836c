"""End to end through the `l2sweep` command on tiny IDX files (and on real MNIST when available)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100"]


def invoke(*args):
    return runner.invoke(app, list(args))


def test_help_explains_the_grammar():
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "range()" in result.output and "baseline" in result.output


def test_sweep_writes_runs_summary_and_report(tiny_mnist, tmp_path):
    out = tmp_path / "results"
    result = invoke("run", "alpha=0.0,1e-4,1e-3", f"data.root={tiny_mnist}", f"results_dir={out}", "name=t", *QUICK)
    assert result.exit_code == 0, result.output
    folder = out / "t"
    assert len(list((folder / "runs").glob("*.json"))) == 9
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 9 and set(runs["status"]) == {"ok"}
    for column in ["run_id", "alpha", "target", "norm", "schedule", "seed", "status", "test_acc", "test_loss",
                   "val_acc", "train_acc", "penalty", "seconds", "pack_size", "peak_memory_mib"]:
        assert column in runs.columns
    assert runs["test_acc"].between(0, 100).all()
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == 3
    base = summary[summary["target"] == "none"].iloc[0]
    assert base["alpha"] == 0 and base["n"] == 3 and base["delta_pp"] == 0
    row = summary[summary["alpha"] == 1e-3].iloc[0]
    expected = runs[runs["alpha"] == 1e-3]["test_acc"].mean()
    assert row["mean_acc"] == pytest.approx(expected)
    assert row["delta_pp"] == pytest.approx(expected - runs[runs["alpha"] == 0]["test_acc"].mean())
    assert row["std_acc"] == pytest.approx(runs[runs["alpha"] == 1e-3]["test_acc"].std(ddof=1))
    # every statistic of summary.csv is what scipy computes from runs.csv
    from scipy import stats as sps

    setting = runs[runs["alpha"] == 1e-3].sort_values("seed")["test_acc"]
    base = runs[runs["alpha"] == 0].sort_values("seed")["test_acc"]
    welch = sps.ttest_ind(setting, base, equal_var=False)
    if welch.pvalue == welch.pvalue:  # defined unless both groups have zero spread
        assert row["p_value"] == pytest.approx(welch.pvalue)
        assert row["ci_low_pp"] == pytest.approx(welch.confidence_interval(0.95).low)
        assert row["ci_high_pp"] == pytest.approx(welch.confidence_interval(0.95).high)
    assert row["paired_delta_pp"] == pytest.approx((setting.to_numpy() - base.to_numpy()).mean())
    report = (folder / "report.md").read_text()
    assert "0 (baseline)" in report and "Test accuracy by setting" in report and "## Verdict:" in report
    record = json.loads(next((folder / "runs").glob("baseline-s0-*.json")).read_text())
    assert record["config"]["alpha"] == 0 and record["status"] == "ok" and len(record["history"]) == 1
    assert record["versions"]["torch"] and record["git_commit"] and record["device"] == "cpu"
    assert "Test accuracy" in result.output  # the rich table at the end


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
    again = invoke(*args)
    assert again.exit_code == 0 and "2 of 2 runs already done" in again.output
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "runs").glob("*.json")}


def test_dry_run_plans_and_writes_nothing(tiny_mnist, tmp_path):
    result = invoke("run", "--dry-run", "alpha=1e-4,1e-3", "target=weights,both", f"results_dir={tmp_path}",
                    "name=d", f"data.root={tiny_mnist}")
    assert result.exit_code == 0
    assert "15 planned runs" in result.output and "baseline-s2" in result.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("override,message", [
    ("alpha=-1", "alpha=-1.0 is not allowed"),
    ("target=bias", "target=bias is unknown: choose one of weights, activations, both"),
    ("norm=l3", "norm=l3 is unknown"),
    ("schedule=sawtooth", "schedule=sawtooth is unknown: choose one of"),
    ("train.epochs=0", "train.epochs=0: must be >= 1"),
    ("data.root=/nonexistent/mnist", "MNIST is not in /nonexistent/mnist/MNIST/raw"),
])
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(override, message, tiny_mnist, tmp_path):
    args = ["run", f"results_dir={tmp_path / 'res'}", "name=x", *QUICK]
    if not override.startswith("data.root"):
        args.append(f"data.root={tiny_mnist}")
    result = invoke(*args, override)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "res").exists()


def test_report_rebuilds_the_files(tiny_mnist, tmp_path):
    args = ["run", "alpha=1e-3", "seeds=2", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=p", *QUICK]
    assert invoke(*args).exit_code == 0
    folder = tmp_path / "p"
    before = {name: (folder / name).read_text() for name in ("runs.csv", "summary.csv")}
    for name in before:
        (folder / name).unlink()
    result = invoke("report", str(folder))
    assert result.exit_code == 0
    assert {name: (folder / name).read_text() for name in before} == before
    missing = invoke("report", str(tmp_path / "nothing"))
    assert missing.exit_code == 2 and "no runs/ folder" in missing.output


def test_the_installed_command_runs_in_a_fresh_process(tiny_mnist, tmp_path):
    program = Path(sys.executable).with_name("l2sweep")  # the console script pip installed
    command = [str(program), "run", "alpha=1e-3", "seeds=1", f"data.root={tiny_mnist}",
               f"results_dir={tmp_path}", "name=proc", *QUICK]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "proc" / "runs.csv")) == 2


@pytest.mark.mnist
def test_real_mnist_slice(real_mnist, tmp_path):
    result = invoke("run", "alpha=0.0,1e-3", "seeds=1", f"data.root={real_mnist}", "data.train_limit=3000",
                    "data.test_limit=2000", "train.epochs=1", f"results_dir={tmp_path}", "name=real")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(tmp_path / "real" / "runs.csv")
    assert len(runs) == 2
    assert (runs["test_acc"] > 50).all()  # 22 steps on 2 700 real images: ~68 %, chance is 10 %
