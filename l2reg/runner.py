"""A sweep end to end, the library's entry point: overrides -> a plan (`plan_sweep`) -> the runs
trained where the launcher says -> the reports (`run_sweep`). `l2sweep run` is these two calls plus
parsing and printing; a script or a test calls them the same way, with no console and no sys.argv.

The runner prints nothing. It reports through two callbacks and returns a `SweepResult`:
- `progress(event, **info)`: the executors' events (l2reg.executors.inprocess.execute: 'start',
  'pack', 'epoch', 'done', 'waiting'; local workers and SLURM add 'status' and 'warning'), then
  'end' once the training phase is over (also after Ctrl-C), before any later message;
- `messages(kind, text)`: a line for the user, kind "note", "warning" or "interrupted".
Errors the user caused are raised with a one-line message: ConfigError or ValueError (the
overrides, from plan_sweep), DataError (the data), ResultsFolderError (the results folder),
SchedulerError (SLURM's sbatch missing or refusing the jobs). Ctrl-C while the runs train is not
an error: the reports of what finished are written and the result says `interrupted`.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from l2reg import files, sweep
from l2reg.config import Config, ConfigError, LauncherConfig, expand_and_compose, to_dict

Progress = Callable[..., None]  # progress(event: str, **info)
Messages = Callable[[str, str], None]  # messages(kind, text)


class ResultsFolderError(RuntimeError):
    """The results folder cannot be created or written: the message says which and what to do."""


@dataclass
class SweepPlan:
    """A composed, validated sweep: its points, its planned runs (baselines first) and where they go."""

    overrides: list[str]
    points: list[tuple[list[str], Config]]  # each composed point: its overrides and its config
    planned: list[sweep.PlannedRun]
    device: Any  # torch.device; None: train.device=cuda submitted to SLURM from a host without one
    results_dir: Path

    @property
    def config(self) -> Config:
        """The first point's config: what every point of one sweep shares (name, launcher, report)."""
        return self.points[0][1]

    @property
    def launcher(self) -> LauncherConfig:
        return self.config.launcher

    def finished(self, force: bool = False) -> set[str]:
        """The ids of the planned runs already finished (none with force: they train again)."""
        if force:
            return set()
        return sweep.finished_ids(self.results_dir / "runs") & {run.run_id for run in self.planned}

    def command(self, force: bool = False, wait: bool = True) -> list[str]:
        """The `l2sweep run` command line of this sweep, as sweep.json and jobs.json record it."""
        return ["l2sweep", "run", *self.overrides] + ([] if wait else ["--no-wait"]) + (["--force"] if force else [])


@dataclass
class SweepResult:
    """What one invocation did. `trained`: the records of the runs that finished or failed in it
    (a failed one says why; one of a SLURM job also carries job_id, log and log_tail)."""

    results_dir: Path
    planned: int
    launcher: str
    skipped: int = 0  # planned runs not run again: finished (SLURM: or queued/running in earlier jobs)
    trained: list[dict] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C while the runs trained (in-process, local) or while waiting on SLURM
    waited: bool = True  # False: launcher=slurm --no-wait submitted and returned without waiting or reporting
    submission: dict | None = None  # launcher=slurm: this invocation's jobs.json entry (None: nothing submitted)
    report: Any = None  # l2reg.report.Report of the reports written; None when none could be

    @property
    def not_ok(self) -> list[dict]:
        return [record for record in self.trained if record["status"] != "ok"]


def _ignore(*args, **kwargs) -> None:
    pass


def plan_sweep(overrides: Sequence[str], config_dir: Path | None = None, *, wait: bool = True) -> SweepPlan:
    """Compose and validate the overrides (Hydra's grammar) and plan the runs. Raises ConfigError
    (or ValueError, e.g. train.device=cuda without one) with a one-line message. `wait=False`
    (--no-wait) is refused unless launcher=slurm."""
    from l2reg.device import resolve_device

    points = expand_and_compose(list(overrides), config_dir)
    configs = [cfg for _, cfg in points]
    for name in ("name", "results_dir"):
        sweep.check_single(configs, name)
    if any(to_dict(c.launcher) != to_dict(configs[0].launcher) for c in configs):
        raise ConfigError("launcher keys cannot be swept: one sweep has one launcher")
    planned = sweep.plan(configs)
    launcher = configs[0].launcher
    if not wait and launcher.name != "slurm":
        raise ConfigError(f"--no-wait applies to launcher=slurm only (this sweep has launcher={launcher.name})")
    try:
        device = resolve_device(configs[0].train.device)
    except ValueError:
        if launcher.name != "slurm":
            raise
        device = None  # train.device=cuda submitted from a host without one: resolved on the nodes
    name = configs[0].name or time.strftime("%Y-%m-%d_%H-%M-%S")
    return SweepPlan(list(overrides), points, planned, device, Path(configs[0].results_dir) / name)


def run_sweep(plan: SweepPlan | Sequence[str], *, config_dir: Path | None = None, force: bool = False,
              wait: bool = True, progress: Progress | None = None, messages: Messages | None = None) -> SweepResult:
    """Train the plan's runs that are not finished (all of them with `force`) with its launcher,
    then write the reports. `plan` may be the overrides themselves (planned with plan_sweep).
    With launcher=slurm and `wait=False`, submit and return (no reports)."""
    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan, config_dir, wait=wait)
    progress, messages = progress or _ignore, messages or _ignore
    data = _prepare(plan)
    _check_writable(plan.results_dir)
    size = _pack_size(plan)
    command = plan.command(force, wait)
    _write_sweep_json(plan, command, size, data)
    result = SweepResult(plan.results_dir, len(plan.planned), plan.launcher.name)
    try:
        if plan.launcher.name == "slurm":
            _run_slurm(plan, size, force, command, wait, progress, messages, result)
        else:
            _run_here(plan, data, force, progress, messages, result)
    except KeyboardInterrupt:
        result.interrupted = True
        progress("end")
        messages("interrupted", _interrupted_text(plan))
    else:
        progress("end")
        if not result.waited:
            return result
    result.report = _write_reports(plan, result, messages)
    return result


def _prepare(plan: SweepPlan) -> dict:
    """Load (and so check) the data before anything is written: other launchers' workers load their
    own, so here it is only checked, on the CPU. Raises DataError."""
    import torch

    inprocess = plan.launcher.name == "inprocess"
    return sweep.prepare_data(plan.planned, plan.device if inprocess else torch.device("cpu"))


def _check_writable(folder: Path) -> None:
    """Create `folder`/runs, or raise ResultsFolderError unless `folder` can be created (its nearest
    existing parent is writable) and written; creates nothing before all checks pass."""
    try:
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, f"{existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"no write permission on {existing}")
        (folder / "runs").mkdir(parents=True, exist_ok=True)
        if not os.access(folder / "runs", os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"no write permission on {folder / 'runs'}")
    except OSError as error:
        raise ResultsFolderError(f"results folder {folder} is not writable ({error.strerror or error}): choose "
                                 f"another results_dir= or name=") from error


def _pack_size(plan: SweepPlan) -> int:
    if plan.launcher.name == "slurm":
        from l2reg.executors import slurm

        return slurm.slurm_pack_size(plan.planned, plan.launcher)
    return sweep.pack_size_for(plan.planned, plan.config.train.device)


def _write_sweep_json(plan: SweepPlan, command: list[str], size: int, data: dict) -> None:
    """This invocation's entry in sweep.json, with the launcher: with workers or SLURM the device,
    pack and compile decisions are this host's view; each run's file records its own."""
    import torch

    from l2reg.provenance import write_sweep_json

    shown_device = plan.device or torch.device(plan.config.train.device)
    path = write_sweep_json(plan.results_dir, command, [point for point, _ in plan.points], plan.planned,
                            shown_device, size, {(*key[:-1], str(shown_device)): value for key, value in data.items()})
    content = files.read_json(path)
    entry = content["invocations"][-1]
    entry["launcher"] = to_dict(plan.launcher)
    if plan.launcher.name != "inprocess":
        entry["decisions"]["note"] = ("device and compile are resolved where each pack trains (each run file says "
                                      "which); above: " + ("this host's view" if plan.device is not None else
                                                           "the device asked for, absent on this host"))
    files.write_json_atomic(path, content)


def _announcing_skips(progress: Progress, messages: Messages) -> Progress:
    """`progress`, with a note first when the sweep starts with runs already done."""
    def forward(event: str, **info) -> None:
        if event == "start" and info["skipped"]:
            messages("note", f"{info['skipped']} of {info['total']} runs already done: skipping them")
        progress(event, **info)

    return forward


def _run_here(plan: SweepPlan, data: dict, force: bool, progress: Progress, messages: Messages,
              result: SweepResult) -> None:
    """launcher=inprocess (this process, with the data already loaded) or launcher=local (workers)."""
    from l2reg.executors.inprocess import execute

    progress = _announcing_skips(progress, messages)
    run_jobs = None
    if plan.launcher.name == "local":
        from l2reg.executors.local import LocalWorkers

        run_jobs = LocalWorkers(plan.launcher, plan.device.type, progress)
    outcome = execute(plan.planned, plan.results_dir, data if run_jobs is None else None, force=force,
                      progress=progress, run_jobs=run_jobs)
    result.skipped, result.trained = outcome.skipped, outcome.trained


def _run_slurm(plan: SweepPlan, size: int, force: bool, command: list[str], wait: bool, progress: Progress,
               messages: Messages, result: SweepResult) -> None:
    """Submit what is neither finished nor queued/running in an earlier submission; with `wait`,
    follow every job of this sweep until it ends."""
    from l2reg.executors import slurm, slurm_jobs

    planned, results_dir, launcher = plan.planned, plan.results_dir, plan.launcher
    pending = slurm.pending_runs(planned, results_dir, force)
    if pending.done:
        messages("note", f"{len(pending.done)} of {len(planned)} runs already done: skipping them")
    if pending.active:
        messages("note", f"{len(pending.active)} run(s) queued or running in earlier SLURM jobs: not submitted again")
    if pending.scheduler_error:
        messages("warning", f"{pending.scheduler_error}: runs of earlier jobs whose state is unknown were not "
                            f"submitted again")
    if pending.todo:
        result.submission = slurm.submit_slurm(pending.todo, results_dir, launcher, size, force, command)
        messages("note", f"submitted {len(pending.todo)} run(s) as {len(result.submission['tasks'])} SLURM task(s) "
                         f"of job {', '.join(result.submission['job_ids'])} (partition "
                         f"{launcher.partition or 'default'}, {launcher.timeout_min} min): "
                         f"{results_dir / slurm_jobs.JOBS_FILE}")
    if not wait:
        result.waited = False
        return
    watched = [run.run_id for run in pending.todo] + sorted(pending.active)
    result.skipped = len(planned) - len(watched)
    progress("start", total=len(planned), skipped=result.skipped)
    result.trained, _ = slurm.wait_slurm(results_dir, watched, slurm.watched_tasks(results_dir, watched), progress)


def _interrupted_text(plan: SweepPlan) -> str:
    if plan.launcher.name != "slurm":
        return "interrupted: the run(s) in flight are lost; finished runs are kept"
    from l2reg.executors import slurm_jobs

    submissions = slurm_jobs.read_jobs(plan.results_dir)
    ids = ", ".join(submissions[-1]["job_ids"]) if submissions else "see jobs.json"
    return (f"interrupted: stopped waiting; the SLURM jobs keep running (last submitted: {ids}): "
            f"`l2sweep status {plan.results_dir}` shows them, `scancel <job id>` stops them")


def _write_reports(plan: SweepPlan, result: SweepResult, messages: Messages):
    """The reports of every finished run of the folder; None (and a note) when no run had finished
    and this invocation was interrupted or had runs fail. Raises ReportError otherwise."""
    from l2reg.report import ReportError, write_reports

    try:
        return write_reports(plan.results_dir, plan.config.report.min_effect_pp)
    except ReportError:
        if not result.interrupted and not result.not_ok:
            raise
        messages("note", "no run had finished: no reports written")
        return None
