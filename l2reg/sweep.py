"""Sweeps planned: from composed configs to planned runs, run ids, contexts and packs.

- plan: every composed point x its seeds (0..seeds-1 unless `seed` is swept), plus the
  unregularized baseline (alpha=0) for the same seeds and context, once per seed: at alpha=0
  the other setting axes (l2reg.axes) do not matter, so they are canonicalised and deduplicated.
- run id: a readable name plus a short hash of the run's semantic config (what changes its
  numbers: not the name, folder, device, executor or pack size; an axis added later, at its
  "off" value, is left out, so old ids stay valid). A run whose JSON says ok/diverged is skipped.
- packs: runs sharing a context (data and training settings) train together; the pack size and
  the compile decision, the training loop's settings and per-run specs, and the data a run needs
  come from here. Where and how a pack trains is l2reg.executors' (a pack job runs anywhere).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from l2reg import axes, files, schedules
from l2reg.config import Config, ScheduleConfig, to_dict, validate, with_seed

# Config fields that never change a run's numbers: left out of its identity.
_NOT_SEMANTIC = ("name", "results_dir", "seeds", "sweep", "points", "report", "launcher")
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
    # an axis none of the setting's terms answers to cannot change the run (scope without a
    # weight term): at its default, so the run has one id
    defaults = Config()
    return replace(cfg, **{key: getattr(defaults, key) for key in _unread_axes(cfg) if "." not in key})


def _unread_axes(cfg: Config) -> tuple[str, ...]:
    from l2reg import penalties

    try:
        return penalties.unread_axes(axes.setting_without_coefficient(cfg))
    except penalties.NotWired:  # refused by validation; its id is never used for training
        return ()


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
    """Seeds x points, plus the baseline for each (context, seed); deduplicated, baselines first.

    What depends only on a point's setting (its validation, canonical configs, readable name and
    the JSON its id hashes, less the seed) is worked out once per setting (`_Setting`): points that
    differ only in `seed` (as expand_and_compose makes them: `_setting_key`) cost a substitution
    and a sha1 per run. Ids, configs and order are those of planning each run from scratch
    (`run_id`), as a test checks."""
    check_context_wiring()
    planned: dict[str, PlannedRun] = {}
    baselines: dict[str, PlannedRun] = {}
    settings: dict[tuple, _Setting] = {}
    for cfg in configs:
        key = _setting_key(cfg)
        setting = settings.get(key)
        if setting is None:
            validate(cfg)
            setting = settings[key] = _Setting(cfg)
        elif cfg.seed is not None and not (type(cfg.seed) is int and cfg.seed >= 0):
            validate(cfg)  # only the seed differs from a point that passed: its check says what is wrong
        seeds = [cfg.seed] if cfg.seed is not None else list(range(cfg.seeds))
        for seed in seeds:
            base_id = setting.baseline.run_id(seed)
            if base_id not in baselines:
                baselines[base_id] = PlannedRun(base_id, setting.baseline.config(seed))
            if setting.run is not None:
                rid = setting.run.run_id(seed)
                if rid not in planned:
                    planned[rid] = PlannedRun(rid, setting.run.config(seed))
    return list(baselines.values()) + list(planned.values())


def _setting_key(cfg: Config) -> tuple:
    """A key equal for two configs whose fields other than `seed` are the same objects, as
    expand_and_compose leaves the points whose seed it substituted; other equal configs only cost a
    setting each. plan() keeps the first config of each key alive, so an identity is never reused
    by another object meanwhile."""
    values = dict(vars(cfg), seed=None)
    return type(cfg), tuple(values), tuple(map(id, values.values()))


class _RunTemplate:
    """One canonical config (the run's or its baseline's) with the seed left open: its run id for a
    seed is its readable name, `s<seed>` and the sha1 of its semantic JSON with the seed put in."""

    _MARK = "\u0000l2sweep seed\u0000"  # a string no config holds: where the seed goes in the JSON

    def __init__(self, cfg: Config):
        self._config = cfg  # canonical: the planned run's config, its seed aside
        self._parts = axes.name_parts(canonical(cfg))  # what run_id(cfg) names
        values = semantic(canonical(cfg))
        mark = json.dumps(self._MARK)
        text = json.dumps({**values, "seed": self._MARK}, sort_keys=True) if "seed" in values else ""
        self._json = tuple(text.split(mark)) if text.count(mark) == 1 else None

    def config(self, seed) -> Config:
        return with_seed(self._config, seed)

    def run_id(self, seed) -> str:
        if self._json is None:  # no seed in the semantic dict: as run_id does it
            return run_id(self.config(seed))
        head, tail = self._json
        value = str(seed) if type(seed) is int else json.dumps(seed)  # the same text for an int
        digest_ = hashlib.sha1((head + value + tail).encode()).hexdigest()[:8]
        return "-".join([*self._parts, f"s{seed}", digest_])


class _Setting:
    """What planning needs of one setting (a validated point, its seed aside): the templates of its
    run (None for the baseline itself) and of the baseline of its context."""

    def __init__(self, cfg: Config):
        self.first = cfg  # keeps the identities of _setting_key's nested objects alive
        run = canonical(cfg)
        self.run = None if axes.is_baseline(run) else _RunTemplate(run)
        self.baseline = _RunTemplate(canonical(replace(run, alpha=0.0)))


RAW_TRAIN_IMAGES = 60_000  # MNIST's training images, as torchvision downloads them when the files are missing


def raw_train_images(root) -> int | None:
    """How many images data.root's train-images IDX file holds, from its header (magic 0x803, then
    the count), without loading MNIST; MNIST's 60,000 when the file is missing (torchvision would
    download them), None when it cannot tell (unreadable or not an images file: the loader says why)."""
    from l2reg.data import RAW_FILES, raw_dir

    path = raw_dir(root) / RAW_FILES[0]
    try:
        with open(path, "rb") as handle:
            header = handle.read(8)
    except FileNotFoundError:
        return RAW_TRAIN_IMAGES
    except OSError:
        return None
    if len(header) < 8 or int.from_bytes(header[:4], "big") != 0x803:
        return None
    return int.from_bytes(header[4:], "big")


def check_train_sizes(configs: Iterable[Config]) -> None:
    """Refuse (ConfigError, one line with the split's size) a data.train_size larger than the training
    split it draws from: data.train_limit (or all) of the raw training images, less the validation
    fraction, as l2reg.data.load_mnist splits them. Read from the IDX header, before anything is
    written; once per distinct data setting."""
    from l2reg.config import ConfigError

    seen: set[tuple] = set()
    for cfg in configs:
        data = cfg.data
        key = (data.root, data.val_fraction, data.train_limit, data.train_size)
        if data.train_size is None or key in seen:
            continue
        seen.add(key)
        raw = raw_train_images(data.root)
        if raw is None:
            continue
        n = raw if data.train_limit is None else min(raw, data.train_limit)
        n_val = int(round(n * data.val_fraction))
        split = n - n_val
        if data.train_size > split:
            limit = f"the first {n:,} (data.train_limit={data.train_limit}) of " if n < raw else ""
            raise ConfigError(
                f"data.train_size={data.train_size} is larger than the training split: {split:,} images "
                f"({limit}{raw:,} training images in {data.root}, less {n_val:,} for validation at "
                f"data.val_fraction={data.val_fraction:g}); choose at most {split}")


def check_single(configs: Sequence[Config], field_name: str) -> None:
    from l2reg.config import ConfigError

    values = {getattr(c, field_name) for c in configs}
    if len(values) > 1:
        raise ConfigError(f"{field_name} cannot be swept (got {', '.join(map(str, sorted(values, key=str)))}): "
                          f"one sweep writes one results folder")


def setting_columns(cfg: Config) -> dict:
    """The regularizer setting as report columns (l2reg.axes); the baseline shows 'none'."""
    return axes.setting_columns(cfg)


def is_finished_record(record) -> bool:
    """A run record that says diverged, or ok with a test accuracy: the run is done (the one rule
    for skipping a run, and for `l2sweep status` calling it done). Divergence is deterministic
    (re-running would only repeat it); failed runs (an exception) are retried by the next
    invocation."""
    if not isinstance(record, dict):
        return False
    if record.get("status") == "diverged":
        return True
    accuracy = (record.get("metrics") or {}).get("test_acc") if record.get("status") == "ok" else None
    return isinstance(accuracy, (int, float))


def is_finished(path: Path) -> bool:
    """A run is done when its file is a record of that run (its run_id is the file name) that
    is_finished_record: anything else is trained (again)."""
    try:
        record = files.read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("run_id") == Path(path).stem and is_finished_record(record)


def finished_ids(runs_dir: Path) -> set[str]:
    """Ids of runs whose JSON exists, parses and says ok or diverged."""
    return {path.stem for path in files.run_files(runs_dir) if is_finished(path)}


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
    from l2reg.device import resolve_device

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
    training keys become plain arguments (sweeps and `l2sweep bench` alike). TrainSettings has
    TrainConfig's keys of l2reg.train.TRAIN_KEYS, data.train_size and the compile decision."""
    from l2reg.train import TRAIN_KEYS, TrainSettings

    check_context_wiring()
    n_train = cfg.data.train_size or n_split
    return TrainSettings(**{key: getattr(cfg.train, key) for key in TRAIN_KEYS}, train_size=cfg.data.train_size,
                         compile=compile_decision(cfg, device_type, n_train))


def run_spec(cfg: Config):
    """The training loop's per-run spec, from the declared setting axes (l2reg.axes)."""
    from l2reg.train import make_spec

    return make_spec(cfg.seed, cfg.alpha, cfg.schedule, **axes.setting_without_coefficient(cfg))


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
