"""A pack job: the unit of work every executor runs. Its runs share a context (data and training
settings); the job carries them as plain, picklable values (`PackJob`) so that it trains the same
in this process, in a worker process or on a SLURM node (submitit pickles it by this module's path).

`run_pack_job` loads the job's data, resolves its device and the compile decision where it runs
(per context, so every arm of a comparison takes the same code path), trains with the one loop in
l2reg.train, and writes each run's record atomically while holding the run's `RunLock`.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from l2reg import axes, files, fingerprint, sweep
from l2reg.config import from_dict, to_dict

LOCKS_FOLDER = ".locks"  # under runs/: one <run_id>.lock per run (l2reg.executors.status reads them)


def locks_folder(runs_dir: Path) -> Path:
    return Path(runs_dir) / LOCKS_FOLDER


class RunLock:
    """An exclusive per-run lock (fcntl.flock on runs/.locks/<run_id>.lock).

    The kernel drops a flock when its process dies, even by SIGKILL, so a crashed sweep never
    leaves a stale lock behind. Lock files are never deleted (deleting a flock file races).
    """

    def __init__(self, folder: Path, run_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{run_id}.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@dataclass
class PackJob:
    """One unit of work for an executor: a pack of runs of one context, in plain values."""

    run_ids: list[str]
    configs: list[dict]  # to_dict of each run's config (from_dict rebuilds it)
    results_dir: str
    force: bool = False
    origin: dict = field(default_factory=dict)  # provenance of the submitting process

    def planned(self) -> list[sweep.PlannedRun]:
        return [sweep.PlannedRun(rid, from_dict(cfg)) for rid, cfg in zip(self.run_ids, self.configs)]


@dataclass
class JobResult:
    records: list[dict]
    busy: list[str]  # runs another process held (not trained here)


def provenance() -> dict:
    """What produced a run: library versions, git commit, the code fingerprint (l2reg.fingerprint),
    host."""
    return {"versions": files.versions(), "git_commit": files.git_commit(),
            "code_fingerprint": fingerprint.current(), "host": socket.gethostname()}


def where_running() -> dict:
    """The SLURM job a run trains in, from the job's environment (nothing outside SLURM):
    `restart_count` > 0 when the job was requeued (time limit, preemption) and started again."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    array = env.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{array}_{env.get('SLURM_ARRAY_TASK_ID')}" if array else env["SLURM_JOB_ID"]
    return {"slurm": {"job_id": job_id, "raw_job_id": env["SLURM_JOB_ID"],
                      "restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
                      "node": env.get("SLURMD_NODENAME")}}


def run_record(run: sweep.PlannedRun, result: dict, origin: dict) -> dict:
    return {
        "run_id": run.run_id,
        "setting": sweep.setting_columns(run.config),
        "context_axes": axes.context_columns(run.config),
        "seed": run.config.seed,
        "context": sweep.context_label(run.config),
        **result,
        "config": to_dict(run.config),
        **origin,
    }


def make_jobs(planned: Sequence[sweep.PlannedRun], results_dir: Path, pack_size: int,
              force: bool = False) -> list[PackJob]:
    origin = provenance()
    return [PackJob([r.run_id for r in pack], [to_dict(r.config) for r in pack], str(results_dir), force, origin)
            for pack in sweep.packs(planned, pack_size)]


def _stamp(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(unix))


def _take_runs(job: PackJob, runs_dir: Path) -> tuple[list[tuple[sweep.PlannedRun, RunLock]], list[str]]:
    """Lock the job's runs that are to train here: (run, its held lock) for each, and the ids of the
    runs another process holds."""
    mine: list[tuple[sweep.PlannedRun, RunLock]] = []
    busy: list[str] = []
    for run in job.planned():
        lock = RunLock(locks_folder(runs_dir), run.run_id)
        if not lock.acquire():
            busy.append(run.run_id)
        elif not job.force and sweep.is_finished(runs_dir / f"{run.run_id}.json"):
            lock.release()  # finished meanwhile (by another process, or an earlier attempt)
        else:
            mine.append((run, lock))
    return mine, busy


def _train(pack: list[sweep.PlannedRun], notify: Callable, data_cache: dict | None) -> list[dict]:
    """The runs' results from the one training loop; a pack that raises gives a `failed` result per
    run (with the error), so one broken pack never ends a sweep."""
    from l2reg.device import resolve_device
    from l2reg.train import train_pack

    cfg = pack[0].config
    started = time.perf_counter()
    device_name = cfg.train.device
    try:
        device = resolve_device(device_name)
        data = sweep.load_data(cfg, device, data_cache)
        settings = sweep.train_settings(cfg, device.type, len(data.train_y))
        specs = [sweep.run_spec(r.config) for r in pack]
        notify("pack", runs=[r.run_id for r in pack], epochs=settings.epochs)
        return train_pack(specs, data, settings, device,
                          on_progress=lambda e, s, n, total=settings.epochs: notify(
                              "epoch", epoch=e, step=s, steps=n, epochs=total))
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        return [{"status": "failed", "error": message, "traceback": traceback.format_exc(),
                 "metrics": {}, "history": [], "seconds": time.perf_counter() - started,
                 "pack_size": len(pack), "device": device_name, "peak_memory_mib": None} for _ in pack]


def _changed_code(pack: list[sweep.PlannedRun], submitted: str, here: str) -> list[dict]:
    """A job whose code is not the code it was submitted with (a queued SLURM job that starts after
    the working tree changed): its runs fail, saying so, rather than train with other code."""
    message = (f"the code changed after submission (fingerprint {submitted} when submitted, {here} where it "
               "runs): not trained; submit again from the code you mean to run")
    return [{"status": "failed", "error": message, "metrics": {}, "history": [], "seconds": 0.0,
             "pack_size": len(pack), "device": run.config.train.device, "peak_memory_mib": None} for run in pack]


def run_pack_job(job: PackJob, notify: Callable | None = None, data_cache: dict | None = None) -> JobResult:
    """Train the runs of a job that are not finished and not held by another process, wherever
    this is called (this process, a worker, a SLURM node); write each run's JSON atomically.

    The device is resolved here (a `train.device=cuda` sweep may be submitted from a CPU host),
    and the compile decision is made here for the whole context. Exceptions in training are
    recorded as `failed` runs (retried by the next invocation), never raised. `notify(event,
    **info)` gets 'pack' (runs, epochs), 'epoch' (epoch, step, steps, epochs) and 'done' (records)."""
    notify = notify or (lambda event, **info: None)
    runs_dir = Path(job.results_dir) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    mine, busy = _take_runs(job, runs_dir)
    if not mine:
        return JobResult([], busy)
    try:
        pack = [run for run, _ in mine]
        started_unix = time.time()
        origin = {**provenance(), "pid": os.getpid(), **where_running(), "submitted_by": job.origin,
                  "started_at": _stamp(started_unix), "started_unix": started_unix}
        submitted = job.origin.get("code_fingerprint")
        if submitted and submitted != origin["code_fingerprint"]:
            results = _changed_code(pack, submitted, origin["code_fingerprint"])
        else:
            results = _train(pack, notify, data_cache)
        records = []
        for run, result in zip(pack, results):
            finished_unix = time.time()
            record = run_record(run, result, {**origin, "finished_at": _stamp(finished_unix),
                                              "finished_unix": finished_unix})
            files.write_json_atomic(runs_dir / f"{run.run_id}.json", record)
            records.append(record)
        notify("done", records=records)
        return JobResult(records, busy)
    finally:
        for _, lock in mine:
            lock.release()
