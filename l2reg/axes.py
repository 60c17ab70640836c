"""The declared setting axes: the one list that says what distinguishes one run from another.

Each axis has a config key, a column name, a role, the values it allows (a tuple or a registry),
the value that means "off", and a short tag for readable run names. Everything that lists
settings derives from this list: validation (l2reg.config), canonical configs, run ids and
context labels (l2reg.sweep), the per-run training spec (l2reg.train), CSV columns and
statistics grouping (l2reg.report, l2reg.stats), plots and the CLI tables. Adding an axis here
and to the config schema is the whole declaration; a value declared here but not wired into the
penalties (l2reg.penalties.terms_for) is refused before any training (exit 2), never trained as
something else. The values of `target` are the penalty registry's (l2reg.penalties.targets): a
registered term brings its own. Whether a run is the baseline (`is_baseline`) and what remains of
a setting without its coefficient (`setting_without_coefficient`) are written here only.

Roles:
- "setting": part of the regularizer. The baseline has every setting axis off (alpha = 0, the
  others read "none" in reports); a setting is compared with the baseline of its context.
- "context": what a run shares with its baseline (like epochs or the data). Each context is its
  own comparison family with its own baseline, Holm correction and verdicts.

`in_id_when_off=False` marks axes added after run ids existed: at their "off" value they are
left out of the run's identity, so finished runs keep their ids (and stay finished).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

BASELINE_LABEL = "none"  # what a baseline shows in the columns of setting axes other than alpha


def _schedule_names() -> tuple[str, ...]:
    from l2reg import schedules

    return schedules.names()


def _target_names() -> tuple[str, ...]:
    from l2reg import penalties

    return penalties.targets()


@dataclass(frozen=True)
class Axis:
    key: str  # dotted config key, e.g. "alpha", "train.dropout"
    column: str  # its column in runs.csv and summary.csv
    role: str  # "setting" | "context"
    off: Any  # the value that means "off" (the baseline's, or the behaviour before the axis existed)
    allowed: tuple | Callable[[], tuple] | None  # allowed values, a registry, or None (numbers, checked in config)
    tag: str  # short prefix in readable run names ("" = the value alone)
    unit: str  # what a value means, with its unit (README, --help)
    in_id_when_off: bool = True
    name_order: int = 0  # position in readable run names (run ids of old runs read target-norm-alpha-schedule)

    def choices(self) -> tuple | None:
        return self.allowed() if callable(self.allowed) else self.allowed


AXES: tuple[Axis, ...] = (
    Axis("alpha", "alpha", "setting", 0.0, None, "a", "penalty coefficient, >= 0 (0 = the baseline)",
         name_order=2),
    Axis("target", "target", "setting", "both", _target_names, "",
         "what the penalty acts on: conv kernels, post-ReLU conv activations, or both", name_order=0),
    Axis("norm", "norm", "setting", "l2", ("l2", "l1"), "", "l2: sum of squares; l1: sum of absolute values",
         name_order=1),
    Axis("schedule", "schedule", "setting", "constant", _schedule_names, "",
         "alpha(t) = alpha * s(t), t in epochs (schedule.gamma per epoch, schedule.every epochs)", name_order=3),
    Axis("form", "form", "setting", "loss", ("loss", "decoupled"), "",
         "loss: a term in the loss; decoupled: AdamW-style p -= lr(t)*alpha(t)*p on the scoped kernels",
         in_id_when_off=False, name_order=4),
    Axis("scope", "scope", "setting", "conv", ("conv", "dense", "all"), "scope-",
         "the kernels a weight term acts on (biases never)", in_id_when_off=False, name_order=5),
    Axis("train.dropout", "dropout", "context", 0.5, None, "dropout",
         "dropout rate of the dense layer, in [0, 1) (0 = none)", in_id_when_off=False),
    Axis("data.train_size", "train_size", "context", None, None, "n",
         "train on N images of the 54,000-image training split, drawn by seed (null = all)",
         in_id_when_off=False),
)

SETTING_AXES = tuple(axis for axis in AXES if axis.role == "setting")
CONTEXT_AXES = tuple(axis for axis in AXES if axis.role == "context")
SETTING_COLUMNS = [axis.column for axis in SETTING_AXES]
CONTEXT_COLUMNS = [axis.column for axis in CONTEXT_AXES]


def varying(settings: Any, columns: Sequence[str] = SETTING_COLUMNS,
            fallback: Sequence[str] | None = None) -> list[str]:
    """The columns (of `columns`, in that order) whose values differ between the rows of
    `settings` (a DataFrame of regularized settings; NaN counts as a value), or `fallback` (default:
    all of `columns`) when none does. The one rule for which axes name a setting in tables, plots
    and the console."""
    found = [c for c in columns if settings[c].nunique(dropna=False) > 1]
    return found or list(columns if fallback is None else fallback)


def axis(key: str) -> Axis:
    for candidate in AXES:
        if candidate.key == key:
            return candidate
    raise KeyError(f"no axis {key!r}")


def get(cfg: Any, key: str) -> Any:
    """The value of a dotted key on a config object (`train.dropout` -> cfg.train.dropout)."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


# The axes that make the coefficient alpha(t) = alpha * s(t); the other setting axes say what it
# multiplies (which penalty terms: l2reg.penalties.terms_for).
COEFFICIENT_KEYS = ("alpha", "schedule")


def is_baseline(cfg: Any) -> bool:
    """Is this run (a config, or anything with an `alpha`, such as l2reg.train.RunSpec) the
    unregularized baseline: alpha at its off value, 0. The one place the rule is written."""
    return get(cfg, "alpha") == axis("alpha").off


def baseline_rows(table: Any) -> Any:
    """is_baseline for report tables: a boolean mask of a DataFrame's rows (or the answer for one
    row, a dict or a Series), from its alpha column."""
    return table["alpha"] == axis("alpha").off


def setting_without_coefficient(cfg: Any) -> dict:
    """The setting axes other than alpha and its schedule, {key: value}: what selects the penalty
    terms (l2reg.penalties.terms_for) and what a run's spec is made of."""
    return {ax.key: get(cfg, ax.key) for ax in SETTING_AXES if ax.key not in COEFFICIENT_KEYS}


def _display(ax: Axis, cfg: Any) -> Any:
    if ax.key == "schedule":
        from l2reg import schedules

        return schedules.label(cfg.schedule)
    value = get(cfg, ax.key)
    return float(value) if ax.key == "alpha" else value


def setting_columns(cfg: Any) -> dict:
    """The regularizer setting as report columns; the baseline shows alpha 0 and 'none'."""
    if is_baseline(cfg):
        return {ax.column: (0.0 if ax.key == "alpha" else BASELINE_LABEL) for ax in SETTING_AXES}
    return {ax.column: _display(ax, cfg) for ax in SETTING_AXES}


def context_columns(cfg: Any) -> dict:
    return {ax.column: get(cfg, ax.key) for ax in CONTEXT_AXES}


def name_parts(cfg: Any) -> list[str]:
    """Readable run-name parts: every setting axis, and the axes added later only when not off;
    context axes only when not off (the default context keeps the names runs always had)."""
    parts = []
    if is_baseline(cfg):
        parts.append("baseline")
    else:
        for ax in sorted(SETTING_AXES, key=lambda a: a.name_order):
            value = get(cfg, ax.key)
            if not ax.in_id_when_off and value == ax.off:
                continue
            shown = cfg.schedule.name if ax.key == "schedule" else (f"{value:g}" if ax.key == "alpha" else value)
            parts.append(f"{ax.tag}{shown}")
    for ax in CONTEXT_AXES:
        value = get(cfg, ax.key)
        if value != ax.off:
            parts.append(f"{ax.tag}{value:g}" if isinstance(value, float) else f"{ax.tag}{value}")
    return parts


def _pop(values: dict, key: str) -> None:
    *path, last = key.split(".")
    for part in path:
        values = values.get(part, {})
    values.pop(last, None)


def drop_setting_keys(semantic: dict) -> dict:
    """A semantic dict less every setting axis: what a run shares with its baseline."""
    for ax in SETTING_AXES:
        _pop(semantic, ax.key)
    return semantic


def drop_off_values(semantic: dict) -> dict:
    """Leave the axes added after run ids existed out of a run's semantic dict at their off value
    (so old ids stay valid). `semantic` is a nested plain dict of the config."""
    for ax in AXES:
        if ax.in_id_when_off:
            continue
        *path, last = ax.key.split(".")
        node = semantic
        for part in path:
            node = node.get(part, {})
        if last in node and node[last] == ax.off:
            del node[last]
    return semantic


def check_values(cfg: Any) -> str | None:
    """The first setting/context value outside its declared choices, as an error line, or None."""
    for ax in AXES:
        choices = ax.choices()
        if choices is None:
            continue
        value = cfg.schedule.name if ax.key == "schedule" else get(cfg, ax.key)
        if value not in choices:
            return f"{ax.key}={value} is unknown: choose one of {', '.join(map(str, choices))}"
    return None
