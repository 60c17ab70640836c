"""Where each run of a results folder stands (`run_states`, `l2sweep status`), from its run file,
its lock and the scheduler, in this order:
1. a run file that says ok or diverged (l2reg.sweep.is_finished_record): done;
2. a held lock on this host (/proc/locks, never by taking the lock): running here;
3. the latest SLURM task that holds the run (jobs.json), by the rule of l2reg.executors.slurm_jobs:
   queued or running while squeue says so; a task that ended with success leaves it to the run
   file (a failed file written by that submission's job says why); an error pickle, a final
   squeue state or a job SLURM forgot without a result: failed, with the last lines of its log;
4. a run file that says failed: failed; otherwise not started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from l2reg import files, sweep
from l2reg.executors import slurm_jobs
from l2reg.executors.pack_job import locks_folder

STATES = ("done", "running", "queued", "failed", "not started")  # and "unknown": squeue could not answer


def held_locks(runs_dir: Path) -> dict[str, int]:
    """{run id: pid} of the run locks held on this host, read from /proc/locks (taking a lock to
    test it could make a starting job skip its run)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return {}
    held: dict[tuple[int, int, int], int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:  # "->": a blocked waiter
            continue
        try:
            major, minor, inode = parts[5].split(":")
            held[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
        except ValueError:
            continue
    found = {}
    for path in locks_folder(runs_dir).glob("*.lock") if held else ():
        try:
            st = path.stat()
        except OSError:
            continue
        key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        if key in held:
            found[path.stem] = held[key]
    return found


@dataclass
class RunState:
    """Where a run stands: done | running | queued | failed | not started | unknown."""

    run_id: str
    state: str
    detail: str = ""
    job_id: str | None = None
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)
    record: dict | None = None


class _Records:
    """Run files read once per change (stat), so polling a large sweep stays cheap."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.cache: dict[str, tuple[tuple, dict | None]] = {}

    def get(self, run_id: str) -> dict | None:
        path = self.runs_dir / f"{run_id}.json"
        try:
            st = path.stat()
        except OSError:
            self.cache.pop(run_id, None)
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if run_id in self.cache and self.cache[run_id][0] == stamp:
            return self.cache[run_id][1]
        try:
            record = files.read_json(path)
        except (OSError, ValueError):
            return None  # being replaced, or damaged: not cached, read again next time
        record = record if isinstance(record, dict) and record.get("run_id") == run_id else None
        self.cache[run_id] = (stamp, record)
        return record


def known_runs(results_dir: Path) -> list[str]:
    """The runs a results folder is about: planned by any invocation (sweep.json), submitted
    (jobs.json) or with a file in runs/."""
    results_dir = Path(results_dir)
    ids = dict.fromkeys(files.planned_runs(results_dir))
    for submission in slurm_jobs.read_jobs(results_dir):
        for task in submission["tasks"]:
            ids.update(dict.fromkeys(task.get("run_ids", [])))
    ids.update(dict.fromkeys(p.stem for p in files.run_files(results_dir / "runs")))
    return list(ids)


class StatusReader:
    """run_states for one results folder, reusable while polling (run files are re-read only when
    they change). `scheduler_error` says why squeue could not answer at the last call (or None)."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self.records = _Records(self.results_dir / "runs")
        self.scheduler_error: str | None = None

    def __call__(self, run_ids: Sequence[str] | None = None) -> dict[str, RunState]:
        run_ids = list(run_ids) if run_ids is not None else known_runs(self.results_dir)
        latest = slurm_jobs.latest_tasks(self.results_dir)
        held = held_locks(self.results_dir / "runs")
        records = {rid: self.records.get(rid) for rid in run_ids}
        open_runs = [rid for rid in run_ids
                     if not sweep.is_finished_record(records[rid]) and rid not in held and rid in latest]
        states: dict[str, str] | None = {}
        self.scheduler_error = None
        if open_runs:
            try:
                states = slurm_jobs.squeue_states([latest[rid][1]["job_id"] for rid in open_runs])
            except slurm_jobs.SchedulerError as error:
                states, self.scheduler_error = None, str(error)
        tasks: dict[str, slurm_jobs.TaskState] = {}
        out: dict[str, RunState] = {}
        for rid in run_ids:
            record = records[rid]
            if sweep.is_finished_record(record):
                acc = (record.get("metrics") or {}).get("test_acc")
                detail = (f"ok, test {acc:.2f} %" if record["status"] == "ok"
                          else f"diverged: {record.get('error') or ''}".strip())
                job_id = (record.get("slurm") or {}).get("job_id")
                out[rid] = RunState(rid, "done", detail, job_id, record=record)
            elif rid in held:
                job_id = latest[rid][1]["job_id"] if rid in latest else None
                out[rid] = RunState(rid, "running", f"pid {held[rid]} on this host", job_id, record=record)
            elif rid in latest:
                submission, task = latest[rid]
                job_id = task["job_id"]
                if job_id not in tasks:
                    tasks[job_id] = slurm_jobs.task_state(job_id, submission["submitit_folder"], states)
                out[rid] = self._from_task(rid, tasks[job_id], submission, record)
            elif record is not None and record.get("status") == "failed":
                out[rid] = RunState(rid, "failed", str(record.get("error") or "failed"), record=record)
            else:
                out[rid] = RunState(rid, "not started", record=record)
        return out

    @staticmethod
    def _from_task(rid: str, task: slurm_jobs.TaskState, submission: dict, record: dict | None) -> RunState:
        job = task.job_id
        if task.phase in ("queued", "running"):
            return RunState(rid, task.phase, task.scheduler or "", job, record=record)
        # a failed run file written by this submission's job says why (older ones are stale)
        fresh_error = None
        if record is not None and record.get("status") == "failed" and (
                record.get("finished_unix") or 0) >= submission.get("submitted_unix", 0):
            fresh_error = str(record.get("error") or "failed")
        if task.phase == "ended":
            why = fresh_error or "its job ended without writing it (another process held it?)"
            return RunState(rid, "failed", why, job, record=record)
        if task.phase == "unknown":
            return RunState(rid, "unknown", task.error or "", job, task.log, task.log_tail, record)
        why = f"{task.error}" + (f"; the run file says {fresh_error}" if fresh_error else "")
        return RunState(rid, "failed", why, job, task.log, task.log_tail, record)


def run_states(results_dir: Path, run_ids: Sequence[str] | None = None) -> dict[str, RunState]:
    return StatusReader(results_dir)(run_ids)


def summary_counts(states: dict[str, RunState]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for state in states.values():
        counts[state.state] = counts.get(state.state, 0) + 1
    return counts


def failure_record(state: RunState) -> dict:
    """A record for the list of runs that did not finish (not written: the run stays to do)."""
    record = dict(state.record or {})
    record.update({"run_id": state.run_id, "status": "failed", "error": state.detail,
                   "seconds": record.get("seconds") or 0.0, "job_id": state.job_id, "log": state.log,
                   "log_tail": state.log_tail})
    return record
