"""Configuration: the typed schema and its validation (sweep expansion: l2reg.compose).

With l2reg.compose, the only module that imports hydra or omegaconf. Config flows one way: CLI overrides -> Hydra
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


def with_seed(cfg: Config, seed: Any) -> Config:
    """dataclasses.replace(cfg, seed=seed), in a fraction of its time (Config has no __post_init__,
    slots or frozen fields): the other fields are the same objects, as replace leaves them."""
    copy = object.__new__(type(cfg))
    copy.__dict__.update(cfg.__dict__)
    copy.seed = seed
    return copy


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


