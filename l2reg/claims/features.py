"""The feature claim: L2 regularization "extracts better features".

Feature metrics (declared in l2reg.evaluate; l2reg.features fits the probes and draws the noise):
the accuracy of linear probes on the frozen pool2 features (100 and 1,000 labelled images, and
`probe_acc_100_cv`: the mean over 5 resampled 100-label subsets with C chosen by 5-fold
cross-validation) and the test accuracy under Gaussian input noise (sd 0.1, 0.2, 0.3). A metric
no ok run of a context records (old runs lack `probe_acc_100_cv`) is "not measured" there and
takes no part in that context's verdict.

Margins, one per metric j and context, declared with their reason:

    m_j = max(m_f, 0.5 * s_j)

m_f = `report.min_feature_effect_pp` (0.5 pp by default, the single feature margin declared
before) and s_j the sample sd (ddof 1) of metric j over the context's ok baseline runs (fewer than
2 of them, or no sd: m_j = m_f). Why: the floor m_f keeps every earlier declaration at least as
strict (no setting can be called better on a metric more easily than under the old rule), and a
metric that the seeds alone move more needs a gain of at least half its seed-to-seed sd before it
counts as "better features" (in the main grid the 100-label probe's baseline sd is 1.2 pp and the
sd-0.3 noisy accuracy's 2.8 pp; the 1,000-label probe's 0.1 pp, so m_f holds there). The same m_k
sets the non-inferiority bound -m_k: a loss within the seeds' own half-sd is not "worse
features". summary.csv carries m_j on every row (`<metric>_margin_pp`).

Per setting and metric, paired by seed (d = setting - baseline), one-sided t-tests:
- better: H0 mean d <= m_j (`p_superior`), Holm 0.05 over ALL setting x metric cells of the
  context (`p_superior_holm`; the cells with 2 or more pairs, a tie counting as p = 1);
- non-inferior: H0 mean d <= -m_j (`p_noninferior`), uncorrected: it is a gate of an
  intersection-union test (every gate must pass, so each at 0.05 keeps the level);
- below the margin: H0 mean d >= m_j (`p_inferior`), uncorrected (the IUT of `not supported`);
- worse: H0 mean d >= 0 (`p_worse`), Holm 0.05 over the setting's own measured metrics
  (`p_worse_holm`): the earlier rule's veto, kept so that the new rule can only remove support.

A setting SUPPORTS the claim (`features_call` "supports") iff it diverged in no seed, is shown
worse on no measured metric, some metric j has p_superior_holm < 0.05 AND every other metric
measured in the context has p_noninferior < 0.05 (a metric with fewer than 2 pairs, or without
spread, is not shown non-inferior, so that setting does not support). Verdict: supported if some
setting supports; not supported if every setting x measured metric cell has p_inferior < 0.05
(intersection-union; a setting that diverged in some seed counts as shown); else inconclusive.
The sparsity of the activations (zero_fraction) is described, never decisive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from l2reg import stats, text
from l2reg.claims.base import (
    HEAT_AGAINST,
    HEAT_DIVERGED,
    HEAT_NOT_TESTED,
    HEAT_SHOWN_NOT,
    HEAT_SUPPORTS,
    HEAT_UNDECIDED,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    Claim,
    Context,
    HeatCall,
    SectionView,
    Setting,
    column,
    count,
    diverged_mask,
    split_diverged,
    verdict_dict,
    with_spread,
)

METRICS = ("probe_acc_100", "probe_acc_1000", "probe_acc_100_cv", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3")
SPARSITY_METRIC = "zero_fraction"
MARGIN_SD_FACTOR = 0.5  # m_j = max(m_f, MARGIN_SD_FACTOR * baseline sd of metric j)
SUFFIXES = ("n", "delta_pp", "sd_pp", "ci_low_pp", "ci_high_pp", "margin_pp", "p_superior", "p_superior_holm",
            "p_noninferior", "p_inferior", "p_worse", "p_worse_holm")
# per-setting calls of this claim (features_call)
SUPPORTS = "supports"
NOT_NONINFERIOR = "better on a metric, not shown non-inferior on another"
SHOWN_WORSE = "shown worse on a metric"
BELOW = "shown below every margin"
UNDECIDED = "undecided"
DIVERGED = "diverged"
UNTESTED = "not tested"
CALL_COLUMN = "features_call"
COLUMNS = (*[f"{metric}_{suffix}" for metric in METRICS for suffix in SUFFIXES],
           CALL_COLUMN, f"{SPARSITY_METRIC}_delta", f"{SPARSITY_METRIC}_p")
TESTS = ("paired by seed for each of " + ", ".join(METRICS) + " (higher = better; a metric no ok run of the "
         "context records is not measured there), against a margin per metric m_j = max(m_f, "
         f"{MARGIN_SD_FACTOR:g} x the sample sd (ddof 1) of metric j over the context's ok baseline runs; m_f "
         "with fewer than 2), m_f = report.min_feature_effect_pp: better on j = H0 mean d <= m_j rejected by a "
         "one-sided t-test at Holm 0.05 over all setting x metric tests of the context; non-inferior on k = H0 "
         "mean d <= -m_k rejected at 0.05, uncorrected (a gate of an intersection-union test); worse on k = H0 "
         "mean d >= 0 rejected at Holm 0.05 over the setting's own measured metrics; a setting supports the "
         "claim iff it diverged in no seed, is shown worse on no metric, is better on some metric j and is "
         "non-inferior on "
         "every other metric measured in the context (a metric with fewer than 2 paired seeds, or without "
         "spread, is not shown non-inferior); supported = some setting supports it; not supported = every "
         "setting x measured metric has H0 mean d >= m_j rejected at 0.05 (intersection-union test; a setting "
         "that diverged in some seed counts as shown); else inconclusive; "
         f"{SPARSITY_METRIC}: paired change with a two-sided t-test, descriptive only")


def measured_in(runs: pd.DataFrame) -> list[str]:
    """The feature metrics some ok run of a context has."""
    ok = runs[runs["status"].astype(str) == "ok"]
    return [m for m in METRICS if column(ok, m).notna().any()]


def margins_of(baseline: pd.DataFrame, floor: float) -> dict[str, float]:
    """m_j = max(floor, MARGIN_SD_FACTOR * sd_j) per metric, sd_j the sample sd (ddof 1) of metric j
    over the baseline's ok runs; the floor where there are fewer than 2 values (or no finite sd)."""
    margins = {}
    for metric in METRICS:
        values = column(baseline, metric).dropna().to_numpy(dtype=float)
        sd = float(values.std(ddof=1)) if len(values) >= 2 else float("nan")
        margins[metric] = max(floor, MARGIN_SD_FACTOR * sd) if np.isfinite(sd) else float(floor)
    return margins


def call_of(row: Mapping, measured: Sequence[str], level: float = stats.SIGNIFICANCE) -> str:
    """One setting's feature call from its (Holm-corrected) columns and the context's measured
    metrics: the declared rule (module docstring)."""
    if measured and row.get("n_diverged", 0) > 0:
        return DIVERGED
    if not measured or not any(row[f"{m}_n"] >= 2 for m in measured):
        return UNTESTED
    if any(row[f"{m}_p_worse_holm"] < level for m in measured):  # the veto (NaN compares False)
        return SHOWN_WORSE
    better = [m for m in measured if row[f"{m}_p_superior_holm"] < level]  # NaN compares False
    for metric in better:
        if all(row[f"{k}_p_noninferior"] < level for k in measured if k != metric):
            return SUPPORTS
    if better:
        return NOT_NONINFERIOR
    tested = [m for m in measured if row[f"{m}_n"] >= 2]
    if len(tested) == len(measured) and all(row[f"{m}_p_inferior"] < level for m in measured):
        return BELOW
    return UNDECIDED


def cells_of(live: pd.DataFrame, measured: Sequence[str]) -> pd.DataFrame:
    """One row per setting x measured metric with its paired statistics."""
    names = ["n", "delta", "sd", "ci_low", "ci_high", "margin", "p_holm", "p_noninferior", "p_inferior",
             "p_worse_holm"]
    sources = ["n", "delta_pp", "sd_pp", "ci_low_pp", "ci_high_pp", "margin_pp", "p_superior_holm",
               "p_noninferior", "p_inferior", "p_worse_holm"]
    return pd.DataFrame([{"name": f"{row['name']} / {metric}", "setting": row["name"], "metric": metric,
                          **{name: row[f"{metric}_{source}"] for name, source in zip(names, sources)}}
                         for _, row in live.iterrows() for metric in measured],
                        columns=["name", "setting", "metric", *names])


def sparsity_reasons(table: pd.DataFrame) -> list[str]:
    """zero_fraction's paired changes, described (never part of the verdict)."""
    zero = table[np.isfinite(table[f"{SPARSITY_METRIC}_delta"].astype(float))]
    if not len(zero):
        return []
    return [f"{SPARSITY_METRIC} (descriptive only, not part of the verdict): " + "; ".join(
        f"{row['name']} {text.number(row[f'{SPARSITY_METRIC}_delta'], 4)} "
        f"(two-sided paired p {text.p_value(row[f'{SPARSITY_METRIC}_p'])})" for _, row in zero.iterrows())]


def margins_sentence(margins: Mapping[str, float], measured: Sequence[str], floor: float) -> str:
    return (f"margins per metric, m_j = max({floor:g} pp, {MARGIN_SD_FACTOR:g} x the baseline's seed-to-seed sd): "
            + ", ".join(f"{m} {margins[m]:.3f} pp" for m in measured))


def _line(cell) -> str:
    f, p, m = text.number, text.p_value, cell["margin"]
    return (f"{cell['name']}: {f(cell['delta'])} pp (n = {int(cell['n'])} seeds, Holm p (gain > {m:.3g} pp) = "
            f"{p(cell['p_holm'])}, p (gain < {m:.3g} pp) = {p(cell['p_inferior'])})")


def _ni_part(cell) -> str:
    """A metric's non-inferiority test in words: its gain, 95 % CI and p of H0 gain <= -m."""
    f, m = text.number, cell["margin"]
    if cell["n"] < 2:
        return f"{cell['metric']}: {int(cell['n'])} paired seed(s), no test"
    ci = ("no CI (no spread)" if cell["ci_low"] != cell["ci_low"]
          else f"95 % CI {f(cell['ci_low'])} to {f(cell['ci_high'])}")
    return (f"{cell['metric']} {f(cell['delta'])} pp ({ci}, p (gain > -{m:.3g} pp) = "
            f"{text.p_value(cell['p_noninferior'], 'n/a, no spread')})")


def _seeds(cells: pd.DataFrame, k: int) -> tuple[int | None, str]:
    """seeds_needed and its sentence under the declared rule, each cell with its own margin, assuming
    the observed means and sds of the paired differences are true. If some cell's gain exceeds its
    margin: for each such (setting, metric), the larger of the seeds its superiority test needs for
    80 % power at Holm's first-step level 0.05/k and those each of the setting's other metrics'
    non-inferiority tests needs for 80 % power at 0.05; the fewest over these routes. Otherwise the
    largest, over the cells not yet shown below their margin, of the seeds their inferiority test
    needs (80 % power at 0.05). Ties (no spread) are left out."""
    level, f = stats.SIGNIFICANCE, text.number
    tested = cells[cells["n"] >= 2]
    spread = with_spread(tested, "delta", "sd")
    left_out = (f" ({len(tested) - len(spread)} left out of this estimate: their paired differences have no "
                "spread yet)") if len(spread) < len(tested) else ""
    if spread.empty:
        return None, "no tested cell has paired differences with spread yet (ties): no sd to plan the seeds with"
    candidates = spread[spread["delta"] > spread["margin"]]
    if len(candidates):
        routes = []
        for _, cell in candidates.iterrows():
            need = stats.seeds_needed(cell["delta"] - cell["margin"], cell["sd"], level / k)
            others = cells[(cells["setting"] == cell["setting"]) & (cells["metric"] != cell["metric"])]
            blocked = None
            for _, other in others.iterrows():
                if other["n"] >= 2 and not len(with_spread(pd.DataFrame([other]), "delta", "sd")):
                    continue  # a tie: no sd to plan with, left out as elsewhere
                # fewer than 2 pairs: no sd to plan with, and its runs may lack the metric: no route
                ni = (stats.seeds_needed(other["delta"] + other["margin"], other["sd"], level) if other["n"] >= 2
                      else None)
                if ni is None:
                    blocked = other
                    break
                need = None if need is None else max(need, ni)
            if blocked is None and need is not None:
                routes.append((need, cell))
        if routes:
            seeds, cell = min(routes, key=lambda item: item[0])
            return seeds, (f"about {seeds} seeds per setting are needed for {cell['name']} (observed "
                           f"{f(cell['delta'])} pp, sd of paired differences {f(cell['sd'], 3, False)} pp) to be "
                           f"shown better by {cell['margin']:.3g} pp with 80 % power at Holm's first-step level "
                           f"{level}/{k} and its setting non-inferior on every other metric with 80 % power each "
                           f"at {level}, if the observed values were the truth{left_out}")
        return None, ("no finite number of seeds decides it under this rule: every observed gain beyond its "
                      "margin (" + "; ".join(candidates["name"]) + ") sits in a setting observed at or below "
                      "minus the margin on another metric, or with fewer than 2 paired seeds of one (or needs more "
                      f"than {stats.MAX_SEEDS} seeds), so its non-inferiority cannot be planned, nor can those gains "
                      f"be shown below their margins{left_out}")
    open_cells = spread[~(spread["p_inferior"] < level)]
    if open_cells.empty:
        return None, ("every tested cell with spread is shown below its margin: only the untested ones (fewer "
                      f"than 2 paired seeds) or ties keep it open{left_out}")
    needs = [(stats.seeds_needed(row["margin"] - row["delta"], row["sd"], level), row)
             for _, row in open_cells.iterrows()]
    missing = [row for n, row in needs if n is None]
    if missing:
        row = missing[0]
        return None, (f"no finite number of seeds decides it: {row['name']} has an observed mean of "
                      f"{f(row['delta'])} pp with sd {f(row['sd'], 3, False)} pp, on its margin of "
                      f"{row['margin']:.3g} pp, so neither test gains power with more seeds{left_out}")
    seeds, row = max(needs, key=lambda item: item[0])
    return seeds, (f"about {seeds} seeds per setting: then every setting x metric not yet shown below its margin "
                   f"would be, with 80 % power each at {level} (the largest need is {row['name']}, observed "
                   f"{f(row['delta'])} pp, sd {f(row['sd'], 3, False)} pp, margin {row['margin']:.3g} pp), if the "
                   f"observed values were the truth{left_out}")


def _better_cells(tested: pd.DataFrame, setting: str) -> pd.DataFrame:
    """The tested cells of `setting` shown better than their margin (Holm), strongest first."""
    own = tested[tested["setting"] == setting]
    return own[own["p_holm"] < stats.SIGNIFICANCE].sort_values(["p_holm", "delta"], ascending=[True, False])


def _supporting_reasons(supporting: Sequence[str], cells: pd.DataFrame, tested: pd.DataFrame,
                        measured: Sequence[str], k_holm: int) -> list[str]:
    """The reasons of a `supported` verdict: the rule, each supporting setting with the metric that
    carries it (its strongest better cell with every other metric non-inferior), the carriers."""
    p, level, n_metrics = text.p_value, stats.SIGNIFICANCE, len(measured)
    reasons = [f"{len(supporting)} setting(s) support it: better by more than the metric's margin on one "
               f"feature metric (one-sided paired t-test against m_j, Holm over {k_holm} tests, p < {level}) "
               f"and shown non-inferior (gain > -m_k, one-sided paired t-test, p < {level} each, "
               f"uncorrected: an intersection-union test) on every other of the {n_metrics} measured metrics"]
    carriers = set()
    for name in supporting:
        own = cells[cells["setting"] == name]
        carrier = next(c for _, c in _better_cells(tested, name).iterrows()
                       if (own[own["metric"] != c["metric"]]["p_noninferior"] < level).all())
        carriers.add(carrier["metric"])
        others = own[own["metric"] != carrier["metric"]]
        reasons.append(f"{name}: carried by {carrier['metric']} {text.number(carrier['delta'])} pp (n = "
                       f"{int(carrier['n'])} seeds, 95 % CI {text.number(carrier['ci_low'])} to "
                       f"{text.number(carrier['ci_high'])}, Holm p (gain > {carrier['margin']:.3g} pp) = "
                       f"{p(carrier['p_holm'])}); non-inferior on every other "
                       "metric: " + "; ".join(_ni_part(c) for _, c in others.iterrows()))
    reasons.append(f"the metric(s) that carry it: {', '.join(m for m in measured if m in carriers)} "
                   f"(of {n_metrics} measured)")
    return reasons


def _mixed_reason(mixed: Sequence[str], cells: pd.DataFrame, tested: pd.DataFrame) -> str:
    """Settings better on a metric that do not count: for each, the metrics it is better on and the
    other metrics it is not shown non-inferior on."""
    p, level = text.p_value, stats.SIGNIFICANCE
    parts = []
    for name in mixed:
        own = cells[cells["setting"] == name]
        better = _better_cells(tested, name)
        failed = own[~(own["p_noninferior"] < level) & ~own["metric"].isin(set(better["metric"]))]
        parts.append(f"{name}: better on " + ", ".join(
            f"{c['metric']} ({text.number(c['delta'])} pp, Holm p (gain > {c['margin']:.3g} pp) = "
            f"{p(c['p_holm'])})" for _, c in better.iterrows())
            + " but not shown non-inferior on " + "; ".join(_ni_part(c) for _, c in failed.iterrows()))
    return (f"{len(mixed)} setting(s) better on a metric do not count, not being shown non-inferior "
            "(gain > -m) on every other metric: " + " | ".join(parts))


def _vetoed_reason(vetoed: Sequence[str], cells: pd.DataFrame) -> str:
    """Settings shown worse on some feature metric (the veto), each with the metrics it is worse on."""
    p, level = text.p_value, stats.SIGNIFICANCE
    parts = []
    for name in vetoed:
        own = cells[cells["setting"] == name]
        worse = own[own["p_worse_holm"] < level]
        parts.append(f"{name}: worse on " + "; ".join(
            f"{c['metric']} ({text.number(c['delta'])} pp, 95 % CI {text.number(c['ci_low'])} to "
            f"{text.number(c['ci_high'])}, Holm p (gain < 0) = {p(c['p_worse_holm'])})"
            for _, c in worse.iterrows()))
    return (f"{len(vetoed)} setting(s) shown worse on a feature metric (H0 gain >= 0 rejected, Holm over "
            "the setting's own metrics) do not count, whatever they gain elsewhere: " + " | ".join(parts))


def verdict_of(table: pd.DataFrame, floor: float, margins: Mapping[str, float], measured: Sequence[str]) -> dict:
    """Feature claim for one context: `table` has a row per setting with the columns of COLUMNS
    (features_call from :func:`call_of`); `margins` m_j per metric; `measured` the context's
    measured metrics. supported: some setting's call is "supports". not supported: every cell
    (live setting x measured metric) tested with p_inferior < 0.05 and none untested (IUT). not
    tested: no feature metric measured, or no cell with 2 pairs. Else inconclusive, with
    :func:`_seeds`. zero_fraction is described, never decisive."""
    p, level = text.p_value, stats.SIGNIFICANCE
    extra = {"margins_pp": {m: margins[m] for m in measured}}
    live, diverged, diverged_reason = split_diverged(table)
    cells = cells_of(live, measured)
    # Holm's family: the cells of every setting with 2 pairs, diverged ones too
    k_holm = int(sum((table[f"{metric}_n"] >= 2).sum() for metric in measured)) if len(table) else 0
    unmeasured = [m for m in METRICS if m not in measured]
    note = f"not measured in this context: {', '.join(unmeasured)}" if unmeasured else None
    tested = cells[cells["n"] >= 2]
    k = len(tested)
    if measured and k == 0 and len(diverged) and not len(cells[cells["n"] < 2]):
        return verdict_dict(NOT_SUPPORTED, diverged_reason, floor, None, TESTS, **extra)
    if not measured or k == 0:
        why = ("no run of this context has feature metrics" if not measured else
               "no setting has 2 seeds with feature metrics paired with the baseline")
        return verdict_dict(NOT_TESTED, [why] + ([note] if note and measured else []), floor, None, TESTS, **extra)
    untested = cells[cells["n"] < 2]
    calls = live.set_index("name")[CALL_COLUMN] if len(live) else pd.Series(dtype=object)
    supporting = [name for name, call in calls.items() if call == SUPPORTS]
    mixed = [name for name, call in calls.items() if call == NOT_NONINFERIOR]
    vetoed = [name for name, call in calls.items() if call == SHOWN_WORSE]
    reasons, seeds = [], None
    if supporting:
        verdict = SUPPORTED
        reasons += _supporting_reasons(supporting, cells, tested, measured, k_holm)
    elif len(untested) == 0 and (tested["p_inferior"] < level).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"every one of the {k} setting x metric tests is shown to gain less than its metric's margin "
                       f"(intersection-union test, each p < {level}, the largest {p(tested['p_inferior'].max())})")
        reasons.append("highest observed gain: " + _line(tested.sort_values("delta", ascending=False).iloc[0]))
    else:
        verdict = INCONCLUSIVE
        open_cells = tested[~(tested["p_inferior"] < level)]
        reasons.append(f"no setting is shown better on one feature metric and non-inferior on every other, and "
                       f"{len(open_cells)} of {k} setting x metric tests are not shown to gain less than their "
                       "metric's margin")
        reasons.append("highest observed gain: " + _line(tested.sort_values("delta", ascending=False).iloc[0]))
        if len(untested):
            reasons.append(f"{len(untested)} setting x metric cell(s) could not be tested (fewer than 2 paired seeds)")
        seeds, why = _seeds(cells, k_holm)
        reasons.append(why)
    if mixed:
        reasons.append(_mixed_reason(mixed, cells, tested))
    if vetoed:
        reasons.append(_vetoed_reason(vetoed, cells))
    reasons.append(margins_sentence(margins, measured, floor))
    reasons += diverged_reason
    if note:
        reasons.append(note)
    reasons += sparsity_reasons(table)
    return verdict_dict(verdict, reasons, floor, seeds, TESTS, **extra)


class Features(Claim):
    name = "features"
    words = "extracts better features (提取更好的特征)"
    metrics = (*METRICS, SPARSITY_METRIC)
    columns = COLUMNS
    tests = TESTS
    caption = ("Each cell: the paired gain in pp (Holm p of a gain above the metric's margin m_j; p of "
               "non-inferiority, H0 gain <= -m_j, uncorrected). A setting supports the claim when one metric's "
               "Holm p and every other measured metric's non-inferiority p are below 0.05.", "")

    def baseline_row(self, context: Context) -> dict:
        return {f"{metric}_margin_pp": m
                for metric, m in margins_of(context.baseline, context.min_feature_effect_pp).items()}

    def setting_row(self, setting: Setting, context: Context) -> dict:
        p = stats.one_sample_p
        margins = margins_of(context.baseline, context.min_feature_effect_pp)
        row = {}
        for metric in METRICS:
            fd, m = setting.paired(metric), margins[metric]
            low, high = stats.t_interval(fd)
            row.update({f"{metric}_n": len(fd), f"{metric}_delta_pp": float(fd.mean()) if len(fd) else float("nan"),
                        f"{metric}_sd_pp": float(fd.std(ddof=1)) if len(fd) > 1 else float("nan"),
                        f"{metric}_ci_low_pp": low, f"{metric}_ci_high_pp": high, f"{metric}_margin_pp": m,
                        f"{metric}_p_superior": p(fd, m, "greater"),
                        f"{metric}_p_noninferior": p(fd, -m, "greater"),
                        f"{metric}_p_inferior": p(fd, m, "less"), f"{metric}_p_worse": p(fd, 0.0, "less")})
        zd = setting.paired(SPARSITY_METRIC)
        row[f"{SPARSITY_METRIC}_delta"] = float(zd.mean()) if len(zd) else float("nan")
        row[f"{SPARSITY_METRIC}_p"] = p(zd, 0.0, "two-sided")
        return row

    def family(self, rows: list[dict], context: Context) -> None:
        feature_n = [row[f"{metric}_n"] for row in rows for metric in METRICS]
        adjusted = iter(stats.holm_family([row[f"{metric}_p_superior"] for row in rows for metric in METRICS],
                                          feature_n))  # over all setting x metric cells of the context
        for row in rows:
            for metric in METRICS:
                row[f"{metric}_p_superior_holm"] = float(next(adjusted))
        measured = measured_in(context.runs)
        for row in rows:
            # the veto: Holm over the setting's own measured metrics only (correcting a veto over
            # all cells would make it more lenient, not stricter)
            worse = stats.holm_family([row[f"{metric}_p_worse"] for metric in measured],
                                      [row[f"{metric}_n"] for metric in measured]) if measured else []
            for metric in METRICS:
                row[f"{metric}_p_worse_holm"] = float("nan")
            for metric, value in zip(measured, worse):
                row[f"{metric}_p_worse_holm"] = float(value)
            row[CALL_COLUMN] = call_of(row, measured)

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        floor = context.min_feature_effect_pp
        return verdict_of(table, floor, margins_of(context.baseline, floor), measured_in(context.runs))

    def section(self, view: SectionView) -> list[str]:
        lines = super().section(view)
        margins = view.verdict.get("margins_pp") or {}
        if margins:  # the margins line goes under the caption, above the table
            at = lines.index(self.caption[0]) + 1
            lines[at:at] = ["", "M" + margins_sentence(margins, list(margins), view.verdict["min_effect_pp"])[1:] + "."]
        return lines

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        columns = {"setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()]}
        for metric in METRICS:
            columns[f"{metric} pp"] = [f"{cell(d, 2, True)} ({text.p_cell(p)}; {text.p_cell(w)})" if d == d else "-"
                                       for d, p, w in zip(rows[f"{metric}_delta_pp"], rows[f"{metric}_p_superior_holm"],
                                                          rows[f"{metric}_p_noninferior"])]
        columns["call"] = list(rows[CALL_COLUMN]) if CALL_COLUMN in rows else ["-"] * len(rows)
        columns["zero_fraction"] = [f"{cell(d, 4, True)} ({text.p_cell(p)})" if d == d else "-"
                                    for d, p in zip(rows["zero_fraction_delta"], rows["zero_fraction_p"])]
        return text.markdown_table(pd.DataFrame(columns))

    def heat_call(self, row) -> HeatCall:
        """From features_call: supports -> supports; shown worse on a metric -> against; shown below
        every margin -> shown not to; better on a metric but not shown non-inferior on another, or
        undecided -> undecided (neither keeps the verdict from "not supported" nor makes it
        "supported"); diverged; not tested (also for a table without the column)."""
        heat, text_ = {SUPPORTS: (HEAT_SUPPORTS, "supports"), SHOWN_WORSE: (HEAT_AGAINST, "worse on one"),
                       BELOW: (HEAT_SHOWN_NOT, "below margins"), NOT_NONINFERIOR: (HEAT_UNDECIDED, "better, not NI"),
                       UNDECIDED: (HEAT_UNDECIDED, ""), DIVERGED: (HEAT_DIVERGED, "")}.get(
            row.get(CALL_COLUMN), (HEAT_NOT_TESTED, ""))
        return HeatCall(heat, text_)

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        return {f"{metric} gain pp, mean": text.cell(live[f"{metric}_delta_pp"].mean(), 2, True)
                if f"{metric}_delta_pp" in live else "-" for metric in METRICS}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        calls = live[CALL_COLUMN] if CALL_COLUMN in live else pd.Series(UNTESTED, index=live.index, dtype=object)
        calls = calls[~diverged_mask(live)]
        tested = bool((calls != UNTESTED).any())
        return {"features_count": count(calls == SUPPORTS) if tested else None,
                "features_not_ni": count(calls == NOT_NONINFERIOR) if tested else None,
                "features_worse": count(calls == SHOWN_WORSE) if tested else None}

    def axis_clause(self, findings: dict) -> str | None:
        found = [f"{findings[k]} {w}" for k, w in (
            ("features_count", "better (on one metric, non-inferior on the others)"),
            ("features_not_ni", "better on a metric but not shown non-inferior on another"),
            ("features_worse", "shown worse on a metric")) if findings.get(k)]
        return "features " + ", ".join(found) if found else None


CLAIM = Features()
