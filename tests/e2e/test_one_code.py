"""One code version and one thread count per comparison: `l2sweep run` refuses to add runs of
other code (another code fingerprint) or of another CPU thread count to a context, --mixed-code
pools them knowingly and the report says so loudly; runs record the thread count they trained
with, and a real in-process run on two threads and a local worker on one are told apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from l2reg import fingerprint
from l2reg.cli.main import app

QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100", "train.compile=false"]
L2SWEEP = str(Path(sys.executable).with_name("l2sweep"))
pytestmark = pytest.mark.usefixtures("wide_console")


def sweep(data, results, *extra):
    return ["run", "alpha=0.0,1e-3", f"data.root={data}", f"results_dir={results}", "name=one", *QUICK, *extra]


def test_runs_of_other_code_are_refused_then_pooled_only_on_request_and_flagged(tiny_mnist, tmp_path, monkeypatch):
    first = CliRunner().invoke(app, sweep(tiny_mnist, tmp_path, "seed=0"))
    assert first.exit_code == 0, first.output
    made = fingerprint.current()
    records = [json.loads(p.read_text()) for p in (tmp_path / "one" / "runs").glob("*.json")]
    assert {r["code_fingerprint"] for r in records} == {made}

    monkeypatch.setattr(fingerprint, "current", lambda: "0123456789abcdef")  # the training code was edited
    refused = CliRunner().invoke(app, sweep(tiny_mnist, tmp_path, "seeds=2"))
    assert refused.exit_code == 2, refused.output
    line = " ".join(refused.output.split())
    assert str(tmp_path / "one") in line and f"code {made}" in line and "code 0123456789abcdef" in line
    assert "--mixed-code" in line and "Traceback" not in line
    assert len(list((tmp_path / "one" / "runs").glob("*.json"))) == 2  # nothing written

    # the same sweep again (nothing to train) is no mixing: allowed
    assert CliRunner().invoke(app, sweep(tiny_mnist, tmp_path, "seed=0")).exit_code == 0

    mixed = CliRunner().invoke(app, sweep(tiny_mnist, tmp_path, "seeds=2", "--mixed-code"))
    assert mixed.exit_code == 0, mixed.output
    verdict = json.loads((tmp_path / "one" / "verdict.json").read_text())
    [context] = verdict["contexts"]
    assert verdict["mixed_code"] == [context]
    assert verdict["code_paths"][context]["fingerprints"] == sorted([made, "0123456789abcdef"])
    report = (tmp_path / "one" / "report.md").read_text()
    assert "**Mixed code: this comparison pools runs of 2 code fingerprint(s)" in report
    runs = pd.read_csv(tmp_path / "one" / "runs.csv")
    assert sorted(runs["code_fingerprint"]) == sorted([made, made, "0123456789abcdef", "0123456789abcdef"])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_two_threads_in_process_and_one_per_local_worker_are_recorded_and_never_pooled(tiny_mnist, tmp_path):
    """In-process on two cores (past the test suite's one-core pinning) the runs train with two
    threads; local workers with one. The records say so, and a sweep that would add one-thread
    runs to the two-thread ones is refused."""
    def two_cores():
        os.sched_setaffinity(0, range(2))

    def run(*extra):
        return subprocess.run([L2SWEEP, *sweep(tiny_mnist, tmp_path, *extra)], capture_output=True, text=True,
                              timeout=900, preexec_fn=two_cores)

    inprocess = run("seed=0")
    assert inprocess.returncode == 0, inprocess.stderr
    assert {json.loads(p.read_text())["threads"] for p in (tmp_path / "one" / "runs").glob("*.json")} == {2}
    refused = run("seeds=2", "launcher=local", "launcher.n_jobs=2")
    assert refused.returncode == 2, refused.stderr
    assert "2 thread(s)" in refused.stderr and "1 thread(s)" in refused.stderr
    workers = subprocess.run([L2SWEEP, *sweep(tiny_mnist, tmp_path / "workers", "seed=0", "launcher=local",
                                                  "launcher.n_jobs=2")],
                             capture_output=True, text=True, timeout=900, preexec_fn=two_cores)
    assert workers.returncode == 0, workers.stderr
    local = {p.name: json.loads(p.read_text()) for p in (tmp_path / "workers" / "one" / "runs").glob("*.json")}
    here = {p.name: json.loads(p.read_text()) for p in (tmp_path / "one" / "runs").glob("*.json")}
    assert local.keys() == here.keys()  # the same run ids
    assert {r["threads"] for r in local.values()} == {1}
