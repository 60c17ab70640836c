"""The feature claim: L2 regularization "extracts better features".

Feature metrics (declared in l2reg.evaluate; l2reg.features fits the probes and draws the noise):
the accuracy of linear probes on the frozen pool2 features (100 and 1,000 labelled images) and the test accuracy under
Gaussian input noise (sd 0.1, 0.2, 0.3). Per setting and metric, paired by seed, with the feature
margin m_f = min_feature_effect_pp: better = H0 mean d <= m_f rejected at Holm 0.05 over all
setting x metric cells of the context; worse = H0 mean d >= 0 rejected at Holm over the setting's
own metrics. The sparsity of the activations (zero_fraction) is described, never decisive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from l2reg import stats, text
from l2reg.claims.base import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    Claim,
    Context,
    SectionView,
    Setting,
    column,
    count,
    seeds_for_margin,
    split_diverged,
    verdict_dict,
)

METRICS = ("probe_acc_100", "probe_acc_1000", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3")
SPARSITY_METRIC = "zero_fraction"
SUFFIXES = ("n", "delta_pp", "sd_pp", "p_superior", "p_superior_holm", "p_inferior", "p_worse", "p_worse_holm")
COLUMNS = (*[f"{metric}_{suffix}" for metric in METRICS for suffix in SUFFIXES],
           f"{SPARSITY_METRIC}_delta", f"{SPARSITY_METRIC}_p")
TESTS = ("paired by seed for each of " + ", ".join(METRICS) + " (higher = better): better = H0 mean "
         "d <= m rejected at Holm 0.05 over all setting x metric tests of the context; supported = some "
         "setting better on some metric and shown worse on none (H0 mean d >= 0 rejected at Holm 0.05 over "
         "that setting's own metrics); not supported = every "
         "setting x measured metric has H0 mean d >= m rejected at 0.05 (intersection-union test); "
         f"{SPARSITY_METRIC}: paired change with a two-sided t-test, descriptive only")


def measured_in(runs: pd.DataFrame) -> list[str]:
    """The feature metrics some ok run of a context has."""
    ok = runs[runs["status"].astype(str) == "ok"]
    return [m for m in METRICS if column(ok, m).notna().any()]


def cells_of(live: pd.DataFrame, measured: Sequence[str]) -> pd.DataFrame:
    """One row per setting x measured metric with its paired statistics."""
    columns = ["name", "setting", "metric", "n", "delta", "sd", "p_holm", "p_inferior", "p_worse_holm"]
    return pd.DataFrame([{"name": f"{row['name']} / {metric}", "setting": row["name"], "metric": metric,
                          "n": row[f"{metric}_n"], "delta": row[f"{metric}_delta_pp"], "sd": row[f"{metric}_sd_pp"],
                          "p_holm": row[f"{metric}_p_superior_holm"], "p_inferior": row[f"{metric}_p_inferior"],
                          "p_worse_holm": row[f"{metric}_p_worse_holm"]}
                         for _, row in live.iterrows() for metric in measured], columns=columns)


def sparsity_reasons(table: pd.DataFrame) -> list[str]:
    """zero_fraction's paired changes, described (never part of the verdict)."""
    zero = table[np.isfinite(table[f"{SPARSITY_METRIC}_delta"].astype(float))]
    if not len(zero):
        return []
    return [f"{SPARSITY_METRIC} (descriptive only, not part of the verdict): " + "; ".join(
        f"{row['name']} {text.number(row[f'{SPARSITY_METRIC}_delta'], 4)} "
        f"(two-sided paired p {text.p_value(row[f'{SPARSITY_METRIC}_p'])})" for _, row in zero.iterrows())]


def verdict_of(table: pd.DataFrame, margin: float, measured: Sequence[str]) -> dict:
    """Feature claim for one context: the cells (setting x metric in ``measured``) with their paired
    columns <metric>_n, _delta_pp, _sd_pp, _p_superior_holm, _p_inferior, _p_worse_holm. supported:
    some cell has p_superior_holm < 0.05 in a setting none of whose cells has p_worse_holm < 0.05.
    not supported: every cell tested with p_inferior < 0.05 (IUT). not
    tested: no feature metric measured, or no cell with 2 pairs. Else inconclusive (seeds as for
    accuracy, with k = Holm's family of the superiority tests). zero_fraction is described, never
    decisive."""
    f, p, level = text.number, text.p_value, stats.SIGNIFICANCE
    live, diverged, diverged_reason = split_diverged(table)
    cells = cells_of(live, measured)
    # Holm's family: the cells of every setting with 2 pairs, diverged ones too
    k_holm = int(sum((table[f"{metric}_n"] >= 2).sum() for metric in measured)) if len(table) else 0
    unmeasured = [m for m in METRICS if m not in measured]
    note = f"not measured in this context: {', '.join(unmeasured)}" if unmeasured else None
    tested = cells[cells["n"] >= 2]
    k = len(tested)
    if measured and k == 0 and len(diverged) and not len(cells[cells["n"] < 2]):
        return verdict_dict(NOT_SUPPORTED, diverged_reason, margin, None, TESTS)
    if not measured or k == 0:
        why = ("no run of this context has feature metrics" if not measured else
               "no setting has 2 seeds with feature metrics paired with the baseline")
        return verdict_dict(NOT_TESTED, [why] + ([note] if note and measured else []), margin, None, TESTS)
    untested = cells[cells["n"] < 2]

    def line(cell) -> str:
        return (f"{cell['name']}: {f(cell['delta'])} pp (n = {int(cell['n'])} seeds, Holm p (gain > {margin:g} "
                f"pp) = {p(cell['p_holm'])}, p (gain < {margin:g} pp) = {p(cell['p_inferior'])})")

    reasons, seeds = [], None
    all_better = tested[tested["p_holm"] < level].sort_values("delta", ascending=False)
    worse = tested[tested["p_worse_holm"] < level]
    # a setting better on one metric but shown worse on another does not count
    mixed = all_better[all_better["setting"].isin(set(worse["setting"]))]
    better = all_better[~all_better["setting"].isin(set(worse["setting"]))]
    if len(better):
        verdict = SUPPORTED
        reasons.append(f"{len(better)} of {k} setting x metric tests show better features by more than {margin:g} pp "
                       f"(one-sided paired t-test against {margin:g} pp, Holm over {k_holm} tests, p < {level}) "
                       "in settings shown worse on no feature metric (H0 gain >= 0, Holm over each setting's "
                       f"{len(measured)} metrics)")
        reasons += [line(cell) for _, cell in better.iterrows()]
        metrics = sorted(set(better["metric"]))
        reasons.append(f"the metric(s) that carry it: {', '.join(metrics)} (of {len(measured)} measured)")
    elif len(untested) == 0 and (tested["p_inferior"] < level).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"every one of the {k} setting x metric tests is shown to gain less than {margin:g} pp "
                       f"(intersection-union test, each p < {level}, the largest "
                       f"{p(tested['p_inferior'].max())})")
        reasons.append("highest observed gain: " + line(tested.sort_values("delta", ascending=False).iloc[0]))
    else:
        verdict = INCONCLUSIVE
        open_cells = tested[~(tested["p_inferior"] < level)]
        reasons.append(f"no setting x metric is shown better by more than {margin:g} pp in a setting shown worse on "
                       f"no metric, and {len(open_cells)} of {k} are not shown to gain less than {margin:g} pp")
        reasons.append("highest observed gain: " + line(tested.sort_values("delta", ascending=False).iloc[0]))
        if len(untested):
            reasons.append(f"{len(untested)} setting x metric cell(s) could not be tested (fewer than 2 paired seeds)")
        seeds, why = seeds_for_margin(tested, margin, k_holm, "delta", "sd", "p_inferior")
        reasons.append(why)
    if len(mixed):
        reasons.append(f"{len(mixed)} setting x metric test(s) show a gain beyond {margin:g} pp (Holm) in settings "
                       "that are significantly worse on another feature metric (Holm over the setting's metrics), "
                       "so they do not count: "
                       + "; ".join(line(cell) + " - worse on " + ", ".join(
                           worse[worse["setting"] == cell["setting"]]["metric"]) for _, cell in mixed.iterrows()))
    reasons += diverged_reason
    if note:
        reasons.append(note)
    reasons += sparsity_reasons(table)
    return verdict_dict(verdict, reasons, margin, seeds, TESTS)


class Features(Claim):
    name = "features"
    words = "extracts better features (提取更好的特征)"
    metrics = (*METRICS, SPARSITY_METRIC)
    columns = COLUMNS
    tests = TESTS
    caption = ("Each cell: the paired gain in pp (Holm p of a gain above the feature margin; Holm p "
               "of a loss, H0 gain >= 0).", "")

    def setting_row(self, setting: Setting, context: Context) -> dict:
        margin, p = context.min_feature_effect_pp, stats.one_sample_p
        row = {}
        for metric in METRICS:
            fd = setting.paired(metric)
            row.update({f"{metric}_n": len(fd), f"{metric}_delta_pp": float(fd.mean()) if len(fd) else float("nan"),
                        f"{metric}_sd_pp": float(fd.std(ddof=1)) if len(fd) > 1 else float("nan"),
                        f"{metric}_p_superior": p(fd, margin, "greater"),
                        f"{metric}_p_inferior": p(fd, margin, "less"),
                        f"{metric}_p_worse": p(fd, 0.0, "less")})
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
            # the loss tests veto a setting's support: Holm over its own metrics only (correcting a veto
            # over all cells would make it more lenient, not stricter)
            worse = stats.holm_family([row[f"{metric}_p_worse"] for metric in METRICS],
                                      [row[f"{metric}_n"] for metric in METRICS])
            for metric, value in zip(METRICS, worse):
                row[f"{metric}_p_worse_holm"] = float(value)

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        return verdict_of(table, context.min_feature_effect_pp, measured_in(context.runs))

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        columns = {"setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()]}
        for metric in METRICS:
            columns[f"{metric} pp"] = [f"{cell(d, 2, True)} ({text.p_cell(p)}; {text.p_cell(w)})" if d == d else "-"
                                       for d, p, w in zip(rows[f"{metric}_delta_pp"], rows[f"{metric}_p_superior_holm"],
                                                          rows[f"{metric}_p_worse_holm"])]
        columns["zero_fraction"] = [f"{cell(d, 4, True)} ({text.p_cell(p)})" if d == d else "-"
                                    for d, p in zip(rows["zero_fraction_delta"], rows["zero_fraction_p"])]
        return text.markdown_table(pd.DataFrame(columns))

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        return {f"{metric} gain pp, mean": text.cell(live[f"{metric}_delta_pp"].mean(), 2, True)
                if f"{metric}_delta_pp" in live else "-" for metric in METRICS}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        level = stats.SIGNIFICANCE
        measured = [m for m in METRICS  # metrics some setting of the group has paired seeds of
                    if f"{m}_n" in live and (live[f"{m}_n"] >= 2).any()]
        better_on_one = np.zeros(len(live), dtype=bool)
        worse_on_one = np.zeros(len(live), dtype=bool)
        for metric in measured:  # NaN p (untested) compares False: neither better nor worse
            better_on_one |= (live[f"{metric}_p_superior_holm"] < level).to_numpy()
            worse_on_one |= (live[f"{metric}_p_worse_holm"] < level).to_numpy()
        return {"features_count": count(better_on_one & ~worse_on_one) if measured else None,
                "features_worse": count(worse_on_one) if measured else None}

    def axis_clause(self, findings: dict) -> str | None:
        found = [f"{findings[k]} {w}" for k, w in (("features_count", "better (not shown worse on any metric)"),
                                                   ("features_worse", "shown worse on some metric")) if findings[k]]
        return "features " + ", ".join(found) if found else None


CLAIM = Features()
