"""Sweeps: from composed configs to planned runs, run ids, packs, execution and results on disk.

- plan: every composed point x its seeds (0..seeds-1 unless `seed` is swept), plus the
  unregularized baseline (alpha=0) for the same seeds and context, once per seed: at alpha=0
  target, norm and schedule do not matter, so they are canonicalised and deduplicated by id.
- run id: a readable name plus a short hash of the run's semantic config (what changes its
  numbers: not the name, folder, device or pack size). A run whose JSON says `ok` is skipped.
- execute: runs sharing a context (data and training settings) form packs, trained by the one
  loop in l2reg.train; each finished run is written at once, atomically, to runs/<run_id>.json.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from l2reg import files, schedules
from l2reg.config import REGULARIZER_KEYS, Config, ScheduleConfig, to_dict, validate

# Config fields that never change a run's numbers: left out of its identity.
_NOT_SEMANTIC = ("name", "results_dir", "seeds", "sweep", "report")
_NOT_SEMANTIC_DATA = ("root", "download")
_NOT_SEMANTIC_TRAIN = ("device", "pack_size", "eval_batch_size", "deterministic", "compile")
COMPILE_MIN_STEPS = 1000  # auto compile: a 5-epoch MNIST run has 2 110 steps, a smoke run ~22


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: Config

    @property
    def is_baseline(self) -> bool:
        return self.config.alpha == 0


def canonical(cfg: Config) -> Config:
    """The run's config with fields that cannot matter set to defaults (baseline: no regularizer)."""
    if cfg.alpha == 0:
        defaults = Config()
        return replace(cfg, alpha=0.0, target=defaults.target, norm=defaults.norm, schedule=ScheduleConfig())
    used = schedules.PARAMETERS.get(cfg.schedule.name, ())
    kept = {name: getattr(cfg.schedule, name) for name in used}
    return replace(cfg, alpha=float(cfg.alpha), schedule=ScheduleConfig(name=cfg.schedule.name, **kept))


def semantic(cfg: Config) -> dict:
    values = to_dict(canonical(cfg))
    for key in _NOT_SEMANTIC:
        values.pop(key)
    for key in _NOT_SEMANTIC_DATA:
        values["data"].pop(key)
    for key in _NOT_SEMANTIC_TRAIN:
        values["train"].pop(key)
    return values


def context(cfg: Config) -> dict:
    """What a run shares with its baseline: the semantic config less regularizer and seed."""
    values = semantic(cfg)
    for key in (*REGULARIZER_KEYS, "seed"):
        values.pop(key)
    return values


def digest(values: dict, length: int = 8) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:length]


def run_id(cfg: Config) -> str:
    cfg = canonical(cfg)
    if cfg.alpha == 0:
        readable = f"baseline-s{cfg.seed}"
    else:
        readable = f"{cfg.target}-{cfg.norm}-a{cfg.alpha:g}-{cfg.schedule.name}-s{cfg.seed}"
    return f"{readable}-{digest(semantic(cfg))}"


def plan(configs: Iterable[Config]) -> list[PlannedRun]:
    """Seeds x points, plus the baseline for each (context, seed); deduplicated, baselines first."""
    planned: dict[str, PlannedRun] = {}
    baselines: dict[str, PlannedRun] = {}
    for cfg in configs:
        validate(cfg)
        seeds = [cfg.seed] if cfg.seed is not None else list(range(cfg.seeds))
        for seed in seeds:
            run = canonical(replace(cfg, seed=seed))
            base = canonical(replace(run, alpha=0.0))
            baselines.setdefault(run_id(base), PlannedRun(run_id(base), base))
            if run.alpha > 0:
                planned.setdefault(run_id(run), PlannedRun(run_id(run), run))
    return list(baselines.values()) + list(planned.values())


def check_single(configs: Sequence[Config], field: str) -> None:
    from l2reg.config import ConfigError

    values = {getattr(c, field) for c in configs}
    if len(values) > 1:
        raise ConfigError(f"{field} cannot be swept (got {', '.join(map(str, sorted(values, key=str)))}): "
                          f"one sweep writes one results folder")


def setting_columns(cfg: Config) -> dict:
    """The regularizer setting as report columns; the baseline shows 'none'."""
    if cfg.alpha == 0:
        return {"alpha": 0.0, "target": "none", "norm": "none", "schedule": "none"}
    return {"alpha": cfg.alpha, "target": cfg.target, "norm": cfg.norm, "schedule": schedules.label(cfg.schedule)}


def context_label(cfg: Config) -> str:
    """A short label of the context (data and training settings), with its hash."""
    values = context(cfg)
    return f"epochs={values['train']['epochs']},train_limit={values['data']['train_limit']}-{digest(values, 6)}"


# A run is finished when its JSON says ok or diverged (divergence is deterministic: re-running
# would only repeat it); failed runs (an exception) are retried by the next invocation.
FINISHED = ("ok", "diverged")


def is_finished(path: Path) -> bool:
    try:
        return files.read_json(path).get("status") in FINISHED
    except (OSError, ValueError, AttributeError):
        return False


def finished_ids(runs_dir: Path) -> set[str]:
    """Ids of runs whose JSON exists, parses and says ok or diverged."""
    return {path.stem for path in Path(runs_dir).glob("*.json") if is_finished(path)}


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


@dataclass
class SweepOutcome:
    results_dir: Path
    planned: int
    skipped: int
    trained: list[dict]

    @property
    def not_ok(self) -> list[dict]:
        return [r for r in self.trained if r["status"] != "ok"]


def run_record(run: PlannedRun, result: dict, provenance: dict) -> dict:
    return {
        "run_id": run.run_id,
        "setting": setting_columns(run.config),
        "seed": run.config.seed,
        "context": context_label(run.config),
        **result,
        "config": to_dict(run.config),
        **provenance,
    }


def data_key(cfg: Config) -> tuple:
    return (cfg.data.root, cfg.data.val_fraction, cfg.data.train_limit, cfg.data.test_limit)


def prepare_data(planned: Sequence[PlannedRun], device) -> dict[tuple, object]:
    """Load (and so check) every data set the runs need, before anything is written."""
    from l2reg.data import load_mnist

    cache: dict[tuple, object] = {}
    for run in planned:
        cfg = run.config
        if data_key(cfg) not in cache:
            cache[data_key(cfg)] = load_mnist(cfg.data.root, cfg.data.val_fraction, cfg.data.train_limit,
                                              cfg.data.test_limit, cfg.data.download, device)
    return cache


def execute(planned: Sequence[PlannedRun], results_dir: Path, device, data: dict[tuple, object],
            force: bool = False, progress: Callable | None = None) -> SweepOutcome:
    """Train what is not finished yet, writing each run's JSON as soon as its pack finishes.

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
    todo = [run for run in planned if run.run_id not in done]
    skipped = len(planned) - len(todo)
    notify = progress or (lambda event, **info: None)
    notify("start", total=len(planned), skipped=skipped)
    provenance = {"versions": files.versions(), "git_commit": files.git_commit()}
    trained: list[dict] = []
    locks_dir = runs_dir / ".locks"
    size = (todo[0].config.train.pack_size or auto_pack_size(device)) if todo else 1
    first_pass = True
    while todo:
        busy: list[PlannedRun] = []
        for pack in packs(todo, size):
            mine: list[tuple[PlannedRun, RunLock]] = []
            for run in pack:
                lock = RunLock(locks_dir, run.run_id)
                if not lock.acquire():
                    busy.append(run)
                elif (not force or not first_pass) and is_finished(runs_dir / f"{run.run_id}.json"):
                    lock.release()  # another process finished it meanwhile
                else:
                    mine.append((run, lock))
            try:
                if mine:
                    trained += _train_and_write([run for run, _ in mine], runs_dir, device, data, provenance, notify)
            finally:
                for _, lock in mine:
                    lock.release()
        if busy:
            notify("waiting", runs=[r.run_id for r in busy])
            for run in busy:  # block until the other process lets go of each
                lock = RunLock(locks_dir, run.run_id)
                lock.acquire(wait=True)
                lock.release()
        todo = [run for run in busy if not is_finished(runs_dir / f"{run.run_id}.json")]
        first_pass = False
    return SweepOutcome(results_dir, len(planned), skipped, trained)


def _train_and_write(pack: list[PlannedRun], runs_dir: Path, device, data: dict, provenance: dict,
                     notify: Callable) -> list[dict]:
    """Train one pack with the one training loop; write each run's JSON atomically."""
    from l2reg.train import RunSpec, TrainSettings, train_pack

    cfg = pack[0].config
    pack_data = data[data_key(cfg)]
    steps = cfg.train.epochs * -(-len(pack_data.train_y) // cfg.train.batch_size)
    compile_steps = cfg.train.compile
    if compile_steps is None:  # auto: CPU runs long enough to repay the compilation (baseline-only
        # single runs stay eager even then: see l2reg.train._Pack); off on CUDA until measured there
        compile_steps = getattr(device, "type", str(device)) == "cpu" and steps >= COMPILE_MIN_STEPS
    settings = TrainSettings(epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                             adam_eps=cfg.train.adam_eps, plateau_factor=cfg.train.plateau_factor,
                             plateau_patience=cfg.train.plateau_patience, eval_batch_size=cfg.train.eval_batch_size,
                             deterministic=cfg.train.deterministic, compile=compile_steps)
    specs = [RunSpec(r.config.seed, r.config.alpha, r.config.target, r.config.norm, r.config.schedule) for r in pack]
    notify("pack", runs=[r.run_id for r in pack], epochs=settings.epochs)
    started = time.perf_counter()
    try:
        results = train_pack(specs, pack_data, settings, device,
                             on_progress=lambda e, s, n, total=settings.epochs: notify(
                                 "epoch", epoch=e, step=s, steps=n, epochs=total))
    except Exception as error:  # one broken pack must not end the sweep: record it and go on
        message = f"{type(error).__name__}: {error}"
        results = [{"status": "failed", "error": message, "traceback": traceback.format_exc(),
                    "metrics": {}, "history": [], "seconds": time.perf_counter() - started,
                    "pack_size": len(pack), "device": str(device), "peak_memory_mib": None} for _ in pack]
    records = []
    for run, result in zip(pack, results):
        record = run_record(run, result, {**provenance, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        files.write_json_atomic(runs_dir / f"{run.run_id}.json", record)
        records.append(record)
    notify("done", records=records)
    return records
