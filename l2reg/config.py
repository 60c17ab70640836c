"""Configuration: the typed schema, Hydra composition, sweep expansion and validation.

The only module that imports hydra or omegaconf. Config flows one way: CLI overrides -> Hydra
compose (the dataclasses below are the schema, in Hydra's structured-config style: every key, its
type and its default are written here, once; `conf/` holds the defaults list, the config groups
and only what differs from a default) -> validated `Config` dataclasses -> plain arguments for
the library (l2reg.train.TrainSettings is built from TrainConfig's fields). Units are given next
to each field.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

DEVICES = ("auto", "cpu", "cuda")
LAUNCHERS = ("inprocess", "local", "slurm")
# Which keys are setting axes (the regularizer) and which context axes: l2reg.axes.AXES.


class ConfigError(ValueError):
    """A user-facing configuration problem: one line saying what is wrong and what is allowed."""


@dataclass
class ScheduleConfig:
    """alpha(t) = alpha * s(t), t in epochs (fractional). Only the fields of `name` matter."""

    name: str = "constant"
    gamma: float = 1.0  # exponential: s = exp(-gamma * t), gamma per epoch
    every: int = 2  # step: epochs between drops
    factor: float = 0.5  # step: s = factor ** floor(t / every)


@dataclass
class DataConfig:
    root: str = "data"  # folder holding MNIST/raw/ (torchvision layout); conf/config.yaml reads env L2SWEEP_DATA
    val_fraction: float = 0.1  # the last fraction of the training set is validation (Keras validation_split)
    train_limit: Optional[int] = None  # use only the first N training images, 10 % of them validation (quick runs)
    # train on N images of the 54,000-image training split, drawn by the run's seed; validation
    # stays the fixed last 6,000 (small-data regimes). null = the whole split.
    train_size: Optional[int] = None
    test_limit: Optional[int] = None  # evaluate on the first N test images (quick runs)
    download: bool = True  # let torchvision try to download missing files (when the network allows)


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128  # images per step
    lr: float = 1e-3  # Adam learning rate
    adam_eps: float = 1e-7  # Keras' Adam epsilon
    plateau_factor: float = 0.1  # ReduceLROnPlateau on the validation objective: lr *= factor ...
    plateau_patience: int = 3  # ... after this many epochs without improvement (Keras min_delta 1e-4)
    device: str = "auto"  # auto | cpu | cuda (auto: cuda when available)
    pack_size: int = 0  # runs trained at once; 0 = automatic (1 on CPU, from free memory on GPU)
    eval_batch_size: int = 250  # images per evaluation batch (CPU: 250 is ~1.5x faster than 1000)
    deterministic: bool = False  # GPU: deterministic cuDNN/cuBLAS kernels (slower; CPU runs always repeat)
    dropout: float = 0.5  # dropout rate of the dense layer, in [0, 1); 0 turns it off
    # torch.compile the training step: null = auto (on for CPU contexts of at least
    # COMPILE_MIN_STEPS steps per run, where the compilation pays for itself; off on CUDA until
    # measured there); decided per context, so every run of a comparison takes the same code
    # path; true also compiles vmapped packs (opt-in on a GPU)
    compile: Optional[bool] = None


@dataclass
class ReportConfig:
    min_effect_pp: float = 0.1  # smallest effect of interest, percentage points of test accuracy
    # the feature claim's margin (probe and noisy-input accuracies, pp): they spread far more over
    # seeds than test accuracy, and 10 images of a probe's accuracy is not "better features"
    min_feature_effect_pp: float = 0.5


@dataclass
class LauncherConfig:
    """Who trains the packs (l2reg.executors); never part of a run's identity. `launcher=inprocess`
    (default) trains in the `l2sweep run` process; `local` in n_jobs worker processes here;
    `slurm` as a SLURM job array through submitit, keys named as hydra-submitit-launcher names them."""

    name: str = "inprocess"  # inprocess | local | slurm
    # local
    n_jobs: Optional[int] = None  # worker processes; null = the number of available cores
    threads_per_worker: int = 1  # torch threads (and CPU cores, round-robin) per worker
    # slurm (sbatch flags as hydra-submitit-launcher passes them)
    partition: Optional[str] = None
    timeout_min: int = 60  # --time, minutes; always passed (submitit's own default is 5)
    cpus_per_task: Optional[int] = None
    gpus_per_node: Optional[int] = None
    mem_gb: Optional[int] = None
    qos: Optional[str] = None
    account: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    gres: Optional[str] = None
    array_parallelism: int = 256  # array tasks running at once (--array=0-N%array_parallelism)
    max_num_timeout: int = 3  # requeues after the time limit before a run counts as failed
    setup: List[str] = field(default_factory=list)  # shell lines run before each job
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # more sbatch flags, e.g. {mail_type: END}
    submitit_folder: Optional[str] = None  # null = <results_dir>/<name>/.submitit/%j
    signal_delay_s: int = 90  # USR2 this long before the time limit: submitit requeues the job


# The keys only one launcher reads: setting them for another is refused (a typo'd launcher=).
LOCAL_KEYS = ("n_jobs", "threads_per_worker")
SLURM_KEYS = ("partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "qos", "account", "constraint",
              "exclude", "gres", "array_parallelism", "max_num_timeout", "setup", "additional_parameters",
              "submitit_folder", "signal_delay_s")


@dataclass
class Config:
    """The composed configuration of one run (or, with sweeps, of each point)."""

    alpha: float = 0.0  # penalty coefficient, >= 0; 0 is the unregularized baseline
    # weights | activations | both, or the target of any registered penalty term
    # (l2reg.penalties: the formulas, and which term each setting selects)
    target: str = "both"
    norm: str = "l2"  # l2 (sum of squares) | l1 (sum of absolute values)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # a config group: conf/schedule/*.yaml
    # loss (a term in the loss) | decoupled (AdamW-style decay p -= lr*alpha*p; target=weights only)
    form: str = "loss"
    scope: str = "conv"  # conv | dense | all: the kernels a weight term acts on (biases never)
    seed: Optional[int] = None  # one seed; when unset, seeds 0..seeds-1 are run
    seeds: int = 3  # seeds per setting
    name: Optional[str] = None  # sweep name: results/<name>/ (default: a timestamp)
    results_dir: str = "results"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # who trains (never a run's identity), a config group: inprocess | local (worker processes) |
    # slurm (job arrays), conf/launcher/*.yaml
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    # Sweep axes an experiment file asks for, in Hydra's override grammar (key -> "a,b,c"), as
    # Hydra's own `hydra.sweeper.params`: command-line overrides of the same key win.
    sweep: Dict[str, str] = field(default_factory=dict)
    # Explicit points: a union of override sets, each expanded with Hydra's grammar together with
    # `sweep` and the command line (one sweep, one baseline per context), e.g.
    # [{schedule: exponential, schedule.gamma: "0.1,0.3"}, {norm: l1}]. A point's key wins over the
    # same key in `sweep`; the command line wins over both (`l2sweep run --point` replaces them).
    points: List[Dict[str, Any]] = field(default_factory=list)


def default_config_dir() -> Path:
    """The project's Hydra config folder: `l2reg/conf/` inside an installed wheel (package data),
    else the repository's top-level `conf/` beside the `l2reg` package (a checkout or an editable
    install). When neither holds a config.yaml, the wheel's place, so the error names it."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    return package / "conf"


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="l2sweep_schema", node=Config)


def expand_and_compose(overrides: list[str], config_dir: Path | None = None,
                       points: list[list[str]] | None = None) -> list[tuple[list[str], Config]]:
    """Expand a sweep written in Hydra's override grammar and compose each point.

    Hydra's Compose API refuses sweeps (hydra#2673), so the overrides are parsed with Hydra's own
    parser and split into the cartesian product by its BasicSweeper (a private module: hydra-core
    is pinned < 1.4 and a test covers it), then each point is composed. Returns (overrides of the
    point, typed Config) pairs, in BasicSweeper's order. Raises ConfigError on any composition or
    type error.

    One Hydra compose per distinct setting: points that differ only in a plain `seed=<int>` share
    the first one's composition with the seed substituted (`_SeedShortcut`), unless the composed
    config reads the seed anywhere else (an interpolation): then, and for every other point, each
    point is composed as it always was. Identical configs, ids and order either way (a test
    compares them with composing every point).

    Point sets (`points`, from `l2sweep run --point`, else the experiment file's `points:`): the
    sweep is the union, in order, of each set's expansion, a set's overrides replacing those of
    the same key from the file's `sweep:` (the command line's own keys win over a set's); a point
    that two sets both produce is kept once.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir or default_config_dir()).resolve()
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {config_dir}")
    _register_schema()
    GlobalHydra.instance().clear()
    composed_points: list[tuple[list[str], Config]] = []
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())

            def cartesian(items: list[str]) -> list[list[str]]:
                batches = BasicSweeper.split_arguments(parser.parse_overrides(items), None)
                return batches[0] if batches and batches[0] else [[]]  # a new list of new lists

            overrides = list(overrides)
            for item in overrides:  # one at a time, so the error names the malformed one
                try:
                    parser.parse_overrides([item])
                except OverrideParseException as error:
                    reason = str(error).splitlines()[0]
                    raise ConfigError(f"malformed override {item!r}: {reason} (Hydra's override grammar: "
                                      f"key=value, key=a,b,c, 'key=range(5)', key=glob(*))") from error
            _refuse_empty_sweeps(parser.parse_overrides(overrides))
            every_point = cartesian(overrides)
            first = compose(config_name="config", overrides=every_point[0])
            user_keys = {parsed.key_or_group for parsed in parser.parse_overrides(overrides)}
            from_file = [f"{key}={values}" for key, values in first.sweep.items() if key not in user_keys]
            _refuse_empty_sweeps(parser.parse_overrides(from_file))
            composed = {tuple(every_point[0]): first}  # the first point, already composed
            if from_file:
                overrides += from_file
                every_point, composed = cartesian(overrides), {}

            def compose_point(point: list[str]):
                done = composed.pop(tuple(point), None)
                return done if done is not None else compose(config_name="config", overrides=point)

            sets = _point_sets(points, first, parser, user_keys)
            if sets:
                seen: set[tuple[str, ...]] = set()
                parsed_all = parser.parse_overrides(overrides)
                keyed = {parsed.key_or_group: item for item, parsed in zip(overrides, parsed_all)}
                for point_set in sets:
                    own = {parsed.key_or_group for parsed in parser.parse_overrides(point_set)}
                    combined = [item for key, item in keyed.items() if key not in own or key in user_keys]
                    combined += [item for item in point_set if item.split("=", 1)[0].lstrip("+~") not in user_keys]
                    expanded = [point for point in cartesian(combined) if tuple(point) not in seen]
                    seen.update(tuple(point) for point in expanded)
                    shortcut = _SeedShortcut(compose_point, OmegaConf.to_object, expanded)
                    composed_points += [(point, shortcut.config(point)) for point in expanded]
            else:
                shortcut = _SeedShortcut(compose_point, OmegaConf.to_object, every_point)
                composed_points += [(point, shortcut.config(point)) for point in every_point]
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(_one_line(error)) from error
    finally:
        GlobalHydra.instance().clear()
    return composed_points


def _point_sets(points: list[list[str]] | None, first, parser, user_keys: set[str]) -> list[list[str]]:
    """The override sets of an explicit-points sweep: the command line's (`points`), else those of
    the composed config's `points:` (values written as Hydra override values); each checked as
    the command line's overrides are (malformed, empty sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverrideParseException

    if points is None:
        points = [[f"{key}={value}" for key, value in dict(entry).items()] for entry in (first.points or [])]
    sets = []
    for point_set in points:
        if not point_set:
            raise ConfigError("an empty point: give each --point one or more overrides, e.g. --point 'norm=l1'")
        for item in point_set:
            try:
                parser.parse_overrides([item])
            except OverrideParseException as error:
                raise ConfigError(f"malformed override {item!r} in point {' '.join(point_set)!r}: "
                                  f"{str(error).splitlines()[0]}") from error
        _refuse_empty_sweeps(parser.parse_overrides(point_set))
        sets.append(list(point_set))
    return sets


class _SeedShortcut:
    """Typed configs of sweep points, one Hydra compose per setting (a point less its `seed`).

    A point's overrides are BasicSweeper's `key=value` strings, one per key, at the same position
    in every point. A point whose seed element is a plain integer (`seed=12`, as `range()` and
    comma lists of integers write it, exactly what Hydra composes to that int) reuses the typed
    config of the first point of its setting with the seed substituted (`with_seed`): the
    composition does not depend on the seed's value unless something interpolates it, which
    `_reads_seed_only_at_seed` rules out once per setting by resolving the composed config with
    another seed. Anything else (no seed, `seed=null`, a quoted or float seed, `+seed=...`, a
    setting whose config reads the seed elsewhere, a sweep whose seed takes one value) is composed,
    as every point always was, so errors come from the same point with the same message. Points
    that share a setting share its nested config objects (as dataclasses.replace would): configs
    are never changed in place.
    """

    PLAIN_SEED = re.compile(r"seed=(-?(?:0|[1-9][0-9]*))")
    PROBE = 2_147_483_629  # a seed no sweep point carries: resolving with it shows what reads the seed

    def __init__(self, compose_point, to_object, points: list[list[str]]):
        self._compose, self._to_object = compose_point, to_object
        self._at = self._seed_at(points[0]) if points else None  # every point has its keys at the same places
        # a setting recurs only when the seed takes several values: else compose each point, no probe
        self._recurs = self._at is not None and len({point[self._at] for point in points}) > 1
        self._settings: dict[tuple[str, ...], Any] = {}  # setting -> its typed config, or None: compose each point

    @staticmethod
    def _seed_at(point: list[str]) -> int | None:
        return next((i for i, item in enumerate(point) if item.startswith("seed=")), None)

    def config(self, point: list[str]) -> Any:
        if not self._recurs:
            return self._to_object(self._compose(point))
        at = self._at
        if at >= len(point) or not point[at].startswith("seed="):  # not expected: look again
            at = self._seed_at(point)
        plain = self.PLAIN_SEED.fullmatch(point[at]) if at is not None else None
        setting = tuple(point[:at] + point[at + 1:]) if plain else None
        if plain and self._settings.get(setting) is not None:
            return with_seed(self._settings[setting], int(plain.group(1)))
        node = self._compose(point)
        typed = self._to_object(node)
        if plain and setting not in self._settings:
            seed = int(plain.group(1))
            reusable = (isinstance(typed, Config) and type(typed.seed) is int and typed.seed == seed
                        and self._reads_seed_only_at_seed(node, typed))
            self._settings[setting] = typed if reusable else None
        return typed

    def _reads_seed_only_at_seed(self, node, typed: Config) -> bool:
        """Does the composed config (`node`, before resolution) give `typed` with only the seed
        changed when its seed changes? False when an interpolation reads it (`name: run-${seed}`)."""
        import copy

        from omegaconf import OmegaConf

        try:
            probe = copy.deepcopy(node)
            OmegaConf.update(probe, "seed", self.PROBE, merge=True)
            return self._to_object(probe) == dataclasses.replace(typed, seed=self.PROBE)
        except Exception:  # anything unexpected: compose every point of this setting, as always
            return False


def with_seed(cfg: Config, seed: Any) -> Config:
    """dataclasses.replace(cfg, seed=seed), in a fraction of its time (Config has no __post_init__,
    slots or frozen fields): the other fields are the same objects, as replace leaves them."""
    copy = object.__new__(type(cfg))
    copy.__dict__.update(cfg.__dict__)
    copy.seed = seed
    return copy


def _refuse_empty_sweeps(parsed) -> None:
    """A sweep with no values (`seed=range(0)`) would make Hydra's sweeper drop every override
    and plan the defaults instead: refuse it, naming it."""
    from hydra.core.override_parser.types import Glob

    for override in parsed:
        if override.is_sweep_override() and not isinstance(override.value(), Glob):
            if next(iter(override.sweep_string_iterator()), None) is None:
                raise ConfigError(f"{override.input_line} is an empty sweep: it has no values, so there is nothing "
                                  f"to run (e.g. 'seed=range(3)' for seeds 0, 1, 2)")


def _one_line(error: Exception) -> str:
    """Hydra/OmegaConf errors span several lines and chain their cause: say it in one line."""
    import re

    text = str(error)
    cause = str(error.__cause__ or "")
    unknown = re.search(r"Key '([^']+)' not in '(\w+)'", cause)
    if unknown:
        full_key = re.search(r"full_key: (\S+)", cause)
        key = full_key.group(1) if full_key else unknown.group(1)
        return f"unknown key '{key}': not a field of the config (see `l2sweep run --help` and conf/config.yaml)"
    if "could not be converted" in cause:
        full_key = re.search(r"full_key: (\S+)", cause)
        first = cause.splitlines()[0]
        return f"{full_key.group(1) if full_key else 'a value'}: {first}"
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        options = re.findall(r"^\t(\w[\w-]*)$", text.split("Config search path")[0], flags=re.M)
        return f"{missing.group(1)}={missing.group(2)} is unknown: choose one of {', '.join(options)}"
    lines = [line.strip() for line in (text + "\n" + cause).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(error).__name__


def validate(cfg: Config) -> None:
    """Check every value before any training; raise ConfigError naming the value and what is allowed."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(isinstance(cfg.alpha, (int, float)) and math.isfinite(cfg.alpha) and cfg.alpha >= 0,
         f"alpha={cfg.alpha} is not allowed: alpha must be a finite number >= 0")
    from l2reg import axes, penalties

    unknown = axes.check_values(cfg)
    need(unknown is None, unknown or "")
    try:  # a value declared in l2reg.axes but not wired into the penalties is refused here
        penalties.terms_for(axes.setting_without_coefficient(cfg))
    except penalties.NotWired as error:
        raise ConfigError(str(error)) from None
    sched = cfg.schedule
    need(math.isfinite(sched.gamma) and sched.gamma >= 0, f"schedule.gamma={sched.gamma}: must be >= 0")
    need(sched.every >= 1, f"schedule.every={sched.every}: must be >= 1 (epochs)")
    need(math.isfinite(sched.factor) and 0 <= sched.factor <= 1, f"schedule.factor={sched.factor}: must be in [0, 1]")
    need(cfg.seed is None or cfg.seed >= 0, f"seed={cfg.seed}: must be >= 0")
    need(cfg.name is None or _plain_folder_name(cfg.name),
         f"name={cfg.name}: must be one plain folder name (letters, digits, '.', '_', '-'; no '/', not "
         f"'.' or '..'), the folder under results_dir the sweep writes")
    need(cfg.seeds >= 1, f"seeds={cfg.seeds}: must be >= 1")
    tr = cfg.train
    need(tr.epochs >= 1, f"train.epochs={tr.epochs}: must be >= 1")
    need(tr.batch_size >= 1, f"train.batch_size={tr.batch_size}: must be >= 1")
    need(math.isfinite(tr.lr) and tr.lr > 0, f"train.lr={tr.lr}: must be a finite number > 0")
    need(math.isfinite(tr.adam_eps) and tr.adam_eps > 0, f"train.adam_eps={tr.adam_eps}: must be > 0")
    need(0 < tr.plateau_factor < 1, f"train.plateau_factor={tr.plateau_factor}: must be in (0, 1)")
    need(tr.plateau_patience >= 1, f"train.plateau_patience={tr.plateau_patience}: must be >= 1")
    need(tr.device in DEVICES, f"train.device={tr.device} is unknown: choose one of {', '.join(DEVICES)}")
    need(tr.pack_size >= 0, f"train.pack_size={tr.pack_size}: must be >= 0 (0 = automatic)")
    need(tr.eval_batch_size >= 1, f"train.eval_batch_size={tr.eval_batch_size}: must be >= 1")
    need(math.isfinite(tr.dropout) and 0 <= tr.dropout < 1, f"train.dropout={tr.dropout}: must be in [0, 1)")
    data = cfg.data
    need(0 < data.val_fraction < 1, f"data.val_fraction={data.val_fraction}: must be in (0, 1)")
    if data.train_limit is not None:
        need(data.train_limit >= 1, f"data.train_limit={data.train_limit}: must be >= 1")
        train_images = data.train_limit - int(round(data.train_limit * data.val_fraction))
        need(train_images >= tr.batch_size,
             f"data.train_limit={data.train_limit} leaves {train_images} training images, fewer than "
             f"one batch (train.batch_size={tr.batch_size}): raise it or lower the batch size")
    need(data.test_limit is None or data.test_limit >= 1, f"data.test_limit={data.test_limit}: must be >= 1")
    if data.train_size is not None:
        need(data.train_size >= tr.batch_size, f"data.train_size={data.train_size}: must be at least one batch "
                                               f"(train.batch_size={tr.batch_size})")
    need(math.isfinite(cfg.report.min_effect_pp) and cfg.report.min_effect_pp > 0,
         f"report.min_effect_pp={cfg.report.min_effect_pp}: must be a number > 0 (percentage points)")
    need(math.isfinite(cfg.report.min_feature_effect_pp) and cfg.report.min_feature_effect_pp > 0,
         f"report.min_feature_effect_pp={cfg.report.min_feature_effect_pp}: must be a number > 0 (percentage points)")
    need(bool(data.root), "data.root is empty: set it (or env L2SWEEP_DATA) to the folder holding MNIST/raw/")
    validate_launcher(cfg.launcher)


def validate_launcher(launcher: LauncherConfig) -> None:
    """The launcher's values: counts >= 1, times that leave room for the USR2 before the limit, and
    no key of another launcher (`launcher.partition=...` without `launcher=slurm` would be ignored)."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(launcher.name in LAUNCHERS, f"launcher={launcher.name} is unknown: choose one of {', '.join(LAUNCHERS)}")
    defaults = LauncherConfig()
    for keys, owner in ((LOCAL_KEYS, "local"), (SLURM_KEYS, "slurm")):
        if launcher.name != owner:
            for key in keys:
                need(getattr(launcher, key) == getattr(defaults, key),
                     f"launcher.{key} applies to launcher={owner} only (this sweep has launcher={launcher.name}): "
                     f"add launcher={owner} or drop the key")
    need(launcher.n_jobs is None or launcher.n_jobs >= 1,
         f"launcher.n_jobs={launcher.n_jobs}: must be >= 1 (worker processes; null = the available cores)")
    need(launcher.threads_per_worker >= 1, f"launcher.threads_per_worker={launcher.threads_per_worker}: must be >= 1")
    need(launcher.timeout_min >= 1, f"launcher.timeout_min={launcher.timeout_min}: must be >= 1 (minutes)")
    need(0 <= launcher.signal_delay_s < launcher.timeout_min * 60,
         f"launcher.signal_delay_s={launcher.signal_delay_s}: must be in [0, timeout_min * 60) seconds "
         f"(the USR2 that requeues a job comes this long before its time limit)")
    # submitit counts a USR2 as the time limit only after min(0.8 T, T - 10 min) of the job's time T,
    # else as a preemption, which never uses up max_num_timeout: a longer delay requeues forever.
    # SLURM may signal up to a minute early, and the job's setup comes first: 2 minutes of slack.
    limit_s = launcher.timeout_min * 60
    if limit_s > 600:
        longest = int(max(0.2 * limit_s, 600) - 120)
        need(launcher.signal_delay_s <= longest,
             f"launcher.signal_delay_s={launcher.signal_delay_s}: at most {longest} s for timeout_min="
             f"{launcher.timeout_min} (submitit counts a USR2 as the time limit only after min(80 %, T - 10 min) "
             f"of the job's time; an earlier one is taken for a preemption and the job would requeue forever)")
    need(launcher.max_num_timeout >= 0, f"launcher.max_num_timeout={launcher.max_num_timeout}: must be >= 0")
    need(launcher.array_parallelism >= 1, f"launcher.array_parallelism={launcher.array_parallelism}: must be >= 1")
    for key in ("cpus_per_task", "mem_gb"):
        value = getattr(launcher, key)
        need(value is None or value >= 1, f"launcher.{key}={value}: must be >= 1 (or null: the cluster's default)")
    need(launcher.gpus_per_node is None or launcher.gpus_per_node >= 0,
         f"launcher.gpus_per_node={launcher.gpus_per_node}: must be >= 0 (or null)")
    for key in ("partition", "qos", "account", "constraint", "exclude", "gres", "submitit_folder"):
        value = getattr(launcher, key)
        need(value is None or (isinstance(value, str) and value.strip() != ""),
             f"launcher.{key} is empty: give a value or null")
    need(all(isinstance(line, str) for line in launcher.setup), "launcher.setup: must be a list of shell lines")


def _plain_folder_name(name: Any) -> bool:
    import re

    return isinstance(name, str) and name not in (".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", name) is not None


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from `to_dict` output (as stored in a run's JSON)."""
    values = dict(values)
    values["schedule"] = ScheduleConfig(**values["schedule"])
    values["data"] = DataConfig(**values["data"])
    values["train"] = TrainConfig(**values["train"])
    values["report"] = ReportConfig(**values.get("report", {}))
    values["launcher"] = LauncherConfig(**values.get("launcher", {}))  # run files older than launchers have none
    return Config(**values)


