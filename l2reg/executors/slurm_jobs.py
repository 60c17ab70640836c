"""The SLURM jobs of a results folder as l2sweep reads them back: the submissions in
<results>/jobs.json, squeue's states, submitit's result pickles and logs, and the rule that turns
them into a task's state (`task_state`).

A task's state comes from `squeue` alone (no sacct: accounting is often off, and then submitit's
job.state is always UNKNOWN):
- squeue says PENDING/REQUEUED/... (queued) or RUNNING/COMPLETING/... (running): active, even if a
  result pickle exists (a requeue can leave an error pickle behind while the job waits to start
  again);
- else the task's result pickle decides: success -> ended (its run files decide), error -> failed
  with the error;
- else a final squeue state (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) is the failure;
- else (the id is purged from squeue, no result) the job is lost: failed, with the last lines of
  its log (slurmstepd writes "*** JOB 12 ON node CANCELLED AT ... DUE TO TIME LIMIT ***").
A job that died without a result is never waited on (submitit's result() would wait forever).

submitit is imported only where a task's files are read, so the status of a folder that never
used SLURM does not import it.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from l2reg import files

JOBS_FILE = "jobs.json"
# squeue's final job states: any other state (PREEMPTED with PreemptMode=REQUEUE, SPECIAL_EXIT,
# one a newer SLURM adds) counts as not over; a state that really was final becomes "lost" once
# squeue forgets the job.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "REVOKED"}
# what `l2sweep status` calls the states of a job that is not over (others: queued)
ACTIVE_STATES = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "SUSPENDED": "running", "STOPPED": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "RESIZING": "running",
}
LOG_LINES = 6


class SchedulerError(RuntimeError):
    """squeue (or sbatch) could not be run or did not answer."""


# ---- jobs.json ----

class _FileLock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def read_jobs(results_dir: Path) -> list[dict]:
    """The submissions recorded in results_dir/jobs.json, oldest first ([] when none)."""
    try:
        data = files.read_json(Path(results_dir) / JOBS_FILE)
    except (OSError, ValueError):
        return []
    submissions = data.get("submissions", []) if isinstance(data, dict) else []
    return [s for s in submissions if isinstance(s, dict) and isinstance(s.get("tasks"), list)]


def append_jobs(results_dir: Path, submission: dict) -> None:
    """Append a submission to jobs.json; a jobs.json that exists but does not parse is kept aside
    as jobs.json.damaged-<time> (never silently replaced: it may list queued jobs)."""
    with _FileLock(Path(results_dir) / ".jobs.lock"):
        path = Path(results_dir) / JOBS_FILE
        if path.exists():
            try:
                files.read_json(path)
            except (OSError, ValueError):
                path.rename(path.with_name(f"{JOBS_FILE}.damaged-{int(time.time())}"))
        submissions = read_jobs(results_dir)
        submissions.append(submission)
        files.write_json_atomic(Path(results_dir) / JOBS_FILE, {"submissions": submissions})


def latest_tasks(results_dir: Path) -> dict[str, tuple[dict, dict]]:
    """{run id: (submission, task)} of the latest task that holds each submitted run."""
    latest: dict[str, tuple[dict, dict]] = {}
    for submission in read_jobs(results_dir):  # oldest first: the last one holding a run wins
        for task in submission["tasks"]:
            for rid in task.get("run_ids", []):
                latest[rid] = (submission, task)
    return latest


# ---- squeue ----

def _expand_ids(job_id: str) -> list[str]:
    """squeue's "123_[0-3,7%2]" (array tasks not yet split off) as ["123_0", ..., "123_7"]."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    ids = []
    for part in match.group(2).split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            ids += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job or array-task id: squeue state} for the jobs squeue still knows (it forgets a job
    MinJobAge after its end). Raises SchedulerError when squeue cannot be run or fails."""
    base = sorted({str(job_id).split("_")[0] for job_id in job_ids})
    states: dict[str, str] = {}
    for start in range(0, len(base), 200):
        chunk = base[start:start + 200]
        try:
            done = subprocess.run(["squeue", "-h", "-r", "--states=all", "-j", ",".join(chunk), "-o", "%i %T"],
                                  capture_output=True, text=True, timeout=60)
        except FileNotFoundError as error:
            raise SchedulerError("squeue not found on PATH") from error
        except subprocess.TimeoutExpired as error:
            raise SchedulerError("squeue did not answer in 60 s") from error
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:  # every id of the list purged (a list of one)
                continue
            raise SchedulerError(f"squeue failed: {' '.join(done.stderr.split()) or done.returncode}")
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                for job_id in _expand_ids(parts[0]):
                    states[job_id] = parts[1]
    return states


# ---- a task's files and state ----

def read_result(path: Path):
    """A submitit result pickle: ("success", value) or ("error", traceback text); None when absent."""
    from submitit.core.utils import pickle_load

    try:
        outcome = pickle_load(path)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a damaged pickle is an answer too
        return ("error", f"unreadable result pickle {path}: {type(error).__name__}: {error}")
    return outcome if isinstance(outcome, tuple) and len(outcome) == 2 else ("error", f"unexpected result {path}")


def log_tail(paths, n: int = LOG_LINES) -> tuple[str | None, list[str]]:
    """The last lines of a task's stderr (where slurmstepd says why a job ended), else of its stdout."""
    for path in (paths.stderr, paths.stdout):
        try:
            lines = [line.rstrip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            continue
        if lines:
            return str(path), lines[-n:]
    return str(paths.stderr), []


def slurm_reason(paths) -> str | None:
    """slurmstepd's own line about the job's end in its stderr, e.g. "*** JOB 12 ON node CANCELLED AT
    2026-01-02T03:04:05 DUE TO TIME LIMIT ***" (the last one: a requeued job has several)."""
    try:
        text = paths.stderr.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"\*\*\* JOB \S+ ON \S+ .*? \*\*\*", text)
    return found[-1] if found else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def _refresh(folder: Path) -> None:
    """List a folder, so that an NFS client drops its cached view of what is (not) in it."""
    try:
        with os.scandir(folder):
            pass
    except OSError:
        pass


@dataclass
class TaskState:
    """Where a SLURM task stands: queued | running (active in squeue) | ended (success pickle) |
    failed (error pickle or a final squeue state) | lost (purged, no result) | unknown (no squeue)."""

    job_id: str
    phase: str
    scheduler: str | None = None
    error: str | None = None
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)


def task_state(job_id: str, folder: str, states: dict[str, str] | None) -> TaskState:
    """The rule of this module's docstring, for one task; `states` from squeue_states (None when
    squeue could not answer)."""
    from submitit.core.utils import JobPaths

    state = (states or {}).get(job_id)
    if state is not None and state not in FINAL_STATES:
        return TaskState(job_id, ACTIVE_STATES.get(state, "queued"), state)
    paths = JobPaths(folder, job_id=job_id)
    _refresh(paths.folder)
    outcome = read_result(paths.result_pickle)
    if outcome is not None and outcome[0] == "success":
        return TaskState(job_id, "ended", state)
    if state == "COMPLETED" and outcome is None:
        # SLURM says the job ended well but its result is not visible here yet (a shared file
        # system's cache): not a failure; once squeue forgets the job, it is "lost" if still absent
        return TaskState(job_id, "unknown", state, "SLURM says COMPLETED, its result is not visible here yet")
    log, tail = log_tail(paths)
    reason = slurm_reason(paths)
    said = f" ({reason})" if reason else ""
    if outcome is not None:
        return TaskState(job_id, "failed", state, f"the job raised {_last_line(outcome[1])}{said}", log, tail)
    if state is not None:
        return TaskState(job_id, "failed", state, f"SLURM ended the job: {state}{said}", log, tail)
    if states is None:
        return TaskState(job_id, "unknown", None, "squeue could not answer", log, tail)
    return TaskState(job_id, "lost", None, "the job ended without a result and SLURM has forgotten it"
                     + (said or " (cancelled, killed at its time limit, out of memory or node lost?)"), log, tail)
