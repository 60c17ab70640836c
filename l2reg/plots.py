"""Plots of a sweep (matplotlib, headless Agg, PNG): written by report.py from the runs alone.

- paired_gain_vs_alpha.png: the primary analysis: each setting's paired gain over the baseline
  (mean over seeds of setting minus baseline, same seed) with its 95 % paired t-interval, a line
  per combination of the other setting axes, 0 and +-m marked; one panel per context;
- test_acc_vs_alpha.png: mean test accuracy against alpha (log axis) with 95 % CI bars (t), a line
  per combination of the other setting axes (target, norm, schedule, form, scope: those that
  vary), the baseline as a band (its mean and 95 % CI); one panel per context;
  in every plot the first varying axis (usually target) sets a line's colour, the second (usually
  schedule) its line style and a third its marker, by the value's rank among all the runs' values
  (palette()), so a value keeps its style in every file; the lines of one alpha are moved a little
  aside (DODGE_DECADES) so that their CIs stay readable;
- gap_vs_alpha.png: the train-minus-test accuracy gap (overfitting), drawn the same way;
- spread_vs_alpha.png: the seed-to-seed sd of test accuracy (stability), baseline as a line;
- features_vs_alpha.png: a panel per feature metric (probe accuracies, noisy-input accuracies);
- val_acc_per_epoch.png: mean validation accuracy per epoch, a panel per alpha (rows: contexts),
  a line per combination of the other axes and the baseline in black in each panel.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg import axes
from l2reg.claims import features as features_claim
from l2reg.files import write_bytes_atomic

PAIRED_PLOT = "paired_gain_vs_alpha.png"
PLOTS = ("test_acc_vs_alpha.png", "gap_vs_alpha.png", "spread_vs_alpha.png", "features_vs_alpha.png",
         "val_acc_per_epoch.png")
FEATURE_PANELS = features_claim.METRICS
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


def _versus_alpha(ax, ok: pd.DataFrame, column: str, ylabel: str, values: dict[str, list[str]],
                  statistic: str = "mean", legend: bool = True) -> None:
    """Lines against alpha for one context's ok runs: mean with 95 % CI bars (statistic="mean"),
    or the seed-to-seed sd (statistic="sd"); the baseline as a band or a line."""
    base = ok[axes.baseline_rows(ok)][column].dropna().astype(float)
    if len(base):
        if statistic == "mean":
            mean, half = _mean_ci(base)
            ax.axhspan(mean - half, mean + half, color="grey", alpha=0.25, label="baseline (alpha=0), 95 % CI")
            ax.axhline(mean, color="grey", linewidth=1)
        elif len(base) > 1:
            ax.axhline(base.std(ddof=1), color="grey", linewidth=2, label="baseline (alpha=0)")
    regularized = ok[~axes.baseline_rows(ok)]
    columns = _line_axes(regularized)
    lines = [(key if isinstance(key, tuple) else (key,), group)
             for key, group in regularized.groupby(columns, sort=True, dropna=False)]
    styles = _styles([key for key, _ in lines], columns, values)
    for index, (key, group) in enumerate(lines):
        points = []
        for alpha, g in group.groupby("alpha"):
            values = g[column].dropna().astype(float)
            if statistic == "mean" and len(values):
                points.append((alpha, *_mean_ci(values)))
            elif statistic == "sd" and len(values) > 1:
                points.append((alpha, values.std(ddof=1), 0.0))
        if not points:
            continue
        alphas, values, halves = zip(*sorted(points))
        ax.errorbar(np.asarray(alphas) * _dodge(index, len(lines)), values,
                    yerr=halves if statistic == "mean" else None, capsize=3, label=_label(key), **styles[key])
    ax.set_xscale("log")
    ax.set_xlabel("alpha (penalty coefficient, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
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
    """The figures by file name (only ok runs are drawn; styles from `values`, palette(runs) by
    default). The caller closes them."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    values = palette(runs) if values is None else values
    ok = runs[runs["status"] == "ok"].copy()
    ok["gap_pp"] = ok["train_acc"].astype(float) - ok["test_acc"].astype(float)
    made = {
        PLOTS[0]: _context_figure(ok, lambda ax, o: _versus_alpha(
            ax, o, "test_acc", "test accuracy (%), mean over seeds, 95 % CI", values), "Test accuracy against alpha"),
        PLOTS[1]: _context_figure(ok, lambda ax, o: _versus_alpha(
            ax, o, "gap_pp", "train minus test accuracy (pp), mean, 95 % CI", values),
            "Generalization gap against alpha"),
        PLOTS[2]: _context_figure(ok, lambda ax, o: _versus_alpha(
            ax, o, "test_acc", "sd of test accuracy over seeds (pp)", values, statistic="sd"),
            "Seed-to-seed spread of test accuracy against alpha"),
    }
    contexts = sorted(ok["context"].unique(), key=str) or [""]
    fig = Figure(figsize=(4 * len(FEATURE_PANELS) + 2.5, 3.6 * len(contexts)))
    panels = fig.subplots(len(contexts), len(FEATURE_PANELS), squeeze=False)
    for row, context in enumerate(contexts):
        part = ok[ok["context"] == context]
        for col, metric in enumerate(FEATURE_PANELS):
            ax = panels[row, col]
            if part[metric].notna().any():
                _versus_alpha(ax, part, metric, f"{metric} (%), mean, 95 % CI", values, legend=False)
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(metric + (f" [{context}]" if len(contexts) > 1 else ""), fontsize=8)
        if part[list(FEATURE_PANELS)].notna().any().any():
            # one legend per context row, beside its last panel, naming every line of the row
            columns = _line_axes(part[~axes.baseline_rows(part)])
            keys = _keys(part, columns)
            band = Patch(color="grey", alpha=0.25, label="baseline (alpha=0), 95 % CI")
            _legend(panels[row, -1], ", ".join(columns), _proxies(keys, _styles(keys, columns, values), band))
    made[PLOTS[3]] = fig
    made[PLOTS[4]] = _validation_figure(ok, histories, contexts, values)
    return made


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


def paired_figure(summary: pd.DataFrame, min_effect_pp: float, values: dict[str, list[str]] | None = None):
    """The paired gains of summary.csv (delta_pp, paired_ci_low_pp, paired_ci_high_pp) against alpha;
    styles from `values` (palette(summary) by default; write_plots passes the runs' palette)."""
    from matplotlib.figure import Figure

    values = palette(summary) if values is None else values
    tested = summary[(~axes.baseline_rows(summary)) & summary["delta_pp"].notna()]
    contexts = sorted(summary["context"].unique(), key=str) or [""]
    fig = Figure(figsize=(10, 4.5 * len(contexts)))
    panels = fig.subplots(len(contexts), 1, squeeze=False)[:, 0]
    for ax, context in zip(panels, contexts):
        part = tested[tested["context"] == context]
        ax.axhline(0.0, color="grey", linewidth=1)
        ax.axhspan(-min_effect_pp, min_effect_pp, color="grey", alpha=0.15, label=f"+-m = {min_effect_pp:g} pp")
        if len(part):
            # the lines are named by the axes that vary among all the context's settings (as in the
            # other plots), tested or not
            context_rows = summary[(summary["context"] == context) & (~axes.baseline_rows(summary))]
            columns = _line_axes(context_rows)
            lines = [(key if isinstance(key, tuple) else (key,), group)
                     for key, group in part.groupby(columns, sort=True, dropna=False)]
            styles = _styles([key for key, _ in lines], columns, values)
            for i, (key, group) in enumerate(lines):
                group = group.sort_values("alpha")
                low = (group["delta_pp"] - group["paired_ci_low_pp"]).clip(lower=0).fillna(0)
                high = (group["paired_ci_high_pp"] - group["delta_pp"]).clip(lower=0).fillna(0)
                # each line a little to the side (DODGE_DECADES apart on the log axis) so that
                # overlapping CIs of one alpha stay readable
                ax.errorbar(group["alpha"] * _dodge(i, len(lines)), group["delta_pp"], yerr=[low, high], capsize=3,
                            label=_label(key), **styles[key])
            ax.set_xscale("log")
            _legend(ax, ", ".join(columns))
        ax.set_xlabel("alpha (penalty coefficient, log scale)")
        ax.set_ylabel("test accuracy gain over the baseline (pp),\npaired by seed, 95 % CI")
        ax.grid(alpha=0.3)
        ax.set_title("Paired gain against alpha (the primary analysis)" + (f"\n[{context}]" if len(contexts) > 1
                                                                            else ""), fontsize=9)
    return fig


def write_plots(runs: pd.DataFrame, histories: pd.DataFrame, folder: Path, summary: pd.DataFrame | None = None,
                min_effect_pp: float = 0.1) -> list[Path]:
    """Write the PNGs into `folder` (each atomically); return their paths. With `summary` (the
    statistics' table), the paired-gain plot comes first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    values = palette(runs)  # one style per axis value in every file
    made = figures(runs, histories, values)
    if summary is not None:
        made = {PAIRED_PLOT: paired_figure(summary, min_effect_pp, values), **made}
    for name, fig in made.items():
        # matplotlib.figure.Figure needs no pyplot, so no GUI backend is ever touched (headless-safe)
        buffer = io.BytesIO()
        fig.tight_layout()
        # bbox "tight": the legends sit outside the panels, on their right
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        write_bytes_atomic(folder / name, buffer.getvalue())
        written.append(folder / name)
    return written
