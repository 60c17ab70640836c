"""The plots of a sweep (matplotlib Figure objects, headless: no pyplot, PNG): which files exist,
in which order report.md shows them and what each says (PLOTS, CAPTIONS), the writer
(write_plots), and the two pictures drawn from the runs alone.

From the statistics (summary.csv's columns, each claim's rule; l2reg.heatmap, l2reg.forest):
verdict_heatmap.png, forest_accuracy.png, gap_paired.png, churn_paired.png, features_paired.png.
From the runs (here, descriptive; no rule decides by them):
- test_acc_vs_alpha.png: mean test accuracy against alpha (log axis) with unpaired 95 % t bars, a
  line per combination of the other setting axes that vary, the baseline as a band (its mean and
  95 % CI); one panel per context;
- val_acc_per_epoch.png: mean validation accuracy per epoch, a panel per alpha (rows: contexts),
  a line per combination of the other axes and the baseline in black in each panel.
In both the first varying axis (usually target) sets a line's colour, the second (usually
schedule) its line style and a third its marker, by the value's rank among all the runs' values
(palette()), so a value keeps its style in every file; the lines of one alpha are moved a little
aside (DODGE_DECADES) so that their CIs stay readable.

Retired (removed from a folder when its plots are rewritten): paired_gain_vs_alpha.png (unadjusted
CIs above +m for settings the rule does not call better), gap_vs_alpha.png (unpaired intervals),
features_vs_alpha.png (raw means, no margin), spread_vs_alpha.png (a seed sd without an interval;
no interval for an sd ratio agrees with the Brown-Forsythe Holm rule, so the stability calls are
shown in the heat map instead).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg import axes
from l2reg.files import write_bytes_atomic

HEATMAP_PLOT = "verdict_heatmap.png"
FOREST_PLOT = "forest_accuracy.png"
GAP_PLOT = "gap_paired.png"
CHURN_PLOT = "churn_paired.png"
FEATURES_PLOT = "features_paired.png"
ACCURACY_PLOT = "test_acc_vs_alpha.png"
VALIDATION_PLOT = "val_acc_per_epoch.png"
PLOTS = (HEATMAP_PLOT, FOREST_PLOT, GAP_PLOT, CHURN_PLOT, FEATURES_PLOT, ACCURACY_PLOT, VALIDATION_PLOT)
RETIRED = ("paired_gain_vs_alpha.png", "gap_vs_alpha.png", "features_vs_alpha.png", "spread_vs_alpha.png")
CAPTIONS = {
    HEATMAP_PLOT: "Settings x claims: each cell is what that claim's declared per-setting test decided (supports, "
                  "shown not to, against, undecided, not tested, diverged); under each claim its verdict.",
    FOREST_PLOT: "Accuracy: paired gain per setting, sorted; thin line 95 % CI (descriptive), grey dots the seeds' own "
                 "differences, thick tick the one-sided lower bound at the level Holm spent on the setting (written "
                 "on the right): called better exactly when the tick is right of +m.",
    GAP_PLOT: "Overfitting: the train-minus-test gap change and the test accuracy change, paired by seed; a setting "
              "supports the claim exactly when the gap's tick is left of -m and the accuracy's tick right of -m "
              "(one-sided bounds at the setting's Holm level).",
    CHURN_PLOT: "Churn: change in the test images two seeds disagree on, with its jackknife-t 95 % CI; lower churn "
                "is decided by the permutation test's Holm p (right), \"not lower by m\" by the thick one-sided "
                "bound right of -m_c.",
    FEATURES_PLOT: "Features: paired gain per metric with its 95 % CI and the metric's margin band; the thick tick "
                   "(Holm over every setting x metric) right of +m_j = better on that metric; marker = the setting's "
                   "feature call.",
    ACCURACY_PLOT: "Descriptive: mean test accuracy per arm with unpaired 95 % t bars (the verdict is paired: see the "
                   "forest plot).",
    VALIDATION_PLOT: "Descriptive: mean validation accuracy per epoch.",
}
LINE_AXES = [c for c in axes.SETTING_COLUMNS if c != "alpha"]


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (0 for a single value)."""
    values = values.dropna().astype(float)
    if len(values) < 2:
        return (float(values.mean()) if len(values) else float("nan")), 0.0
    half = sps.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def _line_axes(regularized: pd.DataFrame) -> list[str]:
    """The non-alpha setting axes that vary (one line per combination of them)."""
    return axes.varying(regularized, LINE_AXES, fallback=["target"])


def _label(key: tuple) -> str:
    return ", ".join(str(v) for v in key)


COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:grey")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DODGE_DECADES = 0.025  # horizontal offset between the lines of one alpha, in decades of alpha


def palette(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Every value of each line axis among a frame's regularized rows (runs or summary), sorted:
    a value's rank picks its style, so one value keeps its style in every plot drawn with it."""
    regularized = frame[~axes.baseline_rows(frame)]
    return {c: sorted({str(v) for v in regularized[c]}) for c in LINE_AXES if c in regularized}


def _styles(keys: list[tuple], columns: list[str], values: dict[str, list[str]]) -> dict[tuple, dict]:
    """Matplotlib style per line key (the values of `columns`, the axes that vary): the first axis
    picks the colour, the second the line style, the third the marker, each by the value's rank in
    `values` (palette())."""
    styles = {key: {"marker": "o"} for key in keys}
    for position, choices, name in ((0, COLOURS, "color"), (1, LINE_STYLES, "linestyle"), (2, MARKERS, "marker")):
        if position >= len(columns):
            break
        known = values.get(columns[position], [])
        for key in keys:
            value = str(key[position])
            rank = known.index(value) if value in known else len(known)
            styles[key][name] = choices[rank % len(choices)]
    return styles


def _keys(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """The line keys (tuples of the `columns` values) of a frame's regularized rows, sorted."""
    regularized = frame[~axes.baseline_rows(frame)]
    return sorted({tuple(row) for row in regularized[columns].itertuples(index=False)}, key=str)


def _dodge(index: int, count: int) -> float:
    """The factor that moves line `index` of `count` aside on a log alpha axis (1.0 for one line)."""
    return 10 ** ((index - (count - 1) / 2) * DODGE_DECADES)


def _legend(ax, title: str, handles: list | None = None) -> None:
    """The legend outside the panel, on its right (never over the data): the panel's own lines, or
    `handles` (proxies for every line of a row of panels)."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=7, title=title, title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _proxies(keys: list[tuple], styles: dict, baseline) -> list:
    """Legend handles for every key (whether or not the panel drew it) and the baseline's."""
    from matplotlib.lines import Line2D

    return [baseline] + [Line2D([], [], label=_label(key), **styles[key]) for key in keys]


def _versus_alpha(ax, ok: pd.DataFrame, column: str, ylabel: str, values: dict[str, list[str]]) -> None:
    """Lines against alpha for one context's ok runs: mean with unpaired 95 % t bars per alpha, the
    baseline as a band (its mean and 95 % CI)."""
    base = ok[axes.baseline_rows(ok)][column].dropna().astype(float)
    if len(base):
        mean, half = _mean_ci(base)
        ax.axhspan(mean - half, mean + half, color="grey", alpha=0.25, label="baseline (alpha=0), 95 % CI")
        ax.axhline(mean, color="grey", linewidth=1)
    regularized = ok[~axes.baseline_rows(ok)]
    columns = _line_axes(regularized)
    lines = [(key if isinstance(key, tuple) else (key,), group)
             for key, group in regularized.groupby(columns, sort=True, dropna=False)]
    styles = _styles([key for key, _ in lines], columns, values)
    for index, (key, group) in enumerate(lines):
        points = [(alpha, *_mean_ci(g[column].dropna().astype(float)))
                  for alpha, g in group.groupby("alpha") if g[column].notna().any()]
        if not points:
            continue
        alphas, means, halves = zip(*sorted(points))
        ax.errorbar(np.asarray(alphas) * _dodge(index, len(lines)), means, yerr=halves, capsize=3,
                    label=_label(key), **styles[key])
    ax.set_xscale("log")
    ax.set_xlabel("alpha (penalty coefficient, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _legend(ax, ", ".join(columns))


def _context_figure(ok: pd.DataFrame, draw, title: str):
    """A figure with one panel per context (draw(ax, context runs))."""
    from matplotlib.figure import Figure

    contexts = sorted(ok["context"].unique(), key=str) or [""]
    fig = Figure(figsize=(10, 4.5 * len(contexts)))
    panels = fig.subplots(len(contexts), 1, squeeze=False)[:, 0]
    for ax, context in zip(panels, contexts):
        draw(ax, ok[ok["context"] == context])
        ax.set_title(f"{title}" + (f"\n[{context}]" if len(contexts) > 1 else ""), fontsize=9)
    return fig


def figures(runs: pd.DataFrame, histories: pd.DataFrame, values: dict[str, list[str]] | None = None) -> dict:
    """The figures drawn from the runs alone, by file name (only ok runs; styles from `values`,
    palette(runs) by default). The caller closes them."""
    values = palette(runs) if values is None else values
    ok = runs[runs["status"] == "ok"]
    contexts = sorted(ok["context"].unique(), key=str) or [""]
    return {
        ACCURACY_PLOT: _context_figure(ok, lambda ax, o: _versus_alpha(
            ax, o, "test_acc", "test accuracy (%), mean over seeds, 95 % CI", values),
            "Test accuracy against alpha (descriptive, unpaired; the verdict is paired: forest_accuracy.png)"),
        VALIDATION_PLOT: _validation_figure(ok, histories, contexts, values),
    }


def summary_figures(runs: pd.DataFrame, analysis) -> dict:
    """The figures drawn from the statistics (an l2reg.analysis.Analysis of `runs`), by file name."""
    from l2reg.forest import churn_figure, features_figure, forest_figure, gap_figure
    from l2reg.heatmap import heatmap_figure

    summary, m = analysis.summary, analysis.min_effect_pp
    return {HEATMAP_PLOT: heatmap_figure(summary, analysis.verdicts), FOREST_PLOT: forest_figure(summary, runs, m),
            GAP_PLOT: gap_figure(summary, runs, m), CHURN_PLOT: churn_figure(summary, runs, m),
            FEATURES_PLOT: features_figure(summary)}


def _validation_figure(ok: pd.DataFrame, histories: pd.DataFrame, contexts: list, values: dict[str, list[str]]):
    """Mean validation accuracy per epoch: a panel per alpha (a row per context), a line per
    combination of the other varying axes, the baseline in black in every panel."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    hist = histories[histories["run_id"].isin(set(ok["run_id"]))]  # with the setting columns
    alphas = sorted(a for a in ok["alpha"].unique() if a != 0) or [0.0]
    named = _line_axes(ok[~axes.baseline_rows(ok)])
    fig = Figure(figsize=(3.6 * len(alphas) + 2.5, 3.6 * len(contexts)))
    panels = fig.subplots(len(contexts), len(alphas), squeeze=False, sharey="row")
    for row, context in enumerate(contexts):
        part = hist[hist["context"] == context]
        base = part[axes.baseline_rows(part)].groupby("epoch")["val_acc"].mean()
        regularized = part[~axes.baseline_rows(part)]
        keys = _keys(part, named)
        styles = _styles(keys, named, values)
        for col, alpha in enumerate(alphas):
            ax = panels[row, col]
            if len(base):
                ax.plot(base.index, base.values, color="black", linewidth=2, label="baseline (alpha=0)")
            here = regularized[regularized["alpha"] == alpha]
            for key, group in here.groupby(named, sort=True, dropna=False):
                key = key if isinstance(key, tuple) else (key,)
                curve = group.groupby("epoch")["val_acc"].mean()
                ax.plot(curve.index, curve.values, label=_label(key), **styles[key])
            title = f"alpha={alpha:g}" if alpha != 0 else "baseline only"
            ax.set_title(title + (f" [{context}]" if len(contexts) > 1 else ""), fontsize=8)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("validation accuracy (%),\nmean over seeds")
        # one legend per row naming every line of the row, whichever panels drew it
        baseline = Line2D([], [], color="black", linewidth=2, label="baseline (alpha=0)")
        _legend(panels[row, -1], ", ".join(named), _proxies(keys, styles, baseline))
    fig.suptitle("Validation accuracy per epoch", fontsize=9)
    return fig


def write_plots(runs: pd.DataFrame, histories: pd.DataFrame, folder: Path, analysis) -> list[Path]:
    """Write every file of PLOTS into `folder` (each atomically), in PLOTS order, remove the RETIRED
    ones an older l2sweep wrote there, and return the written paths. `analysis`: the
    l2reg.analysis.Analysis of `runs` (summary, verdicts, margin)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = {**summary_figures(runs, analysis), **figures(runs, histories, palette(runs))}
    written = []
    for name in PLOTS:
        fig = made[name]
        # matplotlib.figure.Figure needs no pyplot, so no GUI backend is ever touched (headless-safe)
        buffer = io.BytesIO()
        if fig.get_layout_engine() is None:  # the statistics' figures lay themselves out (constrained)
            fig.tight_layout()
        # bbox "tight": the legends and the right-hand texts sit outside the panels
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        write_bytes_atomic(folder / name, buffer.getvalue())
        written.append(folder / name)
    for name in RETIRED:
        (folder / name).unlink(missing_ok=True)
    return written
