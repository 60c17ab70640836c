"""Sweeps beyond one process: launcher=local (worker processes) and launcher=slurm on a real
single-node SLURM cluster (tests/slurm_cluster.py, the session fixture `slurm_cluster`), all on tiny
IDX data on the CPU. The same sweep gives the same numbers to the bit in-process, on local workers
and on SLURM; the array throttle holds; a job killed mid-run is reported failed (with its log) and
submitted again on re-run; --no-wait then status then report; a time limit requeues a job
(max_num_timeout times, then its run counts as failed) and a requeued run restarts and finishes.
The SLURM tests skip, saying why, where the daemons cannot start."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from submitit.core.utils import JobPaths
from typer.testing import CliRunner

from l2reg.cli import main as cli_main
from l2reg.cli.main import app
from l2reg.executors import slurm_jobs
from l2reg.executors import status as run_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import start_as_in_a_terminal  # noqa: E402
from slurm_cluster import max_overlap  # noqa: E402

runner = CliRunner()
L2SWEEP = str(Path(sys.executable).with_name("l2sweep"))
QUICK = ["train.batch_size=64", "train.eval_batch_size=100", "train.compile=false"]


# Rich wraps at 80 columns when the output is not a terminal: whole lines for the asserts
pytestmark = pytest.mark.usefixtures("wide_console")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def run_files(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")}


def assert_same_numbers(a: dict[str, dict], b: dict[str, dict]) -> None:
    """Every metric, every per-epoch value (timings aside) and every test prediction, to the bit."""
    assert sorted(a) == sorted(b) and a
    for rid in a:
        assert a[rid]["status"] == b[rid]["status"] == "ok", rid
        assert a[rid]["metrics"] == b[rid]["metrics"], rid
        assert a[rid]["test_predictions"] == b[rid]["test_predictions"], rid
        untimed = [[{k: v for k, v in epoch.items() if "seconds" not in k} for epoch in r[rid]["history"]]
                   for r in (a, b)]
        assert untimed[0] == untimed[1], rid


def reference(folder: Path, overrides: list[str]) -> dict[str, dict]:
    """The runs of a sweep trained in this process (l2reg.executors.inprocess.execute: no reports, no
    CLI), on one core: one torch thread, as a local worker or a one-CPU SLURM task trains."""
    from l2reg import sweep
    from l2reg.compose import expand_and_compose
    from l2reg.executors.inprocess import execute

    planned = sweep.plan([cfg for _, cfg in expand_and_compose(overrides)])
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        outcome = execute(planned, folder)
    finally:
        os.sched_setaffinity(0, cores)
    assert not outcome.not_ok
    return run_files(folder)


def intervals(records: dict[str, dict]) -> list[tuple[float, float]]:
    return [(r["started_unix"], r["finished_unix"]) for r in records.values()]


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(poll)


def states(folder: Path) -> dict[str, str]:
    return {rid: s.state for rid, s in run_status.run_states(folder).items()}


# ---- launcher=local ----

def test_local_workers_match_in_process_to_the_bit_and_train_at_once(tiny_mnist, tmp_path):
    overrides = ["alpha=0.0,1e-3", "seed=0", "train.epochs=1", f"data.root={tiny_mnist}", *QUICK]
    a = reference(tmp_path / "inprocess", overrides)
    local = invoke("run", *overrides, f"results_dir={tmp_path}", "name=local", "launcher=local", "launcher.n_jobs=2")
    assert local.exit_code == 0, local.output
    assert len(re.findall(r"^\S+: ok test \d+\.\d\d % \(\d+ s\)$", local.output, re.M)) == 2  # a line per run
    b = run_files(tmp_path / "local")
    assert_same_numbers(a, b)
    pids = {r["pid"] for r in b.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
    assert max_overlap(intervals(b)) == 2  # ... training at the same time
    assert {r["config"]["launcher"]["name"] for r in b.values()} == {"local"}
    sweep_json = json.loads((tmp_path / "local" / "sweep.json").read_text())
    assert sweep_json["invocations"][-1]["launcher"]["n_jobs"] == 2
    status = invoke("status", tmp_path / "local")
    assert status.exit_code == 0
    assert f"{tmp_path / 'local'}: 2 runs: 2 done (2 ok, 0 diverged), 0 running, 0 queued, 0 failed, 0 not started" \
        in status.output


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_ends_the_local_workers(tiny_mnist, tmp_path, sig, code):
    args = ["run", "alpha=0.0,1e-3", "seed=0", "train.epochs=300", f"data.root={tiny_mnist}", f"results_dir={tmp_path}",
            "name=c", "launcher=local", "launcher.n_jobs=2", *QUICK]
    process = start_as_in_a_terminal([L2SWEEP, *args])
    try:
        held = wait_until(lambda: len(h := run_status.held_locks(tmp_path / "c" / "runs")) == 2 and h, 120,
                          "two workers training")
    except AssertionError:
        process.kill()
        raise
    workers = set(held.values())
    assert process.pid not in workers
    process.send_signal(sig)  # the parent only: it must end its workers itself
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "interrupted" in stderr

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True

    wait_until(lambda: all(gone(pid) for pid in workers), 10, "the workers to end")
    assert run_status.held_locks(tmp_path / "c" / "runs") == {}


def test_no_wait_and_status_refuse_what_they_cannot_do(tiny_mnist, tmp_path):
    result = invoke("run", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=x", "--no-wait")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --no-wait applies to launcher=slurm only (this sweep has "
                                     "launcher=inprocess)")
    assert not (tmp_path / "x").exists()
    swept = invoke("run", f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "name=x", "launcher=local",
                   "launcher.n_jobs=1,2")
    assert swept.exit_code == 2 and "launcher keys cannot be swept" in swept.output
    status = invoke("status", tmp_path / "nothing")
    assert status.exit_code == 2
    assert "is not a results folder of `l2sweep run`" in status.output


# ---- launcher=slurm, on a real single-node cluster ----

@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The cluster, with SLURM_CONF/PATH in os.environ: l2sweep runs sbatch/squeue from there, and
    sbatch hands the environment on to the jobs."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster


@pytest.fixture(scope="module")
def six_runs(slurm_cluster, tmp_path_factory):
    """One sweep of 6 runs in-process and through SLURM (pack size 1: one array task per run, at
    most 2 at once)."""
    from conftest import make_tiny_mnist

    root = tmp_path_factory.mktemp("six")
    data = make_tiny_mnist(root / "data")
    overrides = ["alpha=0.0,1e-3", "seeds=3", "train.epochs=1", f"data.root={data}", *QUICK]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in slurm_cluster.env.items():
            patch.setenv(key, value)
        patch.setattr(cli_main.out, "width", 300)
        patch.setattr(cli_main.err, "width", 300)
        reference(root / "inprocess", overrides)
        through_slurm = invoke("run", *overrides, f"results_dir={root}", "name=slurm", "launcher=slurm",
                               "launcher.array_parallelism=2", "train.pack_size=1")
        assert through_slurm.exit_code == 0, through_slurm.output
    return root, through_slurm.output


@pytest.mark.slurm
def test_a_sweep_through_slurm_gives_the_in_process_numbers_to_the_bit(six_runs):
    root, output = six_runs
    a, b = run_files(root / "inprocess"), run_files(root / "slurm")
    assert_same_numbers(a, b)
    [submission] = slurm_jobs.read_jobs(root / "slurm")
    assert len(submission["tasks"]) == 6 and all(len(task["run_ids"]) == 1 for task in submission["tasks"])
    assert {r["slurm"]["job_id"] for r in b.values()} == {task["job_id"] for task in submission["tasks"]}
    assert all(r["slurm"]["restart_count"] == 0 for r in b.values())
    assert re.search(r"submitted 6 run\(s\) as 6 SLURM task\(s\) of job \d+ \(partition default, 60 min\)", output)
    assert len(re.findall(r"^\S+: ok test \d+\.\d\d % \(\d+ s\)$", output, re.M)) == 6
    assert (root / "slurm" / "report.md").is_file() and len(pd.read_csv(root / "slurm" / "runs.csv")) == 6
    assert "#SBATCH --time=60\n" in next((root / "slurm" / ".submitit").glob("*/*_submission.sh")).read_text()


@pytest.mark.slurm
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_slurm_runs_record_one_thread_and_two_thread_runs_are_never_pooled_with_them(six_runs, tmp_path):
    """The SLURM tasks, allocated one CPU each on a two-core node that does not confine them,
    trained with one thread (l2reg.executors.slurm.allocated_cores) and say so; an in-process sweep
    on two cores (two threads) that would add runs to their context is refused before it trains,
    naming both thread counts, and a folder holding both is reported as mixed."""
    import shutil
    import subprocess

    root, _ = six_runs
    records = run_files(root / "slurm")
    assert {r["threads"] for r in records.values()} == {1}
    folder = tmp_path / "slurm"
    shutil.copytree(root / "slurm" / "runs", folder / "runs")
    command = [str(Path(sys.executable).with_name("l2sweep")), "run", "alpha=0.0,1e-3", "seeds=4", "train.epochs=1",
               f"data.root={records[next(iter(records))]['config']['data']['root']}", f"results_dir={tmp_path}",
               "name=slurm", *QUICK]
    two_cores = lambda: os.sched_setaffinity(0, range(2))  # noqa: E731 - past the suite's one-core pinning
    refused = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=two_cores)
    assert refused.returncode == 2, refused.stderr
    assert "1 thread(s)" in refused.stderr and "2 thread(s)" in refused.stderr, refused.stderr
    assert sorted(p.name for p in (folder / "runs").glob("*.json")) == sorted(f"{k}.json" for k in records)
    pooled = subprocess.run([*command, "--mixed-code"], capture_output=True, text=True, timeout=600,
                            preexec_fn=two_cores)
    assert pooled.returncode == 0, pooled.stderr
    verdict = json.loads((folder / "verdict.json").read_text())
    [context] = verdict["mixed_code"]
    assert sorted(verdict["code_paths"][context]["threads"]) == ["1", "2"]


@pytest.mark.slurm
def test_array_parallelism_caps_the_runs_training_at_once(six_runs):
    root, _ = six_runs
    records = run_files(root / "slurm")
    assert "#SBATCH --array=0-5%2\n" in next((root / "slurm" / ".submitit").glob("*/*_submission.sh")).read_text()
    assert max_overlap(intervals(records)) == 2  # the node has 4 CPUs: only the throttle holds it to 2


def submitted_job(folder: Path) -> str:
    return slurm_jobs.read_jobs(folder)[-1]["tasks"][0]["job_id"]


@pytest.mark.slurm
def test_a_job_killed_mid_run_is_reported_failed_with_its_log_and_submitted_again(slurm, tiny_mnist, tmp_path):
    folder = tmp_path / "k"
    args = ["run", "alpha=0", "seed=0", "train.epochs=1000", f"data.root={tiny_mnist}", f"results_dir={tmp_path}",
            "name=k", "launcher=slurm", *QUICK, "--no-wait"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    job = submitted_job(folder)
    assert re.search(rf"^{job}$", first.output, re.M)  # the job id, on a line of its own
    [rid] = wait_until(lambda: list(run_status.held_locks(folder / "runs")), 60, "the run to train")
    slurm.run("scancel", job)
    wait_until(lambda: states(folder)[rid] == "failed", 60, "the run to be reported failed")
    status = invoke("status", folder)
    assert status.exit_code == 0, status.output
    assert "1 runs: 0 done (0 ok, 0 diverged), 0 running, 0 queued, 1 failed, 0 not started" in status.output
    assert re.search(rf"failed  {rid} job {job}: .*\(\*\*\* JOB {job} ON {slurm.node} CANCELLED AT \S+ \*\*\*\)",
                     status.output), status.output
    assert re.search(r"^ +\| slurmstepd\S*: error: \*\*\* JOB", status.output, re.M)  # the log's last lines
    assert "re-run the same `l2sweep run` command" in status.output

    again = invoke(*args)  # the same command: submits the failed run again, and only it
    assert again.exit_code == 0, again.output
    retry = submitted_job(folder)
    assert retry != job and [t["run_ids"] for t in slurm_jobs.read_jobs(folder)[-1]["tasks"]] == [[rid]]
    assert states(folder)[rid] in ("queued", "running")
    third = invoke(*args)  # while it is queued or running, nothing more is submitted
    assert "nothing to submit" in third.output and len(slurm_jobs.read_jobs(folder)) == 2
    slurm.run("scancel", retry)


@pytest.mark.slurm
def test_no_wait_then_status_then_report(slurm, tiny_mnist, tmp_path):
    folder = tmp_path / "n"
    args = ["run", "alpha=0.0,1e-3", "seed=0", "train.epochs=1", f"data.root={tiny_mnist}", f"results_dir={tmp_path}",
            "name=n", "launcher=slurm", *QUICK]
    submitted = invoke(*args, "--no-wait")
    assert submitted.exit_code == 0, submitted.output
    assert f"`l2sweep status {folder}` shows where each run stands" in submitted.output
    assert not (folder / "runs.csv").exists()  # nothing waited for, nothing reported
    [submission] = slurm_jobs.read_jobs(folder)
    assert len(submission["tasks"]) == 2 and submission["command"][-1] == "--no-wait"
    early = invoke("status", folder)
    assert early.exit_code == 0 and "2 runs:" in early.output
    wait_until(lambda: "2 done (2 ok, 0 diverged)" in invoke("status", folder).output, 90, "both runs done")
    report = invoke("report", folder)
    assert report.exit_code == 0, report.output
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 2 and set(runs["status"]) == {"ok"}


@pytest.mark.slurm
def test_time_limits_requeue_jobs_then_count_their_runs_failed(slurm, tiny_mnist, tmp_path):
    """Two sweeps at once, ~1.5 min (SLURM checks time limits every 30 s).
    - `limit`: a run far too long for timeout_min=1. SLURM sends USR2 signal_delay_s=20 (+ up to one
      30-s check) before the limit, submitit requeues the job (max_num_timeout=1), the run starts
      again from scratch, the second USR2 ends it: failed, "timed-out too many times".
    - `requeue`: the USR2 that SLURM sends at the time limit, sent by hand while the run trains
      (timeout_min <= 10: submitit counts every USR2 as a timeout); the job requeues itself and
      the run restarts and finishes ok."""
    common = [f"data.root={tiny_mnist}", f"results_dir={tmp_path}", "launcher=slurm", "alpha=0", *QUICK,
              "launcher.signal_delay_s=20", "launcher.max_num_timeout=1"]
    limit = ["run", *common, "name=limit", "seed=0", "train.epochs=100000", "launcher.timeout_min=1"]
    requeue = ["run", *common, "name=requeue", "seed=1", "train.epochs=15", "launcher.timeout_min=5"]
    assert invoke(*limit, "--no-wait").exit_code == 0
    assert invoke(*requeue, "--no-wait").exit_code == 0
    job = submitted_job(tmp_path / "requeue")
    wait_until(lambda: run_status.held_locks(tmp_path / "requeue" / "runs"), 60, "the run to train")
    time.sleep(1)  # well into training: submitit's USR2 handler is installed before the run starts
    slurm.run("scancel", "--signal=USR2", job)

    waited = invoke(*limit)  # the same command, waiting: follows the requeued job to its end
    assert waited.exit_code == 1, waited.output
    [record] = run_files(tmp_path / "limit").values()
    assert record["status"] == "failed" and "timed-out too many times" in record["error"]
    assert record["slurm"]["restart_count"] == 1  # started twice
    paths = JobPaths(slurm_jobs.read_jobs(tmp_path / "limit")[-1]["submitit_folder"], job_id=record["slurm"]["job_id"])
    assert re.search(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE \*\*\*", paths.stderr.read_text())
    assert paths.stdout.read_text().count("this job is timed-out") == 2
    assert "timed-out too many times" in waited.output
    status = invoke("status", tmp_path / "limit")
    assert re.search(r"failed  \S+ job \d+: UncompletedJobError: Job not requeued because: timed-out too many times",
                     status.output), status.output

    # (a requeue can leave a failed run file behind until the restart rewrites it: wait for "done")
    wait_until(lambda: list(states(tmp_path / "requeue").values()) == ["done"], 120, "the requeued run")
    [record] = run_files(tmp_path / "requeue").values()
    assert record["status"] == "ok" and record["slurm"]["restart_count"] == 1  # started twice, finished ok
    paths = JobPaths(slurm_jobs.read_jobs(tmp_path / "requeue")[-1]["submitit_folder"], job_id=job)
    assert paths.stdout.read_text().count("this job is timed-out") == 1
    assert "1 runs: 1 done (1 ok" in invoke("status", tmp_path / "requeue").output
