"""Executors: where a sweep's packs train. The run files are the only state they share.

- in-process (`launcher=inprocess`, the default): l2reg.sweep.execute, pack after pack in the
  `l2sweep run` process.
- local workers (`launcher=local`): `LocalWorkers`, N worker processes on this machine (spawn
  start method), each pinned to its own `threads_per_worker` cores (round-robin over the cores
  this process may use) and, on CUDA, to one GPU (round-robin through CUDA_VISIBLE_DEVICES, set
  before the worker touches CUDA). Each worker runs l2reg.sweep.run_pack_job on the packs it
  takes from a queue and sends the records back; Ctrl-C ends the workers.
- SLURM (`launcher=slurm`): `submit_slurm`, one submitit job array per invocation, one array
  task per pack; each task is a `PackTask` (a submitit Checkpointable) running run_pack_job, so a
  job cut by its time limit (or preempted) requeues itself up to `max_num_timeout` times and
  restarts its unfinished runs from scratch (finished runs are skipped through their JSONs; there
  is no per-epoch resume). Each submission is appended to `<results>/jobs.json`.

Where a run stands (`run_states`, `l2sweep status`) comes from its run file, its lock and the
scheduler, in this order:
1. a run file that says ok or diverged: done;
2. a held lock on this host (/proc/locks, never by taking the lock): running here;
3. the latest SLURM task that holds the run, by `squeue` alone (no sacct: accounting is often off,
   and then submitit's job.state is always UNKNOWN):
   - squeue says PENDING/REQUEUED/... (queued) or RUNNING/COMPLETING/... (running): active, even
     if a result pickle exists (a requeue can leave an error pickle behind while the job waits to
     start again);
   - else the task's result pickle decides: success -> the run file decides (a failed file says
     why), error -> failed with the error;
   - else a final squeue state (CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...) is the failure;
   - else (the id is purged from squeue, no result) the job is lost: failed, with the last lines of
     its log (slurmstepd writes "*** JOB 12 ON node CANCELLED AT ... DUE TO TIME LIMIT ***").
   A job that died without a result is never waited on (submitit's result() would wait forever).
4. a run file that says failed: failed; otherwise not started.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import queue
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import submitit

from l2reg import files, sweep
from l2reg.config import LauncherConfig, to_dict

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
# Without a GPU on the submitting host the pack size for CUDA jobs cannot come from free memory:
# the most l2reg.sweep.auto_pack_size gives (any GPU with >= 8 GiB free). train.pack_size overrides.
SLURM_CUDA_PACK_SIZE = 64
LOG_LINES = 6


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [item.strip() for item in visible.split(",") if item.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def default_n_jobs(device_type: str, threads_per_worker: int = 1) -> int:
    """launcher.n_jobs when unset: on a CPU as many workers as the available cores hold at
    threads_per_worker cores each; one per GPU on CUDA."""
    if device_type == "cuda":
        return max(1, len(visible_gpus()))
    return max(1, len(available_cores()) // max(1, threads_per_worker))


# ---- local workers ----

def worker_cores(index: int, threads: int, cores: Sequence[int]) -> list[int]:
    """The cores of worker `index`: `threads` consecutive ones, round-robin, so workers share
    cores only when there are more worker threads than cores."""
    return sorted({cores[(index * threads + k) % len(cores)] for k in range(threads)})


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies (killed, not Ctrl-C), so no worker goes on
    training packs nobody waits for; elsewhere a watchdog thread notices the new parent pid."""
    import ctypes
    import threading

    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() == parent:  # 1 = PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(index: int, cores: list[int], gpu: str | None, threads: int, tasks, results) -> None:
    """A worker process: take packs from `tasks` until None, train each, send back its records."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent ends us
    _die_with_parent()
    results.cancel_join_thread()  # never hang at exit on a parent that stopped reading
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA in this process
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # l2reg.train.configure_device: one torch thread per available core
    import torch

    torch.set_num_threads(max(1, min(threads, len(cores) or threads)))
    cache: dict = {}
    while (item := tasks.get()) is not None:
        number, job = item
        results.put(("started", index, number, os.getpid()))
        try:
            result = sweep.run_pack_job(job, None, cache)
            results.put(("done", index, number, result.records, result.busy))
        except Exception as error:  # not training (run_pack_job records those): locks, the file system
            results.put(("error", index, number, f"{type(error).__name__}: {error}"))


class LocalWorkers:
    """`run_jobs` for l2reg.sweep.execute: the jobs on `n_jobs` worker processes of this machine."""

    def __init__(self, launcher: LauncherConfig, device_type: str, notify: Callable | None = None):
        self.n_jobs = launcher.n_jobs or default_n_jobs(device_type, launcher.threads_per_worker)
        self.threads = launcher.threads_per_worker
        self.gpus = visible_gpus() if device_type == "cuda" else []
        self.notify = notify or (lambda event, **info: None)

    def __call__(self, jobs: list[sweep.PackJob]) -> tuple[list[dict], list[str]]:
        if not jobs:
            return [], []
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited torch or CUDA state
        tasks, results = context.Queue(), context.Queue()
        for number, job in enumerate(jobs):
            tasks.put((number, job))
        n = min(self.n_jobs, len(jobs))
        for _ in range(n):
            tasks.put(None)
        cores = available_cores()
        workers = [context.Process(target=_worker_main, name=f"l2sweep-worker-{i}", daemon=True,
                                   args=(i, worker_cores(i, self.threads, cores),
                                         self.gpus[i % len(self.gpus)] if self.gpus else None, self.threads,
                                         tasks, results))
                   for i in range(n)]
        records: list[dict] = []
        busy: list[str] = []
        in_flight: dict[int, int] = {}  # worker -> job number
        finished: set[int] = set()
        dead: set[int] = set()

        def handle(message) -> None:
            kind, worker, number = message[:3]
            if kind == "started":
                in_flight[worker] = number
                self.notify("status", text=f"{len(in_flight)} of {n} workers training")
                return
            in_flight.pop(worker, None)
            finished.add(number)
            if kind == "done":
                records.extend(message[3])
                busy.extend(message[4])
                if message[3]:
                    self.notify("done", records=message[3])
            else:
                self.notify("done", records=self._lost(jobs[number], message[3], records))

        try:
            for worker in workers:
                worker.start()
            self.notify("status", text=f"{n} worker processes starting")
            while len(finished) < len(jobs):
                try:
                    handle(results.get(timeout=0.5))
                    continue
                except queue.Empty:
                    pass
                for i, worker in enumerate(workers):
                    if i in dead or worker.exitcode is None:
                        continue
                    dead.add(i)
                    while True:  # what it sent before it died
                        try:
                            handle(results.get(timeout=0.2))
                        except queue.Empty:
                            break
                    if i in in_flight:
                        number = in_flight.pop(i)
                        finished.add(number)
                        why = f"worker process died (exit code {worker.exitcode}) while training this pack"
                        self.notify("done", records=self._lost(jobs[number], why, records))
                if len(dead) == n and len(finished) < len(jobs):
                    for number in sorted(set(range(len(jobs))) - finished):
                        self.notify("done", records=self._lost(jobs[number], "every worker process died before "
                                                                             "this pack started", records))
                    break
        finally:
            for worker in workers:  # Ctrl-C or an error here: end the workers (their locks die with them)
                if worker.is_alive() and (worker.pid is not None):
                    worker.join(timeout=0 if len(finished) < len(jobs) else 10)
                    if worker.is_alive():
                        worker.terminate()
            for worker in workers:
                if worker.pid is not None:
                    worker.join(timeout=10)
                    if worker.is_alive():
                        worker.kill()
                        worker.join(timeout=5)
            tasks.cancel_join_thread()
            results.cancel_join_thread()
        return records, busy

    @staticmethod
    def _lost(job: sweep.PackJob, why: str, records: list[dict]) -> list[dict]:
        """Records (not written: the runs stay to do) for the runs of a pack no worker finished."""
        lost = [{"run_id": rid, "status": "failed", "error": why, "seconds": 0.0} for rid in job.run_ids]
        records.extend(lost)
        return lost


# ---- SLURM ----

class SchedulerError(RuntimeError):
    """squeue (or sbatch) could not be run or did not answer."""


class PackTask(submitit.helpers.Checkpointable):
    """A SLURM array task: one pack, trained by l2reg.sweep.run_pack_job on the node. When SLURM
    signals the time limit (or a preemption), submitit calls checkpoint() and requeues the job with
    what it returns: the same pack less the runs this attempt already wrote."""

    def __call__(self, job: sweep.PackJob) -> dict:
        self.written: set[str] = set()

        def notify(event: str, **info) -> None:
            if event == "done":
                self.written.update(record["run_id"] for record in info["records"])

        result = sweep.run_pack_job(job, notify)
        return {"runs": {r["run_id"]: r["status"] for r in result.records}, "busy": result.busy}

    def checkpoint(self, job: sweep.PackJob) -> submitit.helpers.DelayedSubmission:
        written = getattr(self, "written", set())
        keep = [i for i, rid in enumerate(job.run_ids) if rid not in written]
        remaining = replace(job, run_ids=[job.run_ids[i] for i in keep], configs=[job.configs[i] for i in keep])
        return submitit.helpers.DelayedSubmission(self, remaining)


def slurm_parameters(launcher: LauncherConfig, job_name: str) -> dict:
    """AutoExecutor.update_parameters arguments, as hydra-submitit-launcher builds them: generic keys
    as they are, the others prefixed slurm_; timeout_min always (submitit's default is 5 min)."""
    params = {"timeout_min": launcher.timeout_min, "name": job_name,
              "slurm_signal_delay_s": launcher.signal_delay_s,
              "slurm_array_parallelism": launcher.array_parallelism}
    for key in ("cpus_per_task", "gpus_per_node", "mem_gb"):
        if getattr(launcher, key) is not None:
            params[key] = getattr(launcher, key)
    for key in ("partition", "qos", "account", "constraint", "exclude", "gres"):
        if getattr(launcher, key) is not None:
            params[f"slurm_{key}"] = getattr(launcher, key)
    if launcher.setup:
        params["slurm_setup"] = list(launcher.setup)
    if launcher.additional_parameters:
        params["slurm_additional_parameters"] = dict(launcher.additional_parameters)
    return params


def submitit_folder(launcher: LauncherConfig, results_dir: Path) -> str:
    return str(Path(launcher.submitit_folder).expanduser().absolute()) if launcher.submitit_folder else str(
        Path(results_dir).absolute() / ".submitit" / "%j")


def slurm_pack_size(planned: Sequence[sweep.PlannedRun], launcher: LauncherConfig) -> int:
    """The pack size of SLURM jobs, decided on the submitting host: train.pack_size; else 1 for CPU
    jobs and, for CUDA jobs (train.device=cuda, or auto with gpus_per_node/gres asking for GPUs),
    this host's automatic size when it has a GPU, else SLURM_CUDA_PACK_SIZE."""
    if not planned:
        return 1
    train = planned[0].config.train
    if train.pack_size:
        return train.pack_size
    wants_gpu = train.device == "cuda" or (train.device == "auto" and (
        (launcher.gpus_per_node or 0) > 0 or "gpu" in (launcher.gres or "")))
    if not wants_gpu:
        return 1
    import torch

    if torch.cuda.is_available():
        return sweep.auto_pack_size(torch.device("cuda"))
    return SLURM_CUDA_PACK_SIZE


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


def submit_slurm(planned: Sequence[sweep.PlannedRun], results_dir: Path, launcher: LauncherConfig, pack_size: int,
                 force: bool = False, command: Sequence[str] = ()) -> dict:
    """Submit the runs as one job array (one task per pack); append the submission to jobs.json
    and return it. Raises SchedulerError when sbatch is missing or refuses the job."""
    results_dir = Path(results_dir).absolute()
    folder = submitit_folder(launcher, results_dir)
    jobs = sweep.make_jobs(planned, results_dir, pack_size, force=force)
    submitted_unix = time.time()
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=launcher.max_num_timeout)
        executor.update_parameters(**slurm_parameters(launcher, f"l2sweep-{results_dir.name}"))
        submitted = executor.map_array(PackTask(), jobs)
    except FileNotFoundError as error:
        raise SchedulerError(f"launcher=slurm needs SLURM's sbatch on PATH ({error})") from error
    except RuntimeError as error:  # submitit: 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise SchedulerError(f"launcher=slurm needs SLURM's srun and sbatch on PATH (submitit: {error})") from error
    except (subprocess.SubprocessError, submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            OSError) as error:
        output = getattr(error, "output", None) or getattr(error, "stderr", None) or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        text = " ".join((str(output) or str(error)).split())
        raise SchedulerError(f"sbatch refused the job: {text[-500:]}") from error
    submission = {
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(submitted_unix)),
        "submitted_unix": submitted_unix,
        "host": socket.gethostname(),
        "command": list(command),
        "job_ids": sorted({job.job_id.split("_")[0] for job in submitted}),
        "submitit_folder": folder,
        "launcher": to_dict(launcher),
        "tasks": [{"job_id": job.job_id, "run_ids": list(pack.run_ids)} for job, pack in zip(submitted, jobs)],
    }
    append_jobs(results_dir, submission)
    return submission


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


def read_result(path: Path):
    """A submitit result pickle: ("success", value) or ("error", traceback text); None when absent."""
    try:
        outcome = submitit.core.utils.pickle_load(path)
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
    state = (states or {}).get(job_id)
    if state is not None and state not in FINAL_STATES:
        return TaskState(job_id, ACTIVE_STATES.get(state, "queued"), state)
    paths = submitit.core.utils.JobPaths(folder, job_id=job_id)
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


def _refresh(folder: Path) -> None:
    """List a folder, so that an NFS client drops its cached view of what is (not) in it."""
    try:
        with os.scandir(folder):
            pass
    except OSError:
        pass


def held_locks(runs_dir: Path) -> dict[str, int]:
    """{run id: pid} of the run locks held on this host, read from /proc/locks (taking a lock to
    test it could make a starting job skip its run)."""
    locks_dir = Path(runs_dir) / ".locks"
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
    for path in locks_dir.glob("*.lock") if held else ():
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


def _finished(record: dict | None) -> bool:
    if not record:
        return False
    if record.get("status") == "diverged":
        return True
    return record.get("status") == "ok" and isinstance((record.get("metrics") or {}).get("test_acc"), (int, float))


def known_runs(results_dir: Path) -> list[str]:
    """The runs a results folder is about: planned by any invocation (sweep.json), submitted
    (jobs.json) or with a file in runs/."""
    results_dir = Path(results_dir)
    ids = dict.fromkeys(files.planned_runs(results_dir))
    for submission in read_jobs(results_dir):
        for task in submission["tasks"]:
            ids.update(dict.fromkeys(task.get("run_ids", [])))
    ids.update(dict.fromkeys(p.stem for p in files.run_files(results_dir / "runs")))
    return list(ids)


class StatusReader:
    """run_states for one results folder, reusable while polling (run files are re-read only when
    they change)."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self.records = _Records(self.results_dir / "runs")
        self.scheduler_error: str | None = None

    def __call__(self, run_ids: Sequence[str] | None = None) -> dict[str, RunState]:
        run_ids = list(run_ids) if run_ids is not None else known_runs(self.results_dir)
        latest: dict[str, tuple[dict, dict]] = {}
        for submission in read_jobs(self.results_dir):  # oldest first: the last one holding a run wins
            for task in submission["tasks"]:
                for rid in task.get("run_ids", []):
                    latest[rid] = (submission, task)
        held = held_locks(self.results_dir / "runs")
        records = {rid: self.records.get(rid) for rid in run_ids}
        open_runs = [rid for rid in run_ids if not _finished(records[rid]) and rid not in held and rid in latest]
        states: dict[str, str] | None = {}
        self.scheduler_error = None
        if open_runs:
            try:
                states = squeue_states([latest[rid][1]["job_id"] for rid in open_runs])
            except SchedulerError as error:
                states, self.scheduler_error = None, str(error)
        tasks: dict[str, TaskState] = {}
        out: dict[str, RunState] = {}
        for rid in run_ids:
            record = records[rid]
            if _finished(record):
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
                    tasks[job_id] = task_state(job_id, submission["submitit_folder"], states)
                out[rid] = self._from_task(rid, tasks[job_id], submission, record)
            elif record is not None and record.get("status") == "failed":
                out[rid] = RunState(rid, "failed", str(record.get("error") or "failed"), record=record)
            else:
                out[rid] = RunState(rid, "not started", record=record)
        return out

    @staticmethod
    def _from_task(rid: str, task: TaskState, submission: dict, record: dict | None) -> RunState:
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
    counts = dict.fromkeys(("done", "running", "queued", "failed", "not started"), 0)
    for state in states.values():
        counts[state.state] = counts.get(state.state, 0) + 1
    return counts


def failure_record(state: RunState) -> dict:
    """A record for the CLI's list of runs that did not finish (not written: the run stays to do)."""
    record = dict(state.record or {})
    record.update({"run_id": state.run_id, "status": "failed", "error": state.detail,
                   "seconds": record.get("seconds") or 0.0, "job_id": state.job_id, "log": state.log,
                   "log_tail": state.log_tail})
    return record


def wait_slurm(results_dir: Path, run_ids: Sequence[str], tasks: Sequence[tuple[str, str]],
               notify: Callable | None = None, poll_s: float = 2.0,
               max_poll_s: float = 30.0) -> tuple[list[dict], dict[str, RunState]]:
    """Wait until none of `tasks` ((job id, submitit folder)) is queued or running and no run of
    `run_ids` is; report each run as it finishes (a new run file that says ok/diverged) or fails
    (by the rule above). Returns the records of the runs that finished or failed meanwhile, and
    the final states. A job that died without a result ends the wait for its runs: never waits
    on it forever."""
    notify = notify or (lambda event, **info: None)
    reader = StatusReader(results_dir)
    reported: set[str] = set()
    records: list[dict] = []
    before = {rid: (reader.records.get(rid) or {}).get("finished_unix") for rid in run_ids}
    warned = False
    interval = poll_s  # squeue every poll_s while runs finish, backing off to max_poll_s while none does
    while True:
        reported_before = len(reported)
        try:
            scheduler = squeue_states([job_id for job_id, _ in tasks])
        except SchedulerError as error:
            scheduler, reader.scheduler_error = None, str(error)
        active = [job_id for job_id, folder in tasks
                  if task_state(job_id, folder, scheduler).phase in ("queued", "running", "unknown")]
        states = reader(run_ids)
        for rid, state in states.items():
            if rid in reported:
                continue
            if state.state == "done" and (state.record or {}).get("finished_unix") != before.get(rid):
                reported.add(rid)
                records.append(state.record)
                notify("done", records=[state.record])
            elif state.state == "failed" and state.job_id not in active:
                reported.add(rid)
                record = failure_record(state)
                records.append(record)
                notify("done", records=[record])
        counts = summary_counts(states)
        if (reader.scheduler_error or scheduler is None) and not warned:
            notify("warning", text=f"{reader.scheduler_error or 'squeue could not answer'}: still waiting "
                                   f"(Ctrl-C stops waiting, not the jobs)")
            warned = True
        notify("status", text=f"SLURM: {counts['running']} running, {counts['queued']} queued")
        if not active and not any(s.state in ("queued", "running", "unknown") for s in states.values()):
            for rid, state in states.items():  # finished but unchanged (e.g. --force and the job skipped it)
                if rid not in reported and state.state != "done":
                    records.append(failure_record(state))
            return records, states
        interval = poll_s if len(reported) > reported_before else min(max_poll_s, interval * 1.5)
        time.sleep(interval)
