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
SchedulerError (SLURM's sbatch missing or refusing the jobs), MixedCodeError (runs of other code
or another thread count in a context this sweep adds to). Ctrl-C (or SIGTERM, which the CLI turns
into the same stop) while the runs train is not an error: the reports of what finished are written
and the result says `interrupted`.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from l2reg import files, sweep
from l2reg.compose import expand_and_compose
from l2reg.config import Config, ConfigError, LauncherConfig, to_dict

Progress = Callable[..., None]  # progress(event: str, **info)
Messages = Callable[[str, str], None]  # messages(kind, text)


class ResultsFolderError(RuntimeError):
    """The results folder cannot be created or written: the message says which and what to do."""


class _FirstNotOk(Exception):
    """--fail-fast: a run finished failed or diverged; the sweep stops here."""

    def __init__(self, record: dict):
        super().__init__(record["run_id"])
        self.record = record


class MixedCodeError(RuntimeError):
    """Runs to train would join, in one comparison, finished runs made by other code (another code
    fingerprint) or with another CPU thread count: the message names the folder, both, and what to do."""


@dataclass
class SweepPlan:
    """A composed, validated sweep: its points, its planned runs (baselines first) and where they go."""

    overrides: list[str]
    points: list[tuple[list[str], Config]]  # each composed point: its overrides and its config
    planned: list[sweep.PlannedRun]
    device: Any  # torch.device; None: train.device=cuda submitted to SLURM from a host without one
    results_dir: Path
    point_sets: list[list[str]] | None = None  # `l2sweep run --point` sets (None: the experiment file's, if any)

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
        points = [item for point_set in self.point_sets or [] for item in ("--point", " ".join(point_set))]
        return (["l2sweep", "run", *self.overrides, *points] + ([] if wait else ["--no-wait"])
                + (["--force"] if force else []))


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
    stopped_at: dict | None = None  # --fail-fast: the record of the run that stopped the sweep

    @property
    def not_ok(self) -> list[dict]:
        return [record for record in self.trained if record["status"] != "ok"]


def _ignore(*args, **kwargs) -> None:
    pass


def plan_sweep(overrides: Sequence[str], config_dir: Path | None = None, *, wait: bool = True,
               point_sets: Sequence[Sequence[str]] | None = None) -> SweepPlan:
    """Compose and validate the overrides (Hydra's grammar) and plan the runs. Raises ConfigError
    (or ValueError, e.g. train.device=cuda without one) with a one-line message. `wait=False`
    (--no-wait) is refused unless launcher=slurm. `point_sets`: a union of override sets (each a
    list of overrides; l2reg.compose.expand_and_compose), instead of the experiment file's points."""
    from l2reg.device import resolve_device

    sets = None if point_sets is None else [list(point_set) for point_set in point_sets]
    points = expand_and_compose(list(overrides), config_dir, sets)
    configs = [cfg for _, cfg in points]
    for name in ("name", "results_dir"):
        sweep.check_single(configs, name)
    first = configs[0].launcher
    if any(c.launcher is not first and c.launcher != first for c in configs):  # dataclass ==, field by field
        raise ConfigError("launcher keys cannot be swept: one sweep has one launcher")
    planned = sweep.plan(configs)
    sweep.check_train_sizes(configs)  # against the split's size, from the IDX header: before anything is written
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
    return SweepPlan(list(overrides), points, planned, device, Path(configs[0].results_dir) / name, sets)


def run_sweep(plan: SweepPlan | Sequence[str], *, config_dir: Path | None = None, force: bool = False,
              wait: bool = True, progress: Progress | None = None, messages: Messages | None = None,
              mixed_code: bool = False, fail_fast: bool = False) -> SweepResult:
    """Train the plan's runs that are not finished (all of them with `force`) with its launcher,
    then write the reports. `plan` may be the overrides themselves (planned with plan_sweep).
    With launcher=slurm and `wait=False`, submit and return (no reports). Refuses (MixedCodeError)
    to add runs to a context whose finished runs were made by other code or with another thread
    count, unless `mixed_code` (the report then says the context is mixed). `fail_fast`: stop at
    the first run that fails or diverges (the runs in flight elsewhere are abandoned), then report
    what finished; refused with launcher=slurm (its tasks run at once, not one after another)."""
    if not isinstance(plan, SweepPlan):
        plan = plan_sweep(plan, config_dir, wait=wait)
    if fail_fast and plan.launcher.name == "slurm":
        raise ConfigError("--fail-fast applies to launcher=inprocess and launcher=local: a SLURM job array runs its "
                          "tasks at once (`l2sweep status` shows failures as they come)")
    progress, messages = progress or _ignore, messages or _ignore
    if not mixed_code:
        check_one_code(plan, force)
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
            _run_here(plan, data, force, _stopping_at_first_not_ok(progress) if fail_fast else progress, messages,
                      result)
    except _FirstNotOk as stop:
        result.stopped_at = stop.record
        result.trained = [stop.record]
        progress("end")
        messages("interrupted", f"stopped at the first run that did not finish ok (--fail-fast): "
                                f"{stop.record['run_id']} {stop.record['status']}; finished runs are kept; the same "
                                "command resumes")
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


def _stopping_at_first_not_ok(progress: Progress) -> Progress:
    """`progress`, raising _FirstNotOk once a finished run is failed or diverged (its file is written
    by then: the record is on disk before the 'done' event)."""
    def forward(event: str, **info) -> None:
        progress(event, **info)
        if event == "done":
            for record in info["records"]:
                if record.get("status") != "ok":
                    raise _FirstNotOk(record)

    return forward


def _threads_here(plan: SweepPlan) -> int | None:
    """The torch threads a CPU run of this sweep will train with (l2reg.device.configure_device):
    a SLURM task's its --cpus-per-task (1 when not given; l2reg.executors.slurm.allocated_cores
    holds it to that); None where it does not matter (a GPU)."""
    from l2reg.cpus import available_cores

    device = plan.device.type if plan.device is not None else plan.config.train.device
    if device != "cpu":
        return None
    if plan.launcher.name == "slurm":
        return int(plan.launcher.cpus_per_task or 1)
    if plan.launcher.name == "local":
        return max(1, min(int(plan.launcher.threads_per_worker), len(available_cores())))
    return len(available_cores())


def _same_numbers(found: tuple[str, int | None], here: tuple[str, int | None]) -> bool:
    """Same code fingerprint, and the same thread count where both are known."""
    return found[0] == here[0] and (found[1] is None or here[1] is None or found[1] == here[1])


def _shown(key: tuple[str, int | None]) -> str:
    return f"code {key[0]}" + (f", {key[1]} thread(s)" if key[1] is not None else "")


def check_one_code(plan: SweepPlan, force: bool = False) -> None:
    """Raise MixedCodeError when a context this sweep trains runs in already holds finished runs of
    another code fingerprint (l2reg.fingerprint) or CPU thread count: pooled in one paired
    comparison, their differences would mix code with regularizer. Runs `force` replaces do not
    count."""
    from l2reg import fingerprint

    finished = set() if force else plan.finished()
    todo = {run.run_id: run for run in plan.planned if run.run_id not in finished}
    if not todo:
        return
    contexts = {sweep.context_label(run.config) for run in todo.values()}
    here = (fingerprint.current(), _threads_here(plan))
    for path in files.run_files(plan.results_dir / "runs"):
        if path.stem in todo:
            continue
        try:
            record = files.read_json(path)
        except (OSError, ValueError):
            continue  # a damaged file is the report's to name
        if not (isinstance(record, dict) and sweep.is_finished_record(record) and record.get("context") in contexts):
            continue
        found = (fingerprint.of_record(record), record.get("threads") if str(record.get("device")) == "cpu" else None)
        if not _same_numbers(found, here):
            raise MixedCodeError(
                f"{plan.results_dir}: its finished runs of context {record['context']} were made with {_shown(found)} "
                f"(e.g. {path.stem}), this sweep would train with {_shown(here)}: one comparison would mix them. "
                "Train into another folder (name=...), re-run them all here with --force, or pass --mixed-code to "
                "pool them knowingly (the report then says so)")


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
        return ("interrupted: the run(s) in flight are lost; finished runs are kept; the same command resumes "
                "(finished runs are skipped)")
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
