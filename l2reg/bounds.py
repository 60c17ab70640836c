"""The confidence bounds the pictures draw, each one the bound a claim's declared rule decides by,
and the per-seed paired differences they are drawn over.

Why not the plain 95 % CI: a claim calls a setting better by a one-sided test at Holm's level over
its family, so an unadjusted 95 % interval can lie wholly above the margin for a setting the rule
does not call better (issue 23, point 5). Here each setting gets the one-sided t bound at the level
Holm's step-down procedure actually spent on it:

- Rank the family's members by p ascending (stats.holm_family's members: >= 2 pairs, a tie counting
  as p = 1, ties in p in their given order, as stats.holm sorts them). While every member ranked
  before member r was rejected, r is tested at alpha_r = 0.05 / (k - r + 1); from the first member
  s that is not rejected on, every later member gets alpha_s = 0.05 / (k - s + 1) (Holm stops there).
- The one-sided (1 - alpha_r) t bound of the mean paired difference then lies beyond the margin
  exactly when Holm rejects the member: bound > m <=> p < alpha_r (the t-test's own duality), and a
  member after the stop has p >= p_s >= alpha_s. tests/unit/test_plots.py checks the equivalence on
  planted data and on the committed screen.

Units: whatever the differences are in (pp for accuracies and feature metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg import axes, stats
from l2reg.claims.base import column, paired_differences


def holm_levels(p_values, n_pairs, level: float = stats.SIGNIFICANCE) -> np.ndarray:
    """Per hypothesis, the one-sided level Holm's step-down spent on it (module docstring); NaN
    for a non-member (fewer than 2 pairs). The same members, order and ties as stats.holm_family."""
    p = np.asarray(p_values, dtype=float)
    members = np.isfinite(p) | (np.isnan(p) & (np.asarray(n_pairs, dtype=float) >= 2))
    counted = np.where(np.isnan(p), 1.0, p)
    levels = np.full(len(p), np.nan)
    indices = np.flatnonzero(members)
    k = len(indices)
    running, stopped_at = 0.0, None
    for rank, index in enumerate(indices[np.argsort(counted[indices], kind="stable")]):
        step = level / (k - rank) if stopped_at is None else stopped_at
        levels[index] = step
        # the adjusted p, as stats.holm computes it: rejected while it stays below the level
        running = max(running, min(1.0, (k - rank) * counted[index]))
        if stopped_at is None and not running < level:
            stopped_at = step
    return levels


def _spread_ok(d: np.ndarray) -> bool:
    """stats' tie rule: fewer than 2 values or no spread beyond rounding = no t bound."""
    return len(d) >= 2 and bool(d.std(ddof=1) > stats.EXACT_TOLERANCE * max(1.0, abs(d.mean())))


def t_bound(mean: float, sd: float, n: float, level: float, side: str = "lower") -> float:
    """The one-sided (1 - level) t bound of a mean from its sample mean, sd (ddof 1) and n:
    mean -+ t_(n-1, 1-level) sd / sqrt(n); NaN for n < 2, no spread (stats' tie rule) or no level."""
    if not (np.isfinite(mean) and np.isfinite(sd) and np.isfinite(level) and n >= 2):
        return float("nan")
    if sd <= stats.EXACT_TOLERANCE * max(1.0, abs(mean)):
        return float("nan")
    half = sps.t.ppf(1 - level, n - 1) * sd / np.sqrt(n)
    return float(mean - half if side == "lower" else mean + half)


def bound_of(d: np.ndarray, level: float, side: str = "lower") -> float:
    """t_bound of the paired differences d themselves."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if not _spread_ok(d):
        return float("nan")
    return t_bound(float(d.mean()), float(d.std(ddof=1)), len(d), level, side)


def holm_bounds(means: Sequence, sds: Sequence, ns: Sequence, p_values: Sequence,
                level: float = stats.SIGNIFICANCE, side: str = "lower") -> tuple[np.ndarray, np.ndarray]:
    """(levels, bounds): holm_levels of the p-values and, per member, the one-sided t bound at its
    level from its mean, sd and n (the summary's columns); NaN where there is none."""
    levels = holm_levels(p_values, ns, level)
    bounds = np.array([t_bound(float(m), float(s), float(n), a, side)
                       for m, s, n, a in zip(means, sds, ns, levels)], dtype=float)
    return levels, bounds


def accuracy_bounds(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The accuracy claim's family (one context's setting rows of summary.csv): levels and Holm-
    consistent lower bounds of the paired gain; bound > m exactly when p_superior_holm < 0.05."""
    return holm_bounds(column(rows, "delta_pp"), column(rows, "paired_sd_pp"), column(rows, "paired_n").fillna(0),
                       column(rows, "p_superior"))


def setting_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
    """A summary row's ok runs (its context and setting columns) in a runs table."""
    mask = (runs["context"] == row["context"]) & (runs["status"].astype(str) == "ok")
    for col in axes.SETTING_COLUMNS:
        if col in runs and col in row:
            mask &= runs[col].astype(str) == str(row[col]) if col != "alpha" else (
                pd.to_numeric(runs[col], errors="coerce") == float(row[col]))
    return runs[mask]


def context_baseline(runs: pd.DataFrame, context: str) -> pd.DataFrame:
    """The ok baseline runs (alpha = 0) of one context."""
    ok = runs[(runs["context"] == context) & (runs["status"].astype(str) == "ok")]
    return ok[axes.baseline_rows(ok)]


def seed_differences(runs: pd.DataFrame, row, metric: str) -> np.ndarray:
    """A setting's paired differences of `metric` (setting minus baseline, same seed, seed order),
    as the claims pair them (claims.base.paired_differences)."""
    return paired_differences(setting_runs(runs, row), context_baseline(runs, row["context"]), metric)[1]


def gap_differences(runs: pd.DataFrame, row) -> tuple[np.ndarray, np.ndarray]:
    """(gap changes, test accuracy changes) over the seeds with train and test accuracy, paired as
    the overfitting claim pairs them: gap = train_acc - test_acc, setting minus baseline."""
    def with_gap(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["_gap"] = column(frame, "train_acc") - column(frame, "test_acc")
        return frame[frame["_gap"].notna()]

    own, base = with_gap(setting_runs(runs, row)), with_gap(context_baseline(runs, row["context"]))
    return paired_differences(own, base, "_gap")[1], paired_differences(own, base, "test_acc")[1]


def gap_bounds(runs: pd.DataFrame, rows: pd.DataFrame, margin: float) -> pd.DataFrame:
    """The overfitting claim's family (one context's setting rows): per setting the levels from its
    joint p (support_p, Holm over the settings with 2 gap pairs), the Holm-consistent one-sided
    UPPER bound of the gap change and LOWER bound of the test accuracy change at that level. The
    setting is called supporting (support_p_holm < 0.05) exactly when gap bound < -m AND accuracy
    bound > -m: support_p = max(gap_p, acc_held_p) < alpha <=> both one-sided tests reject at alpha."""
    levels = holm_levels(column(rows, "support_p"), column(rows, "gap_n").fillna(0))
    out = []
    for (_, row), level in zip(rows.iterrows(), levels):
        gap_d, acc_d = gap_differences(runs, row)
        out.append({"gap_d": gap_d, "acc_d": acc_d, "level": level,
                    "gap_bound": bound_of(gap_d, level, "upper"), "acc_bound": bound_of(acc_d, level, "lower")})
    frame = pd.DataFrame(out, index=rows.index, columns=["gap_d", "acc_d", "level", "gap_bound", "acc_bound"])
    frame.attrs["margin"] = margin
    return frame


def feature_bounds(rows: pd.DataFrame, metrics: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The feature claim's "better on metric j" family (one context's setting rows): Holm over every
    setting x metric cell, in the claim's order (settings, then metrics). Per metric, (levels,
    lower bounds): the bound exceeds m_j exactly when <metric>_p_superior_holm < 0.05."""
    cells = [(metric, index) for index in rows.index for metric in metrics]
    p = [rows.at[i, f"{m}_p_superior"] if f"{m}_p_superior" in rows else np.nan for m, i in cells]
    n = [rows.at[i, f"{m}_n"] if f"{m}_n" in rows else 0 for m, i in cells]
    levels = dict(zip(cells, holm_levels(np.asarray(p, float), np.nan_to_num(np.asarray(n, float)))))
    out = {}
    for metric in metrics:
        lv = np.array([levels[(metric, i)] for i in rows.index])
        means, sds, ns = (column(rows, f"{metric}_{s}") for s in ("delta_pp", "sd_pp", "n"))
        out[metric] = lv, np.array([t_bound(a, b, c, d) for a, b, c, d in zip(means, sds, ns.fillna(0), lv)])
    return out
