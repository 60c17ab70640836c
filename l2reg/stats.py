"""Statistics of a sweep: each setting against the baseline of the same context over seeds.

Accuracies are in percent; differences in percentage points (pp) and in test images. Per setting:
n, mean and std of test accuracy, delta (pp and images), the Welch 95 % CI of the difference and
the Welch p-value, the paired-by-seed mean difference and its p-value (seeds in both groups),
Hedges' g, and Holm-adjusted p across all settings of the sweep (of the Welch p-values). The call
per setting is made at Holm-adjusted 0.05. Distributions come from scipy; nothing is hand-rolled
but Holm's step-down and Hedges' small-sample factor, which are arithmetic.
Only runs with status `ok` count; the others are counted in `n_not_ok`, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

SETTING = ["context", "alpha", "target", "norm", "schedule"]
SUMMARY_COLUMNS = SETTING + ["n", "n_not_ok", "mean_acc", "std_acc", "delta_pp", "delta_images", "ci_low_pp",
                             "ci_high_pp", "p_value", "p_holm", "paired_n", "paired_delta_pp", "paired_p",
                             "hedges_g", "call"]
SIGNIFICANCE = 0.05
POWER = 0.8
BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no detectable difference", "not tested"


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def hedges_g(x, y) -> float:
    """Standardised mean difference (x - y) / pooled sd, times 1 - 3 / (4 (n_x + n_y) - 9)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return float("nan")
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return float("nan")
    return (x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9))


def compare(setting: pd.DataFrame, baseline: pd.DataFrame, n_test: int) -> dict:
    """One setting's runs (ok only) against its baseline's: the numbers of one summary row."""
    x = setting["test_acc"].astype(float).to_numpy()
    y = baseline["test_acc"].astype(float).to_numpy()
    row = {"delta_pp": x.mean() - y.mean() if len(x) and len(y) else float("nan")}
    row["delta_images"] = row["delta_pp"] / 100 * n_test
    row.update(ci_low_pp=float("nan"), ci_high_pp=float("nan"), p_value=float("nan"), paired_n=0,
               paired_delta_pp=float("nan"), paired_p=float("nan"), hedges_g=hedges_g(x, y))
    if len(x) >= 2 and len(y) >= 2 and (x.var() > 0 or y.var() > 0):
        welch = sps.ttest_ind(x, y, equal_var=False)
        ci = welch.confidence_interval(0.95)
        row.update(ci_low_pp=float(ci.low), ci_high_pp=float(ci.high), p_value=float(welch.pvalue))
    elif len(x) >= 1 and len(y) >= 1 and x.var() == 0 and y.var() == 0 and len(x) + len(y) > 2:
        # no spread at all: the difference is exact
        row.update(ci_low_pp=row["delta_pp"], ci_high_pp=row["delta_pp"],
                   p_value=1.0 if row["delta_pp"] == 0 else 0.0)
    pairs = setting[["seed", "test_acc"]].merge(baseline[["seed", "test_acc"]], on="seed", suffixes=("", "_base"))
    row["paired_n"] = len(pairs)
    if len(pairs) >= 1:
        diff = pairs["test_acc"].astype(float) - pairs["test_acc_base"].astype(float)
        row["paired_delta_pp"] = float(diff.mean())
        if len(pairs) >= 2 and diff.var() > 0:
            row["paired_p"] = float(sps.ttest_rel(pairs["test_acc"].astype(float),
                                                  pairs["test_acc_base"].astype(float)).pvalue)
    return row


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (baseline rows first), with the comparison to its context's baseline."""
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for key, group in runs.groupby(SETTING, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        acc = ok["test_acc"].astype(float)
        row = {**dict(zip(SETTING, key)), "n": len(ok), "n_not_ok": int((group["status"] != "ok").sum()),
               "mean_acc": acc.mean() if len(acc) else float("nan"),
               "std_acc": acc.std(ddof=1) if len(acc) > 1 else float("nan")}
        context = runs[(runs["context"] == key[0]) & (runs["target"] == "none") & (runs["status"] == "ok")]
        if row["target"] == "none":
            row.update(delta_pp=0.0, delta_images=0.0, call="baseline")
        elif context.empty or ok.empty:
            row.update(delta_pp=float("nan"), call=NOT_TESTED)
        else:
            n_test = int(ok["n_test"].iloc[0]) if "n_test" in ok and pd.notna(ok["n_test"].iloc[0]) else 10000
            row.update(compare(ok, context, n_test))
        rows.append(row)
    summary = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    is_test = summary["target"] != "none"
    summary.loc[is_test, "p_holm"] = holm(summary.loc[is_test, "p_value"])
    for index in summary.index[is_test]:
        if summary.at[index, "call"] == NOT_TESTED:
            continue
        p, delta = summary.at[index, "p_holm"], summary.at[index, "delta_pp"]
        if p == p and p < SIGNIFICANCE:
            summary.at[index, "call"] = BETTER if delta > 0 else WORSE
        else:
            summary.at[index, "call"] = NO_DIFFERENCE if p == p else NOT_TESTED
    base_first = pd.concat([summary[~is_test], summary[is_test]])
    return base_first.reset_index(drop=True)


@dataclass
class Verdict:
    """The claim-level verdict and its reasons."""

    verdict: str  # supported | not supported | inconclusive
    reasons: list[str] = field(default_factory=list)
    seeds_needed: int | None = None
    min_effect_pp: float = 0.1


def pooled_sd(runs: pd.DataFrame) -> float:
    """Within-setting standard deviation of test accuracy, pooled over all settings (pp)."""
    ok = runs[runs["status"] == "ok"]
    groups = [g["test_acc"].astype(float).to_numpy() for _, g in ok.groupby(SETTING, dropna=False)]
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        return float("nan")
    return math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups if len(g) > 1) / dof)


def seeds_for_power(sd: float, effect: float, tests: int, power: float = POWER, max_n: int = 10_000) -> int | None:
    """Seeds per setting for a two-sided Welch/Student test of `effect` pp at level 0.05/tests
    (Holm's strictest step) to reach `power`, given a per-run sd: the noncentral t from scipy."""
    if not (sd > 0) or effect <= 0:
        return None
    level = SIGNIFICANCE / max(tests, 1)
    for n in range(2, max_n + 1):
        dof = 2 * n - 2
        critical = sps.t.ppf(1 - level / 2, dof)
        noncentrality = effect / (sd * math.sqrt(2 / n))
        if sps.nct.sf(critical, dof, noncentrality) + sps.nct.cdf(-critical, dof, noncentrality) >= power:
            return n
    return None


def verdict(summary: pd.DataFrame, runs: pd.DataFrame, min_effect_pp: float = 0.1) -> Verdict:
    """supported: some setting significantly better (Holm 0.05) with its whole 95 % CI >= min_effect_pp;
    not supported: every setting's 95 % CI upper bound is below min_effect_pp, or every setting is
    significantly worse; otherwise inconclusive, with the seeds per setting that would settle it."""
    tested = summary[(summary["target"] != "none") & (summary["call"] != NOT_TESTED)]
    if tested.empty:
        return Verdict("inconclusive", ["no regularized setting could be compared with a baseline "
                                        "(each needs at least 2 ok runs on both sides)"], None, min_effect_pp)
    # "Better by at least min_effect" is read as the not-supported rule mirrored: significant at
    # Holm 0.05 AND the whole 95 % CI of the gain at or above min_effect_pp.
    wins = tested[(tested["call"] == BETTER) & (tested["ci_low_pp"] >= min_effect_pp)]
    if len(wins):
        best = wins.sort_values("delta_pp", ascending=False).iloc[0]
        return Verdict("supported", [
            f"{len(wins)} of {len(tested)} settings are significantly better than the baseline (Holm-adjusted "
            f"p < {SIGNIFICANCE}) with a 95 % CI of the gain entirely above {min_effect_pp:g} pp; the best, "
            f"{describe(best)}, gains {best['delta_pp']:+.3f} pp (95 % CI {best['ci_low_pp']:+.3f} to "
            f"{best['ci_high_pp']:+.3f}, p_holm {best['p_holm']:.3g})"], None, min_effect_pp)
    best = tested.sort_values("ci_high_pp", ascending=False).iloc[0]
    if (tested["ci_high_pp"] < min_effect_pp).all():
        return Verdict("not supported", [
            f"no setting can be better than the baseline by {min_effect_pp:g} pp: every upper 95 % CI bound "
            f"is below it (the highest, {best['ci_high_pp']:+.3f} pp, is {describe(best)})",
            f"{int((tested['call'] == WORSE).sum())} of {len(tested)} settings are significantly worse"],
            None, min_effect_pp)
    if (tested["call"] == WORSE).all():
        return Verdict("not supported", [f"all {len(tested)} settings are significantly worse than the baseline"],
                       None, min_effect_pp)
    n_needed = seeds_for_power(pooled_sd(runs), min_effect_pp, len(tested))
    open_settings = int((tested["ci_high_pp"] >= min_effect_pp).sum() + tested["ci_high_pp"].isna().sum())
    reasons = [
        f"no setting is shown to be better by at least {min_effect_pp:g} pp, but {open_settings} of "
        f"{len(tested)} settings could still be (upper 95 % CI bound >= {min_effect_pp:g} pp or unknown; the "
        f"highest, {best['ci_high_pp']:+.3f} pp, is {describe(best)})",
    ]
    significant = tested[tested["call"] == BETTER]
    if len(significant):
        top = significant.sort_values("delta_pp", ascending=False).iloc[0]
        reasons.append(f"{len(significant)} setting(s) are significantly better (Holm p < {SIGNIFICANCE}), but "
                       f"the gain may be smaller than {min_effect_pp:g} pp: {describe(top)} gains "
                       f"{top['delta_pp']:+.3f} pp, 95 % CI {top['ci_low_pp']:+.3f} to {top['ci_high_pp']:+.3f}, "
                       f"p_holm {top['p_holm']:.3g}")
    if n_needed:
        reasons.append(f"with the observed seed-to-seed sd of {pooled_sd(runs):.3f} pp, about {n_needed} seeds per "
                       f"setting would detect a {min_effect_pp:g} pp gain with {POWER:.0%} power at the "
                       f"Holm-strictest level 0.05/{len(tested)}")
    return Verdict("inconclusive", reasons, n_needed, min_effect_pp)


def describe(row) -> str:
    return f"alpha={row['alpha']:g} target={row['target']} norm={row['norm']} schedule={row['schedule']}"
