"""A sweep's statistics: runs table -> one summary row per (context, setting) and, per context,
each registered claim's verdict (l2reg.claims).

Input: a runs table (one row per run: ``run_id, context, <setting columns>, seed, status`` and the
metrics, accuracies in percent) and, optionally, per-image test predictions and labels per run id.
Output: :func:`analyse` -> :class:`Analysis`. Each context is its own family (its own baseline,
corrections and verdicts); within one, every claim adds its columns to each setting's row, then
corrects across the settings, then decides. The columns of summary.csv, the claims of
verdict.json and their order all come from the claim registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from l2reg import axes, claims, stats
from l2reg.claims.base import DIVERGED, Context, Setting, column
from l2reg.config import ReportConfig

# the margins when no config gives them: the schema's defaults (written there once)
DEFAULT_MIN_EFFECT_PP = ReportConfig.min_effect_pp
DEFAULT_MIN_FEATURE_EFFECT_PP = ReportConfig.min_feature_effect_pp
BASELINE_COLUMN = "alpha"
ARM_COLUMNS = ("n", "n_not_ok", "n_diverged", "mean_acc", "std_acc")  # n_diverged also counts in n_not_ok


def stat_columns() -> list[str]:
    """The summary's statistics columns: the arm's counts and accuracy, every claim's columns in
    registry order, then the note."""
    return [*ARM_COLUMNS, *[c for claim in claims.all_claims() for c in claim.columns], "note"]


def summary_columns(setting_cols: Sequence[str]) -> list[str]:
    """The summary's column order: context, the setting columns, then :func:`stat_columns`."""
    return ["context", *setting_cols, *stat_columns()]


def _plain(value):
    """JSON-ready: numpy scalars -> Python, NaN/inf -> None, tuples -> lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if pd.isna(value):
        return None
    return str(value)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` returns. ``summary``: one row per (context, setting), baseline rows first,
    columns :func:`summary_columns`. ``verdicts[context][claim]``: {"verdict", "reasons", "min_effect_pp",
    "seeds_needed", "tests"} in plain JSON types. ``extras[context]``: what claims add beside their
    verdicts (the accuracy claim's "sensitivity": its verdict at other margins)."""

    summary: pd.DataFrame
    verdicts: dict
    extras: dict
    min_effect_pp: float
    setting_cols: tuple
    min_feature_effect_pp: float = DEFAULT_MIN_FEATURE_EFFECT_PP

    @property
    def sensitivity(self) -> dict:
        return {context: extra.get("sensitivity") for context, extra in self.extras.items()}

    def to_json(self) -> dict:
        """verdict.json's content: plain types only (json.dumps(..., allow_nan=False) works)."""
        return _plain({"min_effect_pp": self.min_effect_pp, "min_feature_effect_pp": self.min_feature_effect_pp,
                       "significance": stats.SIGNIFICANCE, "power": stats.POWER,
                       "setting_columns": list(self.setting_cols),
                       "contexts": {str(ctx): {"claims": self.verdicts[ctx], **self.extras[ctx]}
                                    for ctx in self.verdicts}})


def _check_unique_seeds(ok: pd.DataFrame, what: str) -> None:
    duplicated = ok["seed"][ok["seed"].duplicated(keep=False)]
    if len(duplicated):
        ids = ", ".join(map(str, ok.loc[duplicated.index, "run_id"]))
        raise ValueError(f"{what} has more than one ok run for seed(s) {sorted(set(duplicated))} ({ids}): the "
                         "runs table mixes regimes that its context column does not tell apart")


def describe(key: Mapping, setting_cols: Sequence[str]) -> str:
    """A setting's name in the verdicts: `col=value` for each column (numbers with :g)."""
    def show(value):
        return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
    return " ".join(f"{col}={show(key[col])}" for col in setting_cols)


def _arm(rows_all: pd.DataFrame, rows_ok: pd.DataFrame) -> dict:
    acc = column(rows_ok, "test_acc").dropna()
    return {"n": int(len(rows_ok)), "n_not_ok": int(len(rows_all) - len(rows_ok)),
            "n_diverged": int((rows_all["status"].astype(str) == DIVERGED).sum()),
            "mean_acc": float(acc.mean()) if len(acc) else float("nan"),
            "std_acc": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan")}


@dataclass
class _ContextResult:
    baseline_row: dict
    rows: list[dict] = field(default_factory=list)


def _settings(ctx_runs: pd.DataFrame, is_base: pd.Series, setting_cols: Sequence[str], base_ok: pd.DataFrame,
              context: str) -> list[Setting]:
    """The regularized settings of one context, each with its runs, in setting-column order."""
    settings = ctx_runs[~is_base]
    # names show the axes that vary between the settings of this context (all of them if none does)
    varying = axes.varying(settings, list(setting_cols))
    out = []
    for key_values, group in (settings.groupby(list(setting_cols), sort=True, dropna=False) if len(settings)
                              else []):
        key = dict(zip(setting_cols, key_values if isinstance(key_values, tuple) else (key_values,)))
        ok = group[group["status"].astype(str) == "ok"]
        name = describe(key, varying)
        _check_unique_seeds(ok, f"setting {name} of context {context!r}")
        out.append(Setting(key=key, name=name, runs=group, ok=ok, baseline=base_ok))
    return out


def _context_rows(ctx: Context, ctx_runs: pd.DataFrame, setting_cols: Sequence[str],
                  baseline_col: str) -> _ContextResult:
    """The baseline row and the setting rows of one context, every claim's columns filled and
    corrected across the context's settings."""
    is_base = pd.to_numeric(ctx_runs[baseline_col], errors="coerce") == 0
    base_all = ctx_runs[is_base]
    baseline_key = {col: (base_all[col].dropna().iloc[0] if len(base_all) and base_all[col].notna().any()
                          else (axes.BASELINE_LABEL if col != baseline_col else 0.0)) for col in setting_cols}
    result = _ContextResult({"context": ctx.name, **baseline_key, **_arm(base_all, ctx.baseline),
                             **{k: v for claim in claims.all_claims() for k, v in claim.baseline_row(ctx).items()},
                             "note": None if len(ctx.baseline) else "no ok baseline run in this context"})
    for setting in _settings(ctx_runs, is_base, setting_cols, ctx.baseline, ctx.name):
        row = {"context": ctx.name, **setting.key, **_arm(setting.runs, setting.ok), "_name": setting.name}
        for claim in claims.all_claims():
            row.update(claim.setting_row(setting, ctx))
        row["note"] = "; ".join(setting.notes) or None
        result.rows.append(row)
    for claim in claims.all_claims():
        claim.family(result.rows, ctx)
    return result


def analyse(runs: pd.DataFrame, setting_cols: Sequence[str], min_effect_pp: float = DEFAULT_MIN_EFFECT_PP,
            predictions: Mapping | None = None, labels: Mapping | None = None, *,
            min_feature_effect_pp: float = DEFAULT_MIN_FEATURE_EFFECT_PP,
            baseline_col: str = BASELINE_COLUMN, n_boot: int = stats.N_BOOT,
            n_spread_sim: int = stats.N_SPREAD_SIMULATIONS, rng_seed: int = stats.RNG_SEED) -> Analysis:
    """The whole analysis: per context (its own family), the summary rows and each claim's verdict
    and extras. ``predictions``/``labels``: per run id, predicted and true test labels (test order);
    missing -> the bootstrap columns are NaN and the accuracy reasons say why."""
    setting_cols = list(setting_cols)
    missing = [c for c in ["run_id", "context", "seed", "status", baseline_col, *setting_cols] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {missing}")
    baseline_rows, setting_rows, verdicts, extras = [], [], {}, {}
    columns = summary_columns(setting_cols)
    for name in sorted(runs["context"].unique(), key=str):
        ctx_runs = runs[runs["context"] == name]
        is_base = pd.to_numeric(ctx_runs[baseline_col], errors="coerce") == 0
        base_ok = ctx_runs[is_base & (ctx_runs["status"].astype(str) == "ok")]
        _check_unique_seeds(base_ok, f"the baseline of context {name!r}")
        ctx = Context(name=name, runs=ctx_runs, baseline=base_ok, min_effect_pp=min_effect_pp,
                      min_feature_effect_pp=min_feature_effect_pp, predictions=predictions or {},
                      labels=labels or {}, n_boot=n_boot, n_spread_sim=n_spread_sim, rng_seed=rng_seed)
        result = _context_rows(ctx, ctx_runs, setting_cols, baseline_col)
        table = pd.DataFrame(result.rows, columns=[*columns, "_name"]).rename(columns={"_name": "name"})
        verdicts[name] = _plain({claim.name: claim.verdict(table, ctx) for claim in claims.all_claims()})
        extras[name] = _plain({k: v for claim in claims.all_claims()
                               for k, v in claim.context_extras(table, result.rows, ctx).items()})
        baseline_rows.append(result.baseline_row)
        setting_rows += result.rows
    summary = pd.DataFrame(baseline_rows + setting_rows, columns=columns)
    return Analysis(summary=summary, verdicts=verdicts, extras=extras, min_effect_pp=float(min_effect_pp),
                    setting_cols=tuple(setting_cols), min_feature_effect_pp=float(min_feature_effect_pp))
