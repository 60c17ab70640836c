"""Sweeps: from composed configs to planned runs, run ids, packs, jobs and results on disk.

- plan: every composed point x its seeds (0..seeds-1 unless `seed` is swept), plus the
  unregularized baseline (alpha=0) for the same seeds and context, once per seed: at alpha=0
  the other setting axes (l2reg.axes) do not matter, so they are canonicalised and deduplicated.
- run id: a readable name plus a short hash of the run's semantic config (what changes its
  numbers: not the name, folder, device, executor or pack size; an axis added later, at its
  "off" value, is left out, so old ids stay valid). A run whose JSON says ok/diverged is skipped.
- jobs: runs sharing a context (data and training settings) form packs; a pack is a `PackJob`
  (plain, picklable values) run by `run_pack_job` wherever an executor puts it: it loads its own
  data, resolves its device and the compile decision where it runs (per context, so every arm
  of a comparison takes the same code path), trains with the one loop in l2reg.train, and writes
  each run's JSON atomically under a per-run lock. The run files are the only shared state.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from l2reg import axes, files, schedules
from l2reg.config import Config, ScheduleConfig, from_dict, to_dict, validate

# Config fields that never change a run's numbers: left out of its identity.
_NOT_SEMANTIC = ("name", "results_dir", "seeds", "sweep", "report", "launcher")
_NOT_SEMANTIC_DATA = ("root", "download")
_NOT_SEMANTIC_TRAIN = ("device", "pack_size", "eval_batch_size", "deterministic", "compile")
COMPILE_MIN_STEPS = 1000  # auto compile: a 5-epoch MNIST run has 2,110 steps, a smoke run ~22


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: Config

    @property
    def is_baseline(self) -> bool:
        return axes.is_baseline(self.config)


def canonical(cfg: Config) -> Config:
    """The run's config with fields that cannot matter set to defaults (baseline: no regularizer)."""
    if axes.is_baseline(cfg):
        defaults = Config()
        off = {ax.key: getattr(defaults, ax.key) for ax in axes.SETTING_AXES if "." not in ax.key}
        return replace(cfg, **{**off, "alpha": 0.0, "schedule": ScheduleConfig()})
    used = schedules.PARAMETERS.get(cfg.schedule.name, ())
    kept = {name: getattr(cfg.schedule, name) for name in used}
    cfg = replace(cfg, alpha=float(cfg.alpha), schedule=ScheduleConfig(name=cfg.schedule.name, **kept))
    if not _has_weight_term(cfg):  # scope only says which kernels a weight term acts on
        cfg = replace(cfg, scope=Config().scope)
    return cfg


def _has_weight_term(cfg: Config) -> bool:
    from l2reg import penalties

    try:
        terms = penalties.terms_for({ax.key: axes.get(cfg, ax.key) for ax in axes.SETTING_AXES
                                     if ax.key not in ("alpha", "schedule")})
    except penalties.NotWired:  # refused by validation; its id is never used for training
        return True
    return any(term.kind == "weights" for term in terms)


def semantic(cfg: Config) -> dict:
    values = to_dict(canonical(cfg))
    for key in _NOT_SEMANTIC:
        values.pop(key)
    for key in _NOT_SEMANTIC_DATA:
        values["data"].pop(key)
    for key in _NOT_SEMANTIC_TRAIN:
        values["train"].pop(key)
    return axes.drop_off_values(values)


def context(cfg: Config) -> dict:
    """What a run shares with its baseline: the semantic config less the setting axes and seed."""
    values = axes.drop_setting_keys(semantic(cfg))
    values.pop("seed")
    return values


def digest(values: dict, length: int = 8) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:length]


def run_id(cfg: Config) -> str:
    cfg = canonical(cfg)
    return "-".join([*axes.name_parts(cfg), f"s{cfg.seed}", digest(semantic(cfg))])


def context_label(cfg: Config) -> str:
    """A short label of the context (data and training settings), with its hash; context axes
    appear when they are not off."""
    values = context(cfg)
    label = f"epochs={values['train']['epochs']},train_limit={values['data']['train_limit']}"
    for ax in axes.CONTEXT_AXES:
        value = axes.get(cfg, ax.key)
        if value != ax.off:
            label += f",{ax.column}={value:g}" if isinstance(value, float) else f",{ax.column}={value}"
    return f"{label}-{digest(values, 6)}"


def plan(configs: Iterable[Config]) -> list[PlannedRun]:
    """Seeds x points, plus the baseline for each (context, seed); deduplicated, baselines first."""
    check_context_wiring()
    planned: dict[str, PlannedRun] = {}
    baselines: dict[str, PlannedRun] = {}
    for cfg in configs:
        validate(cfg)
        seeds = [cfg.seed] if cfg.seed is not None else list(range(cfg.seeds))
        for seed in seeds:
            run = canonical(replace(cfg, seed=seed))
            base = canonical(replace(run, alpha=0.0))
            baselines.setdefault(run_id(base), PlannedRun(run_id(base), base))
            if not axes.is_baseline(run):
                planned.setdefault(run_id(run), PlannedRun(run_id(run), run))
    return list(baselines.values()) + list(planned.values())


def check_single(configs: Sequence[Config], field_name: str) -> None:
    from l2reg.config import ConfigError

    values = {getattr(c, field_name) for c in configs}
    if len(values) > 1:
        raise ConfigError(f"{field_name} cannot be swept (got {', '.join(map(str, sorted(values, key=str)))}): "
                          f"one sweep writes one results folder")


def setting_columns(cfg: Config) -> dict:
    """The regularizer setting as report columns (l2reg.axes); the baseline shows 'none'."""
    return axes.setting_columns(cfg)


# A run is finished when its JSON says ok or diverged (divergence is deterministic: re-running
# would only repeat it); failed runs (an exception) are retried by the next invocation.
FINISHED = ("ok", "diverged")


def is_finished(path: Path) -> bool:
    """A run is done when its file is a record of that run (its run_id is the file name) that
    says diverged, or ok with a test accuracy: anything else is trained (again)."""
    try:
        record = files.read_json(path)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("run_id") != Path(path).stem:
        return False
    if record.get("status") == "diverged":
        return True
    accuracy = (record.get("metrics") or {}).get("test_acc") if record.get("status") == "ok" else None
    return isinstance(accuracy, (int, float))


def finished_ids(runs_dir: Path) -> set[str]:
    """Ids of runs whose JSON exists, parses and says ok or diverged."""
    return {path.stem for path in files.run_files(runs_dir) if is_finished(path)}


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
        import fcntl
        import os

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        import fcntl
        import os

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def packs(runs: Sequence[PlannedRun], pack_size: int) -> list[list[PlannedRun]]:
    """Group runs that share a context (and so shapes and data) into packs of at most pack_size."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(digest(context(run.config)), []).append(run)
    out = []
    for group in groups.values():
        out += [group[i:i + pack_size] for i in range(0, len(group), pack_size)]
    return out


def auto_pack_size(device) -> int:
    """1 on CPU (vmap's grouped convolutions are slower there); on CUDA, what free memory allows."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_run_bytes = 64 * 2**20  # a generous estimate for batch 128 and eval batches of 1000
    return max(1, min(64, int(free * 0.5 // per_run_bytes)))


def pack_size_for(planned: Sequence[PlannedRun], device_name: str) -> int:
    """train.pack_size, or automatic for the device the runs will use."""
    if not planned:
        return 1
    if planned[0].config.train.pack_size:
        return planned[0].config.train.pack_size
    from l2reg.train import resolve_device

    return auto_pack_size(resolve_device(device_name))


def compile_decision(cfg: Config, device_type: str, n_train: int) -> bool:
    """train.compile, or auto: CPU contexts of at least COMPILE_MIN_STEPS steps per run. A
    function of the context and device only, so every arm of a comparison gets the same answer."""
    if cfg.train.compile is not None:
        return bool(cfg.train.compile)
    steps = cfg.train.epochs * -(-n_train // cfg.train.batch_size)
    return device_type == "cpu" and steps >= COMPILE_MIN_STEPS


# Where each context axis (l2reg.axes.CONTEXT_AXES) enters the training loop: TrainSettings fields.
CONTEXT_SETTINGS = {"train.dropout": "dropout", "data.train_size": "train_size"}


def check_context_wiring() -> None:
    """Every context axis must reach the training loop: one declared in l2reg.axes but not mapped
    in CONTEXT_SETTINGS would change run ids and contexts while training exactly as before."""
    from l2reg import penalties

    unwired = [ax.key for ax in axes.CONTEXT_AXES if ax.key not in CONTEXT_SETTINGS]
    if unwired:
        raise penalties.NotWired(f"context axis {unwired[0]!r} is declared but not wired into the training "
                                 f"settings (l2reg.sweep.CONTEXT_SETTINGS)")


def train_settings(cfg: Config, device_type: str, n_split: int):
    """The training loop's shared settings from a run's config: the one place the config's
    training keys become plain arguments (sweeps and `l2sweep bench` alike)."""
    from l2reg.train import TrainSettings

    check_context_wiring()
    n_train = cfg.data.train_size or n_split
    return TrainSettings(epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                         adam_eps=cfg.train.adam_eps, plateau_factor=cfg.train.plateau_factor,
                         plateau_patience=cfg.train.plateau_patience, eval_batch_size=cfg.train.eval_batch_size,
                         deterministic=cfg.train.deterministic, dropout=cfg.train.dropout,
                         train_size=cfg.data.train_size, compile=compile_decision(cfg, device_type, n_train))


def run_spec(cfg: Config):
    """The training loop's per-run spec, from the declared setting axes (l2reg.axes)."""
    from l2reg.train import make_spec

    return make_spec(cfg.seed, cfg.alpha, cfg.schedule, **{ax.key: axes.get(cfg, ax.key) for ax in axes.SETTING_AXES
                                                            if ax.key not in ("alpha", "schedule")})


@dataclass
class SweepOutcome:
    results_dir: Path
    planned: int
    skipped: int
    trained: list[dict]

    @property
    def not_ok(self) -> list[dict]:
        return [r for r in self.trained if r["status"] != "ok"]


def provenance() -> dict:
    """What produced a run: library versions, git commit, host."""
    return {"versions": files.versions(), "git_commit": files.git_commit(), "host": socket.gethostname()}


def run_record(run: PlannedRun, result: dict, origin: dict) -> dict:
    return {
        "run_id": run.run_id,
        "setting": setting_columns(run.config),
        "context_axes": axes.context_columns(run.config),
        "seed": run.config.seed,
        "context": context_label(run.config),
        **result,
        "config": to_dict(run.config),
        **origin,
    }


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


def data_key(cfg: Config) -> tuple:
    return (cfg.data.root, cfg.data.val_fraction, cfg.data.train_limit, cfg.data.test_limit)


def load_data(cfg: Config, device, cache: dict | None = None):
    """The MNIST tensors a run needs on `device`, from `cache` when already loaded."""
    from l2reg.data import load_mnist

    key = (*data_key(cfg), str(device))
    if cache is not None and key in cache:
        return cache[key]
    data = load_mnist(cfg.data.root, cfg.data.val_fraction, cfg.data.train_limit, cfg.data.test_limit,
                      cfg.data.download, device)
    if cache is not None:
        cache[key] = data
    return data


def prepare_data(planned: Sequence[PlannedRun], device, cache: dict | None = None) -> dict:
    """Load (and so check) every data set the runs need, before anything is written."""
    cache = {} if cache is None else cache
    for run in planned:
        load_data(run.config, device, cache)
    return cache


@dataclass
class PackJob:
    """One unit of work for an executor: a pack of runs of one context, in plain values."""

    run_ids: list[str]
    configs: list[dict]  # to_dict of each run's config (from_dict rebuilds it)
    results_dir: str
    force: bool = False
    origin: dict = field(default_factory=dict)  # provenance of the submitting process

    def planned(self) -> list[PlannedRun]:
        return [PlannedRun(rid, from_dict(cfg)) for rid, cfg in zip(self.run_ids, self.configs)]


@dataclass
class JobResult:
    records: list[dict]
    busy: list[str]  # runs another process held (not trained here)


def make_jobs(planned: Sequence[PlannedRun], results_dir: Path, pack_size: int, force: bool = False) -> list[PackJob]:
    origin = provenance()
    return [PackJob([r.run_id for r in pack], [to_dict(r.config) for r in pack], str(results_dir), force, origin)
            for pack in packs(planned, pack_size)]


def run_pack_job(job: PackJob, notify: Callable | None = None, data_cache: dict | None = None) -> JobResult:
    """Train the runs of a job that are not finished and not held by another process, wherever
    this is called (this process, a worker, a SLURM node); write each run's JSON atomically.

    The device is resolved here (a `train.device=cuda` sweep may be submitted from a CPU host),
    and the compile decision is made here for the whole context. Exceptions in training are
    recorded as `failed` runs (retried by the next invocation), never raised."""
    from l2reg.train import resolve_device, train_pack

    notify = notify or (lambda event, **info: None)
    runs_dir = Path(job.results_dir) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    locks_dir = runs_dir / ".locks"
    mine: list[tuple[PlannedRun, RunLock]] = []
    busy: list[str] = []
    for run in job.planned():
        lock = RunLock(locks_dir, run.run_id)
        if not lock.acquire():
            busy.append(run.run_id)
        elif not job.force and is_finished(runs_dir / f"{run.run_id}.json"):
            lock.release()  # finished meanwhile (by another process, or an earlier attempt)
        else:
            mine.append((run, lock))
    if not mine:
        return JobResult([], busy)
    try:
        pack = [run for run, _ in mine]
        cfg = pack[0].config
        started = time.perf_counter()
        started_unix = time.time()
        origin = {**provenance(), "pid": os.getpid(), **where_running(), "submitted_by": job.origin,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_unix)),
                  "started_unix": started_unix}
        device_name = cfg.train.device
        try:
            device = resolve_device(device_name)
            data = load_data(cfg, device, data_cache)
            settings = train_settings(cfg, device.type, len(data.train_y))
            specs = [run_spec(r.config) for r in pack]
            notify("pack", runs=[r.run_id for r in pack], epochs=settings.epochs)
            results = train_pack(specs, data, settings, device,
                                 on_progress=lambda e, s, n, total=settings.epochs: notify(
                                     "epoch", epoch=e, step=s, steps=n, epochs=total))
        except Exception as error:  # one broken pack must not end the sweep: record it and go on
            message = f"{type(error).__name__}: {error}"
            results = [{"status": "failed", "error": message, "traceback": traceback.format_exc(),
                        "metrics": {}, "history": [], "seconds": time.perf_counter() - started,
                        "pack_size": len(pack), "device": device_name, "peak_memory_mib": None} for _ in pack]
        records = []
        for run, result in zip(pack, results):
            finished_unix = time.time()
            record = run_record(run, result, {**origin, "finished_at": time.strftime(
                "%Y-%m-%dT%H:%M:%S%z", time.localtime(finished_unix)), "finished_unix": finished_unix})
            files.write_json_atomic(runs_dir / f"{run.run_id}.json", record)
            records.append(record)
        notify("done", records=records)
        return JobResult(records, busy)
    finally:
        for _, lock in mine:
            lock.release()


def execute(planned: Sequence[PlannedRun], results_dir: Path, data: dict | None = None, force: bool = False,
            progress: Callable | None = None, run_jobs: Callable | None = None) -> SweepOutcome:
    """The in-process executor: train what is not finished yet, pack by pack, in this process
    (or, with `run_jobs(jobs) -> (records, busy)`, wherever that puts the jobs: l2reg.executors).

    Each run is locked while it trains: a second process on the same folder skips the runs the
    first one holds, trains the rest, then waits for the held ones and picks up any that the
    first process did not finish. `progress(event, **info)` gets 'start' (total, skipped), 'pack'
    (runs, epochs), 'epoch' (epoch, step, steps, epochs), 'done' (records) and 'waiting' (runs
    another process holds) events, for the CLI.
    """
    results_dir = Path(results_dir)
    runs_dir = results_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done = set() if force else finished_ids(runs_dir)
    # seed-major order: a sweep stopped part-way has every setting with the same seeds (the
    # baseline of each seed first), so its interim report compares like with like
    todo = sorted((run for run in planned if run.run_id not in done), key=lambda run: run.config.seed)
    skipped = len(planned) - len(todo)
    notify = progress or (lambda event, **info: None)
    notify("start", total=len(planned), skipped=skipped)
    trained: list[dict] = []
    size = pack_size_for(todo, todo[0].config.train.device) if todo else 1
    data_cache = {} if data is None else data

    def in_process(jobs: list[PackJob]) -> tuple[list[dict], list[str]]:
        records, busy = [], []
        for job in jobs:
            result = run_pack_job(job, notify, data_cache)
            records += result.records
            busy += result.busy
        return records, busy

    run_jobs = run_jobs or in_process
    first_pass = True
    while todo:
        records, busy = run_jobs(make_jobs(todo, results_dir, size, force=force and first_pass))
        trained += records
        if busy:
            notify("waiting", runs=busy)
            for rid in busy:  # block until the other process lets go of each
                lock = RunLock(runs_dir / ".locks", rid)
                lock.acquire(wait=True)
                lock.release()
        todo = [run for run in todo if run.run_id in busy and not is_finished(runs_dir / f"{run.run_id}.json")]
        first_pass = False
    return SweepOutcome(results_dir, len(planned), skipped, trained)
