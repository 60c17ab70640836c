"""The SLURM executor (launcher=slurm), through submitit with hydra-submitit-launcher's key names.

`submit_slurm` submits one job array per invocation, one array task per pack; each task is a
`PackTask` (a submitit Checkpointable) running l2reg.executors.pack_job.run_pack_job on the node,
so a job cut by its time limit (or preempted) requeues itself up to `max_num_timeout` times and
restarts its unfinished runs from scratch (finished runs are skipped through their JSONs; there is
no per-epoch resume). Each submission is appended to <results>/jobs.json (l2reg.executors.slurm_jobs).
`pending_runs` decides what an invocation submits (never a run that is done, queued or running),
`wait_slurm` follows the jobs until they end. submitit pickles a PackTask and its PackJob by their
module paths: the nodes import this module and l2reg.executors.pack_job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import submitit

from l2reg import cpus, sweep
from l2reg.config import LauncherConfig, to_dict
from l2reg.executors import slurm_jobs
from l2reg.executors.local import worker_cores
from l2reg.executors.pack_job import PackJob, make_jobs, run_pack_job
from l2reg.executors.slurm_jobs import SchedulerError
from l2reg.executors.status import RunState, StatusReader, failure_record, summary_counts

# Without a GPU on the submitting host the pack size for CUDA jobs cannot come from free memory:
# the most l2reg.sweep.auto_pack_size gives (any GPU with >= 8 GiB free). train.pack_size overrides.
SLURM_CUDA_PACK_SIZE = 64
OPEN_STATES = ("queued", "running", "unknown")  # a run in one of these may still train: never submitted twice


class PackTask(submitit.helpers.Checkpointable):
    """A SLURM array task: one pack, trained by run_pack_job on the node. When SLURM signals the
    time limit (or a preemption), submitit calls checkpoint() and requeues the job with what it
    returns: the same pack less the runs this attempt already wrote."""

    def __call__(self, job: PackJob) -> dict:
        self.written: set[str] = set()
        available = cpus.available_cores()
        mine = allocated_cores(os.environ, available)
        if mine != available and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, mine)  # l2reg.device: one torch thread per core of this mask

        def notify(event: str, **info) -> None:
            if event == "done":
                self.written.update(record["run_id"] for record in info["records"])

        result = run_pack_job(job, notify)
        return {"runs": {r["run_id"]: r["status"] for r in result.records}, "busy": result.busy}

    def checkpoint(self, job: PackJob) -> submitit.helpers.DelayedSubmission:
        written = getattr(self, "written", set())
        keep = [i for i, rid in enumerate(job.run_ids) if rid not in written]
        remaining = replace(job, run_ids=[job.run_ids[i] for i in keep], configs=[job.configs[i] for i in keep])
        return submitit.helpers.DelayedSubmission(self, remaining)


def allocated_cores(env, available: Sequence[int]) -> list[int]:
    """The cores a SLURM task trains on. SLURM allocates --cpus-per-task CPUs to a task (1 when not
    given), but a node that does not confine tasks (no cgroup or affinity task plugin) leaves the
    whole node in the task's affinity mask, and torch would start a thread per core of the node:
    oversubscribed beside the node's other tasks, and a thread count (so numbers) that depends on
    the node. Where the mask is wider than the allocation, the task keeps that many of its cores,
    round-robin by array task index as local workers share cores (l2reg.executors.local)."""
    available = sorted(available)
    wanted = int(env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or 0)
    if wanted <= 0 or len(available) <= wanted:
        return available
    index = int(env.get("SLURM_ARRAY_TASK_ID") or env.get("SLURM_LOCALID") or 0)
    return worker_cores(index, wanted, available)


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


@dataclass
class PendingRuns:
    """What an invocation submits: `todo` (seed-major), and what it leaves alone."""

    todo: list[sweep.PlannedRun]
    done: set[str]  # finished (empty with force: those train again)
    active: set[str]  # queued, running or of unknown state in earlier submissions
    scheduler_error: str | None  # why squeue could not tell about earlier jobs, if it could not


def pending_runs(planned: Sequence[sweep.PlannedRun], results_dir: Path, force: bool = False) -> PendingRuns:
    """The planned runs that are neither finished nor queued/running in an earlier submission."""
    reader = StatusReader(results_dir)
    states = reader([r.run_id for r in planned])
    active = {rid for rid, state in states.items() if state.state in OPEN_STATES}
    done = set() if force else {rid for rid, state in states.items() if state.state == "done"}
    todo = sorted((r for r in planned if r.run_id not in done and r.run_id not in active),
                  key=lambda run: run.config.seed)
    return PendingRuns(todo, done, active, reader.scheduler_error)


def submit_slurm(planned: Sequence[sweep.PlannedRun], results_dir: Path, launcher: LauncherConfig, pack_size: int,
                 force: bool = False, command: Sequence[str] = ()) -> dict:
    """Submit the runs as one job array (one task per pack); append the submission to jobs.json
    and return it. Raises SchedulerError when sbatch is missing or refuses the job."""
    results_dir = Path(results_dir).absolute()
    folder = submitit_folder(launcher, results_dir)
    jobs = make_jobs(planned, results_dir, pack_size, force=force)
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
    slurm_jobs.append_jobs(results_dir, submission)
    return submission


def watched_tasks(results_dir: Path, run_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(job id, submitit folder) of the latest task holding each of `run_ids`, for wait_slurm."""
    latest = slurm_jobs.latest_tasks(results_dir)
    return sorted({(latest[rid][1]["job_id"], latest[rid][0]["submitit_folder"]) for rid in run_ids if rid in latest})


def wait_slurm(results_dir: Path, run_ids: Sequence[str], tasks: Sequence[tuple[str, str]],
               notify: Callable | None = None, poll_s: float = 2.0,
               max_poll_s: float = 30.0) -> tuple[list[dict], dict[str, RunState]]:
    """Wait until none of `tasks` ((job id, submitit folder)) is queued or running and no run of
    `run_ids` is; report each run as it finishes (a new run file that says ok/diverged) or fails
    (by the rule of l2reg.executors.status). Returns the records of the runs that finished or
    failed meanwhile, and the final states. A job that died without a result ends the wait for its
    runs: never waits on it forever. `notify` gets 'done' (records), 'status' and 'warning' (text)."""
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
            scheduler = slurm_jobs.squeue_states([job_id for job_id, _ in tasks])
        except SchedulerError as error:
            scheduler, reader.scheduler_error = None, str(error)
        active = [job_id for job_id, folder in tasks
                  if slurm_jobs.task_state(job_id, folder, scheduler).phase in OPEN_STATES]
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
        if not active and not any(s.state in OPEN_STATES for s in states.values()):
            for rid, state in states.items():  # finished but unchanged (e.g. --force and the job skipped it)
                if rid not in reported and state.state != "done":
                    records.append(failure_record(state))
            return records, states
        interval = poll_s if len(reported) > reported_before else min(max_poll_s, interval * 1.5)
        time.sleep(interval)
