"""Forest plots: one row per setting, its paired estimate, 95 % interval and the bound its claim
decides by, drawn from summary.csv's columns (and the runs, for each seed's own difference).

- forest_figure (forest_accuracy.png): per context, settings sorted by the paired gain delta_pp;
  the thin line is the 95 % paired t interval (descriptive); the thick tick is the one-sided lower
  bound at the level Holm's step-down spent on that setting (l2reg.bounds), so "tick right of +m"
  is exactly "called better"; the level is written at the right of each row; the +-m band, 0,
  a marker per accuracy call, and each seed's own paired difference as a small grey dot.
- gap_figure (gap_paired.png): the overfitting rule's two tests side by side: the train-minus-test
  gap change (thick tick: Holm-consistent UPPER bound, must be left of -m) and the test accuracy
  change over the same seeds (thick tick: lower bound at the same level, must be right of -m).
- churn_figure (churn_paired.png): churn delta in images with its jackknife-t 95 % interval, the
  one-sided 95 % lower bound ("not lower by m" iff right of -m_c), the +-m_c band and the
  permutation test's Holm p (which alone decides "lower churn") at the right of each row.
- features_figure (features_paired.png): a panel per feature metric: the paired gain, its 95 %
  interval, the Holm-consistent lower bound (better on the metric iff right of +m_j), the metric's
  own band +-m_j and a marker for the setting's features_call.

The thin 95 % intervals are never what a rule decides by; the thick ticks are. Units: pp (images
for churn).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from l2reg import axes, bounds, text
from l2reg.claims import accuracy, churn, features
from l2reg.claims import base as claim_base
from l2reg.claims.base import column

# a marker and colour per call; one vocabulary word keeps its style in every picture
GREEN, BLUE, RED, GREY, GOLD = "#1a9850", "#4575b4", "#d73027", "#7f7f7f", "#b8860b"
CALL_STYLES = {
    accuracy.BETTER: ("^", GREEN), claim_base.HEAT_SUPPORTS: ("^", GREEN), churn.LOWER: ("^", GREEN),
    accuracy.ABOVE_ZERO_ONLY: ("D", GOLD), features.NOT_NONINFERIOR: ("P", GOLD),
    accuracy.EQUIVALENT: ("s", BLUE), claim_base.HEAT_SHOWN_NOT: ("s", BLUE), churn.NOT_LOWER: ("s", BLUE),
    features.BELOW: ("s", BLUE),
    accuracy.WORSE: ("v", RED), claim_base.HEAT_AGAINST: ("v", RED), features.SHOWN_WORSE: ("v", RED),
    accuracy.UNDECIDED: ("o", GREY), accuracy.NOT_TESTED: ("o", "white"), accuracy.DIVERGED: ("X", "black"),
}
ROW_INCHES = 0.3  # height of one setting's row
NAME_SIZE = 8  # font size of the setting names
BOUND_STYLE = {"marker": "|", "markersize": 13, "markeredgewidth": 3.0, "color": "black", "linestyle": "none"}


@dataclass
class Rows:
    """One panel's settings, top row first: names, estimates, 95 % intervals, the decisive bound,
    each row's call, optionally each seed's own difference and a text at the row's right."""

    names: list[str]
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    bound: np.ndarray
    calls: list[str]
    seeds: list[np.ndarray] = field(default_factory=list)
    right: list[str] = field(default_factory=list)


def contexts_of(summary: pd.DataFrame) -> list[str]:
    return sorted(summary["context"].unique(), key=str) or [""]


def settings_of(summary: pd.DataFrame, context: str) -> pd.DataFrame:
    """One context's regularized rows with a "name" column (the axes that vary among them)."""
    rows = summary[(summary["context"] == context) & ~axes.baseline_rows(summary)].copy()
    varying = axes.varying(rows, fallback=["alpha", "target"]) if len(rows) else []
    rows["name"] = [text.setting_name(row, varying) for _, row in rows.iterrows()]
    return rows


def _values(rows: pd.DataFrame, name: str) -> np.ndarray:
    return column(rows, name).to_numpy(dtype=float)


def draw_rows(ax, rows: Rows, band: float, xlabel: str, bound_label: str, names: bool = True,
              band_label: str | None = None) -> None:
    """The rows on one panel: band +-`band`, 0, seed dots, the thin 95 % interval, the thick bound,
    a marker per call (one artist per call, its label the call), the right-hand texts."""
    y = np.arange(len(rows.names))[::-1].astype(float)  # the first row at the top
    band_patch = ax.axvspan(-band, band, color="grey", alpha=0.15, label=band_label or f"\u00b1m = \u00b1{band:.3g}")
    band_patch.set_gid("margin band")
    ax.axvline(0.0, color="black", linewidth=0.8)
    for yy, d in zip(y, rows.seeds):
        if len(d):
            jitter = np.linspace(-0.2, 0.2, len(d)) if len(d) > 1 else np.zeros(1)
            ax.scatter(d, yy + jitter, s=5, color="#9e9e9e", zorder=1, linewidths=0,
                       label="each seed's paired difference", gid="seeds")
    ax.hlines(y, rows.low, rows.high, color="#404040", linewidth=1.0, zorder=2, label="95 % CI (descriptive)",
              gid="ci95")
    ax.plot(rows.bound, y, zorder=3, label=bound_label, gid="bound", **BOUND_STYLE)
    for call in dict.fromkeys(rows.calls):
        at = [i for i, c in enumerate(rows.calls) if c == call]
        marker, colour = CALL_STYLES.get(call, ("o", GREY))
        ax.scatter(rows.estimate[at], y[at], marker=marker, s=46, color=colour, edgecolors="black", linewidths=0.6,
                   zorder=4, label=call, gid=f"call:{call}")
    if rows.right:  # as tick labels of a right-hand axis, so that the layout makes room for them
        right = ax.secondary_yaxis("right")
        right.set_yticks(y, rows.right, fontsize=7)
        right.tick_params(length=0)
    if names:
        ax.set_yticks(y, rows.names, fontsize=NAME_SIZE)
    else:  # a panel sharing its rows with the one on its left: its tick labels would overwrite those
        ax.tick_params(axis="y", labelleft=False)
    ax.set_ylim(-0.7, len(y) - 0.3)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def legend_below(fig) -> None:
    """One legend for the figure, one entry per label over all its panels (the seed dots are drawn
    per row), below the panels in three columns (beside them, it would collide with long titles)."""
    unique = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(label, handle)
    if unique:
        fig.legend(unique.values(), unique.keys(), fontsize=7, loc="outside lower center", ncol=3)


def stacked(count_rows: Sequence[int], columns: int = 1, width: float = 12.0, sharey: bool = True):
    """A figure with one row of `columns` panels per context, each as tall as its settings."""
    from matplotlib.figure import Figure

    heights = [max(n, 3) * ROW_INCHES + 1.5 for n in count_rows]  # a 3-line title and an axis need room
    # constrained layout: it makes room for the suptitle, the right-hand axes and the outside legend
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(count_rows), columns, height_ratios=heights)
    panels = []
    for r in range(len(count_rows)):
        first = fig.add_subplot(grid[r, 0])
        row = [first] + [fig.add_subplot(grid[r, c], sharey=first if sharey else None) for c in range(1, columns)]
        panels.append(row)
    return fig, panels


def _empty(ax, why: str = "no regularized setting with paired seeds", names: Sequence[str] = ()) -> None:
    """A panel without data: the reason in its middle; the setting names (when it is the first of
    a row of panels sharing their rows) or no y ticks."""
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    if names:
        ax.set_yticks(np.arange(len(names))[::-1], list(names), fontsize=NAME_SIZE)
        ax.set_ylim(-0.7, len(names) - 0.3)
    else:
        ax.tick_params(axis="y", left=False, labelleft=False)


def _suffix(context: str, several: bool) -> str:
    return f"\n[{context}]" if several else ""


def _n_seeds(values: pd.Series) -> str:
    n = sorted({int(v) for v in values.dropna() if v >= 2})
    return "no paired seeds" if not n else (f"{n[0]} seeds" if len(n) == 1 else f"{n[0]}-{n[-1]} seeds")


def forest_figure(summary: pd.DataFrame, runs: pd.DataFrame, min_effect_pp: float):
    """forest_accuracy.png (module docstring): one panel per context."""
    contexts = contexts_of(summary)
    tables = [settings_of(summary, c) for c in contexts]
    fig, panels = stacked([len(t) for t in tables])
    for (ax,), context, rows in zip(panels, contexts, tables):
        levels, lower = bounds.accuracy_bounds(rows)
        rows = rows.assign(_level=levels, _bound=lower).sort_values("delta_pp", ascending=False, kind="stable",
                                                                    na_position="last")
        k = int((column(rows, "paired_n") >= 2).sum())
        title = (f"Test accuracy gain over the baseline, paired by seed: {_n_seeds(column(rows, 'paired_n'))}, "
                 f"Holm over a family of {k} setting(s);\ncalled better exactly when the thick tick is right of "
                 f"+m = {min_effect_pp:g} pp" + _suffix(context, len(contexts) > 1))
        ax.set_title(title, fontsize=9)
        if not len(rows):
            _empty(ax)
            continue
        draw_rows(ax, Rows(
            names=list(rows["name"]), estimate=_values(rows, "delta_pp"), low=_values(rows, "paired_ci_low_pp"),
            high=_values(rows, "paired_ci_high_pp"), bound=rows["_bound"].to_numpy(float),
            calls=list(rows["call"].astype(str)),
            seeds=[bounds.seed_differences(runs, row, "test_acc") for _, row in rows.iterrows()],
            right=[f"level {lv:.2g}" if lv == lv else "-" for lv in rows["_level"]]),
            min_effect_pp, "test accuracy gain (pp), setting minus baseline, same seed",
            "one-sided lower bound at the Holm level (right column)")
    legend_below(fig)
    return fig


def gap_figure(summary: pd.DataFrame, runs: pd.DataFrame, min_effect_pp: float):
    """gap_paired.png (module docstring): per context, the gap change and the test accuracy change."""
    from l2reg.claims import overfitting

    contexts = contexts_of(summary)
    tables = [settings_of(summary, c) for c in contexts]
    fig, panels = stacked([len(t) for t in tables], columns=2, width=14.0)
    m = min_effect_pp
    for (gap_ax, acc_ax), context, rows in zip(panels, contexts, tables):
        found = bounds.gap_bounds(runs, rows, m)
        rows = rows.join(found).sort_values("gap_delta_pp", kind="stable", na_position="last")
        gap_ax.set_title("Train-minus-test gap change, paired by seed: supports needs the thick tick\n(upper bound "
                         f"at the Holm level) left of -m = -{m:g} pp" + _suffix(context, len(contexts) > 1),
                         fontsize=9)
        acc_ax.set_title("AND the test accuracy change over the same seeds: its thick tick\n(lower bound at the "
                         f"same level) right of -m = -{m:g} pp", fontsize=9)
        if not len(rows):
            _empty(gap_ax)
            _empty(acc_ax)
            continue
        calls = [overfitting.CLAIM.heat_call(row).call for _, row in rows.iterrows()]
        mean = [float(np.mean(d)) if len(d) else float("nan") for d in rows["acc_d"]]
        acc_ci = [bounds.bound_of(d, 0.025, "lower") for d in rows["acc_d"]], \
            [bounds.bound_of(d, 0.025, "upper") for d in rows["acc_d"]]
        draw_rows(gap_ax, Rows(list(rows["name"]), _values(rows, "gap_delta_pp"), _values(rows, "gap_ci_low_pp"),
                               _values(rows, "gap_ci_high_pp"), rows["gap_bound"].to_numpy(float), calls,
                               list(rows["gap_d"])), m, "gap change (pp): negative = less overfitting",
                  "one-sided upper bound at the Holm level")
        draw_rows(acc_ax, Rows(list(rows["name"]), np.array(mean), np.array(acc_ci[0]), np.array(acc_ci[1]),
                               rows["acc_bound"].to_numpy(float), calls, list(rows["acc_d"]),
                               [f"level {lv:.2g}" if lv == lv else "-" for lv in rows["level"]]),
                  m, "test accuracy change (pp)", "one-sided lower bound at the same Holm level", names=False)
    legend_below(fig)
    return fig


def churn_figure(summary: pd.DataFrame, runs: pd.DataFrame, min_effect_pp: float):
    """churn_paired.png (module docstring): one panel per context, in test images; m_c = the
    accuracy margin in images of the context's test set (its ok runs' n_test, as the claim reads it)."""
    contexts = contexts_of(summary)
    tables = [settings_of(summary, c) for c in contexts]
    fig, panels = stacked([len(t) for t in tables])
    for (ax,), context, rows in zip(panels, contexts, tables):
        ok = runs[(runs["context"] == context) & (runs["status"].astype(str) == "ok")]
        margin = min_effect_pp / 100 * column(ok, "n_test").median()
        rows = rows.sort_values("churn_delta", kind="stable", na_position="last") if "churn_delta" in rows else rows
        ax.set_title(f"Churn (test images two seeds of an arm predict differently): setting minus baseline, "
                     f"same seeds, m_c = {margin:g} images.\nLower churn: permutation test, Holm p (right) < 0.05; "
                     f"not lower by m_c: thick tick right of -m_c" + _suffix(context, len(contexts) > 1), fontsize=9)
        if not len(rows) or "churn_delta" not in rows or not column(rows, "churn_delta").notna().any():
            _empty(ax, "churn not tested (runs without per-image predictions, or too few seeds)")
            continue
        draw_rows(ax, Rows(
            list(rows["name"]), _values(rows, "churn_delta"), _values(rows, "churn_ci_low"),
            _values(rows, "churn_ci_high"), _values(rows, "churn_lower_bound"), list(rows["churn_call"].astype(str)),
            right=[f"Holm p {text.p_value(p, '-')}" for p in column(rows, "churn_p_lower_holm")]),
            margin if margin == margin else 0.0, "churn change (test images); negative = seeds disagree less",
            "one-sided 95 % lower bound (jackknife-t)")
    legend_below(fig)
    return fig


FEATURE_COLUMNS = 3  # metric panels side by side; more metrics wrap onto a further row of panels


def features_figure(summary: pd.DataFrame, metrics: Sequence[str] = features.METRICS):
    """features_paired.png (module docstring): per context rows of FEATURE_COLUMNS panels, one per
    metric, the setting names on the first panel of each row."""
    contexts = contexts_of(summary)
    tables = [settings_of(summary, c) for c in contexts]
    wraps = -(-len(metrics) // FEATURE_COLUMNS)  # rows of panels per context
    fig, panels = stacked([len(t) for t in tables for _ in range(wraps)], columns=FEATURE_COLUMNS,
                          width=3.4 * FEATURE_COLUMNS + 4.5)
    for index, (context, rows) in enumerate(zip(contexts, tables)):
        found = bounds.feature_bounds(rows, metrics) if len(rows) else {}
        base = summary[(summary["context"] == context) & axes.baseline_rows(summary)]
        calls = list(rows[features.CALL_COLUMN].astype(str)) if features.CALL_COLUMN in rows else (
            [features.UNTESTED] * len(rows))
        own = [ax for line in panels[index * wraps:(index + 1) * wraps] for ax in line]
        for at, ax in enumerate(own):
            first = at % FEATURE_COLUMNS == 0
            if at >= len(metrics):
                ax.set_axis_off()
                continue
            metric = metrics[at]
            margin = column(base if len(base) else rows, f"{metric}_margin_pp").dropna()
            m = float(margin.iloc[0]) if len(margin) else float("nan")
            ax.set_title(f"{metric}: m_j = {m:.3g} pp" + (f"\n[{context}]" if len(contexts) > 1 and at == 0 else ""),
                         fontsize=8)
            if not len(rows) or not column(rows, f"{metric}_delta_pp").notna().any():
                _empty(ax, "not measured", list(rows["name"]) if first else ())
                continue
            draw_rows(ax, Rows(list(rows["name"]), _values(rows, f"{metric}_delta_pp"),
                               _values(rows, f"{metric}_ci_low_pp"), _values(rows, f"{metric}_ci_high_pp"),
                               found[metric][1], calls), m if m == m else 0.0, "paired gain (pp)",
                      "lower bound at the Holm level (better iff right of +m_j)", names=first,
                      band_label="\u00b1m_j, the metric's margin")
    legend_below(fig)
    fig.suptitle("Feature metrics: paired gain over the baseline per setting; a setting supports the claim when "
                 "better on one metric (thick tick right of +m_j)\nand shown non-inferior on every other (one-sided "
                 "95 % bound above -m_k, uncorrected), and shown worse on none; marker = the setting's call",
                 fontsize=9)
    return fig
