"""Sweeps that survive: resume after SIGKILL, Ctrl-C, divergence, failures, concurrent processes,
bad input everywhere, repeatability across processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import start_as_in_a_terminal  # tests/ is on sys.path (pytest's default "prepend" import mode)
from typer.testing import CliRunner

from l2reg.cli.main import app

L2SWEEP = str(Path(sys.executable).with_name("l2sweep"))
QUICK = ["train.batch_size=64", "train.eval_batch_size=100"]
RUN_LINE = re.compile(r"^(\S+): (ok|diverged|failed)\b", re.M)


# Rich wraps at 80 columns when the output is not a terminal: whole lines for the asserts
pytestmark = pytest.mark.usefixtures("wide_console")


def sweep_args(data, results, name, *extra):
    return ["run", f"data.root={data}", f"results_dir={results}", f"name={name}", *QUICK, *extra]


def start(args):
    return start_as_in_a_terminal([L2SWEEP, *args])


def wait_for_files(folder: Path, count: int, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if len(list(folder.glob("*.json"))) >= count:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_then_rerun_completes_each_run_exactly_once(tiny_mnist, tmp_path):
    total = 6  # 2 settings x 3 seeds; the sweep is killed once 2 runs are on disk
    args = sweep_args(tiny_mnist, tmp_path, "k", "alpha=0.0,1e-3", "seeds=3", "train.epochs=2")
    runs = tmp_path / "k" / "runs"
    process = start(args)
    assert wait_for_files(runs, 2, process), "the sweep finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    survivors = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert 2 <= len(survivors) < total
    for path in runs.glob("*.json"):
        assert json.loads(path.read_text())["status"] == "ok"  # never half a file
    done = subprocess.run([L2SWEEP, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(survivors)} of {total} runs already done" in done.stderr
    trained_again = RUN_LINE.findall(done.stderr)
    assert len(trained_again) == total - len(survivors)
    assert not {rid for rid, _ in trained_again} & {name[:-5] for name in survivors}
    assert {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json") if p.name in survivors} == survivors
    assert len(list(runs.glob("*.json"))) == total
    assert len(pd.read_csv(tmp_path / "k" / "runs.csv")) == total


@pytest.mark.parametrize("sent, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_sweep_reports_what_is_done_and_the_same_command_resumes(sent, exit_code, tiny_mnist,
                                                                                   tmp_path):
    """Ctrl-C, and what kill, timeout and a scheduler's preemption send: the run in flight is
    abandoned, the finished ones are reported, one line says how to resume, exit 128 + the signal's
    number; the same command then trains only what is missing."""
    args = sweep_args(tiny_mnist, tmp_path, "s", "alpha=0.0,1e-3", "seeds=5", "train.epochs=4")
    runs = tmp_path / "s" / "runs"
    process = start(args)
    assert wait_for_files(runs, 1, process)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    assert "interrupted" in stderr and "the same command resumes" in stderr and "Traceback" not in stderr
    finished = sorted(p.name for p in runs.glob("*.json"))
    assert 1 <= len(finished) < 10
    assert len(pd.read_csv(tmp_path / "s" / "runs.csv")) == len(finished)
    assert (tmp_path / "s" / "report.md").is_file() and not list(runs.glob(".*.tmp"))
    resumed = subprocess.run([L2SWEEP, *args], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} of 10 runs already done" in resumed.stderr
    assert len(list(runs.glob("*.json"))) == 10


def test_a_full_disk_names_the_file_keeps_the_finished_runs_and_the_command_resumes(tiny_mnist, tmp_path,
                                                                                   monkeypatch):
    """The file system fills up after two run files: one line names the file it could not write,
    says the finished runs are kept and how to resume; exit 1; no half file; the same command then
    trains only the rest."""
    import errno

    from l2reg import files

    args = sweep_args(tiny_mnist, tmp_path, "full", "alpha=0.0,1e-3", "seeds=2", "train.epochs=1")
    real_replace, written = os.replace, []

    def filling(src, dst, *rest):
        if str(dst).endswith(".json") and "/runs/" in str(dst):
            if len(written) >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(dst)
        return real_replace(src, dst, *rest)

    monkeypatch.setattr(files.os, "replace", filling)
    full = CliRunner().invoke(app, args)
    assert full.exit_code == 1, full.output
    line = " ".join(full.output.split())
    assert "no space left to write" in line and str(tmp_path / "full" / "runs") in line
    assert "Every run finished before is saved" in line and "run the same command again: it resumes" in line
    assert "Traceback" not in full.output
    runs = tmp_path / "full" / "runs"
    assert sorted(p.name for p in runs.glob("*.json")) == sorted(Path(p).name for p in written)
    assert not list(runs.glob(".*.tmp"))
    monkeypatch.setattr(files.os, "replace", real_replace)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "2 of 4 runs already done" in resumed.output and len(list(runs.glob("*.json"))) == 4


def test_fail_fast_stops_at_the_first_diverged_run_and_reports_what_finished(tiny_mnist, tmp_path):
    args = sweep_args(tiny_mnist, tmp_path, "ff", "alpha=1e38", "target=weights", "seeds=3", "train.epochs=1")
    stopped = CliRunner().invoke(app, [*args, "--fail-fast"])
    assert stopped.exit_code == 1, stopped.output
    line = " ".join(stopped.output.split())
    assert "stopped at the first run that did not finish ok (--fail-fast)" in line and "diverged" in line
    runs = pd.read_csv(tmp_path / "ff" / "runs.csv")  # seed-major: the baseline of seed 0, then its setting
    assert sorted(runs["status"]) == ["diverged", "ok"] and set(runs["seed"]) == {0}
    assert (tmp_path / "ff" / "report.md").is_file()
    refused = CliRunner().invoke(app, [*args, "--fail-fast", "launcher=slurm"])
    assert refused.exit_code == 2 and "--fail-fast applies to launcher=inprocess and launcher=local" in refused.output
    goes_on = CliRunner().invoke(app, args)  # the default goes on past a diverged run
    assert goes_on.exit_code == 1 and len(pd.read_csv(tmp_path / "ff" / "runs.csv")) == 6


def test_two_sweeps_on_one_folder_never_train_a_run_twice(tiny_mnist, tmp_path):
    args = sweep_args(tiny_mnist, tmp_path, "two", "alpha=0.0,1e-4,1e-3", "seeds=2", "train.epochs=1")
    first, second = start(args), start(args)
    out_first, out_second = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (out_first[1], out_second[1])
    trained_first = [rid for rid, _ in RUN_LINE.findall(out_first[1])]
    trained_second = [rid for rid, _ in RUN_LINE.findall(out_second[1])]
    assert not set(trained_first) & set(trained_second)
    assert len(trained_first) + len(trained_second) == 6
    runs = list((tmp_path / "two" / "runs").glob("*.json"))
    assert len(runs) == 6 and all(json.loads(p.read_text())["status"] == "ok" for p in runs)


def test_divergence_is_recorded_reported_and_left_out(tiny_mnist, tmp_path):
    result = CliRunner().invoke(app, sweep_args(tiny_mnist, tmp_path, "div", "alpha=1e38", "target=weights",
                                                "seeds=2", "train.epochs=2"))
    assert result.exit_code == 1
    assert "2 run(s) did not finish" in result.output and "diverged" in result.output
    runs = pd.read_csv(tmp_path / "div" / "runs.csv")
    assert sorted(runs["status"]) == ["diverged", "diverged", "ok", "ok"]
    summary = pd.read_csv(tmp_path / "div" / "summary.csv")
    row = summary[summary["alpha"] == 1e38].iloc[0]
    assert row["n"] == 0 and row["n_not_ok"] == 2 and row["n_diverged"] == 2 and row["call"] == "diverged"
    report = (tmp_path / "div" / "report.md").read_text()
    assert "## Runs and files left out of the statistics" in report
    diverged = sorted(runs.loc[runs["status"] == "diverged", "run_id"])
    assert [line for line in report.splitlines() if ": diverged" in line] == [
        f"- `{run_id}`: diverged" + (f" ({error})" if isinstance(error, str) else "")
        for run_id, error in zip(diverged, runs.set_index("run_id").loc[diverged, "error"])]
    again = CliRunner().invoke(app, sweep_args(tiny_mnist, tmp_path, "div", "alpha=1e38", "target=weights",
                                               "seeds=2", "train.epochs=2"))
    assert "4 of 4 runs already done" in again.output  # divergence is a result: not re-run


def test_a_failing_run_is_marked_failed_and_the_sweep_goes_on(tiny_mnist, tmp_path, monkeypatch):
    import l2reg.train

    real = l2reg.train.train_pack

    def flaky(specs, *args, **kwargs):
        if any(spec.seed == 1 and spec.alpha > 0 for spec in specs):
            raise RuntimeError("simulated crash")
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(l2reg.train, "train_pack", flaky)
    args = sweep_args(tiny_mnist, tmp_path, "f", "alpha=1e-3", "seeds=2", "train.epochs=1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "simulated crash" in result.output
    runs = pd.read_csv(tmp_path / "f" / "runs.csv")
    assert sorted(runs["status"]) == ["failed", "ok", "ok", "ok"]
    assert "RuntimeError: simulated crash" in runs.loc[runs["status"] == "failed", "error"].iloc[0]
    monkeypatch.setattr(l2reg.train, "train_pack", real)
    retry = CliRunner().invoke(app, args)
    assert retry.exit_code == 0 and "3 of 4 runs already done" in retry.output  # only the failed one re-runs


def test_ctrl_c_before_any_run_finished_exits_130_without_reports(tiny_mnist, tmp_path, monkeypatch):
    import l2reg.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(l2reg.train, "train_pack", interrupted)
    result = CliRunner().invoke(app, sweep_args(tiny_mnist, tmp_path, "early", "alpha=1e-3", "seeds=1"))
    assert result.exit_code == 130, result.output
    assert "no run had finished" in result.output
    assert not list((tmp_path / "early" / "runs").glob("*.json"))
    assert not (tmp_path / "early" / "runs.csv").exists()


def test_force_reruns_finished_runs(tiny_mnist, tmp_path):
    args = sweep_args(tiny_mnist, tmp_path, "force", "alpha=1e-3", "seeds=1", "train.epochs=1")
    assert CliRunner().invoke(app, args).exit_code == 0
    forced = CliRunner().invoke(app, ["run", "--force", *args[1:]])
    assert forced.exit_code == 0 and "already done" not in forced.output
    assert len(RUN_LINE.findall(forced.output)) == 2


def corrupt_magic(root: Path):
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[2] = 0x07
    path.write_bytes(bytes(blob))


def truncate_images(root: Path):
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])


def remove_file(root: Path):
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()


BAD_INPUTS = [
    (["alpha=-1e-3"], None, "alpha=-0.001 is not allowed: alpha must be a finite number >= 0"),
    (["alpha=nan"], None, "alpha=nan is not allowed"),
    (["alpha=inf"], None, "alpha=inf is not allowed"),
    (["target=bias"], None, "target=bias is unknown: choose one of weights, activations, both"),
    (["norm=l3"], None, "norm=l3 is unknown: choose one of l2, l1"),
    (["schedule=sawtooth"], None, "schedule=sawtooth is unknown: choose one of constant"),
    (["train.device=tpu"], None, "train.device=tpu is unknown: choose one of auto, cpu, cuda"),
    (["form=decoupled", "target=activations"], None, "form=decoupled is weight decay and acts on kernels only: it "
                                                      "needs target=weights (got target=activations)"),
    (["form=decoupled", "target=weights", "norm=l1"], None, "form=decoupled has no l1 version: it needs norm=l2"),
    (["scope=everything"], None, "scope=everything is unknown: choose one of conv, dense, all"),
    (["train.dropout=-0.1"], None, "train.dropout=-0.1: must be in [0, 1)"),
    (["data.train_size=10"], None, "data.train_size=10: must be at least one batch (train.batch_size=64)"),
    (["seed=range(0)"], None, "seed=range(0) is an empty sweep"),
    (["name=../elsewhere"], None, "name=../elsewhere: must be one plain folder name"),
    (["train.epochs=0"], None, "train.epochs=0: must be >= 1"),
    (["train.batch_size=0"], None, "train.batch_size=0: must be >= 1"),
    (["seeds=0"], None, "seeds=0: must be >= 1"),
    (["data.val_fraction=0"], None, "data.val_fraction=0.0: must be in (0, 1)"),
    (["data.val_fraction=1.5"], None, "data.val_fraction=1.5: must be in (0, 1)"),
    (["data.train_limit=50"], None, "fewer than one batch"),
    (["learning_rate=1"], None, "unknown key 'learning_rate'"),
    (["train.lr=fast"], None, "train.lr: Value 'fast'"),
    (["alpha=range(1,"], None, "malformed override 'alpha=range(1,'"),
    (["alpha=1e-3", "name=a,b"], None, "name cannot be swept"),
    ([], corrupt_magic, "cannot read the MNIST training files"),
    ([], truncate_images, "cannot read the MNIST training files"),
    (["data.download=false"], remove_file, "MNIST files missing in"),
]
if not __import__("torch").cuda.is_available():
    BAD_INPUTS.append((["train.device=cuda"], None, "train.device=cuda but no CUDA device is available"))


@pytest.mark.parametrize("overrides,damage,message", BAD_INPUTS, ids=[" ".join(b[0]) or b[1].__name__
                                                                      for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(overrides, damage, message, tiny_mnist,
                                                                   tmp_path):
    if damage:
        damage(tiny_mnist)
    results = tmp_path / "results"
    result = CliRunner().invoke(app, sweep_args(tiny_mnist, results, "bad", *overrides))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    [line] = result.output.strip().splitlines()  # one line, however long
    assert line.startswith("error: ") and message in line
    assert not results.exists()


def test_unwritable_results_folder(tiny_mnist, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, sweep_args(tiny_mnist, blocker / "results", "x", "alpha=1e-3"))
    assert result.exit_code == 2
    assert "is not writable" in " ".join(result.output.split())
    assert blocker.read_text() == "not a folder"


def test_debug_shows_the_traceback(tiny_mnist, tmp_path):
    result = CliRunner().invoke(app, ["run", "--debug", "alpha=-1", f"results_dir={tmp_path}"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "ConfigError" in result.output
    plain = CliRunner().invoke(app, ["run", "alpha=-1", f"results_dir={tmp_path}"])
    assert plain.exit_code == 2 and "Traceback" not in plain.output


def test_same_config_and_seed_repeat_to_the_bit_in_a_new_process(tiny_mnist, tmp_path):
    outputs = []
    for hash_seed, name in enumerate(("one", "two")):
        args = sweep_args(tiny_mnist, tmp_path, name, "alpha=1e-3", "seed=0", "train.epochs=1")
        done = subprocess.run([L2SWEEP, *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": str(hash_seed)})
        assert done.returncode == 0, done.stderr
        record = json.loads(next((tmp_path / name / "runs").glob("both-*.json")).read_text())
        outputs.append((record["metrics"], [{k: v for k, v in h.items() if k not in ("seconds", "train_seconds")}
                                            for h in record["history"]]))
    assert outputs[0] == outputs[1]
