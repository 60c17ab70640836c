"""Plots of a sweep (matplotlib, headless Agg, PNG): written by report.py from the runs alone.

- test_acc_vs_alpha.png: mean test accuracy against alpha (log axis) with 95 % CI bars (t), a line
  per target x norm x schedule, the baseline as a band (its mean and 95 % CI);
- val_acc_per_epoch.png: mean validation accuracy per epoch, a line per setting;
- gap_vs_alpha.png: train-minus-test accuracy gap against alpha, as the first plot.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg.files import write_bytes_atomic

PLOTS = ("test_acc_vs_alpha.png", "val_acc_per_epoch.png", "gap_vs_alpha.png")


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t interval (0 for a single value)."""
    values = values.dropna().astype(float)
    if len(values) < 2:
        return (float(values.mean()) if len(values) else float("nan")), 0.0
    half = sps.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def _series_label(key: tuple, contexts: int) -> str:
    context, target, norm, schedule = key
    label = f"{target}, {norm}, {schedule}"
    return f"{label} [{context}]" if contexts > 1 else label


def _versus_alpha(ax, ok: pd.DataFrame, column: str, ylabel: str) -> None:
    contexts = ok["context"].nunique()
    base = ok[ok["target"] == "none"]
    for context, group in base.groupby("context"):
        mean, half = _mean_ci(group[column])
        ax.axhspan(mean - half, mean + half, color="grey", alpha=0.25,
                   label="baseline (alpha=0), 95 % CI" + (f" [{context}]" if contexts > 1 else ""))
        ax.axhline(mean, color="grey", linewidth=1)
    regularized = ok[ok["target"] != "none"]
    for key, group in regularized.groupby(["context", "target", "norm", "schedule"]):
        points = [(alpha, *_mean_ci(g[column])) for alpha, g in group.groupby("alpha")]
        alphas, means, halves = zip(*sorted(points))
        ax.errorbar(alphas, means, yerr=halves, marker="o", capsize=3, label=_series_label(key, contexts))
    ax.set_xscale("log")
    ax.set_xlabel("alpha (penalty coefficient, log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def figures(runs: pd.DataFrame, histories: pd.DataFrame) -> dict:
    """The three figures by file name (only ok runs are drawn). The caller closes them."""
    from matplotlib.figure import Figure

    ok = runs[runs["status"] == "ok"].copy()
    ok["gap_pp"] = ok["train_acc"].astype(float) - ok["test_acc"].astype(float)
    made = {}

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    _versus_alpha(ax, ok, "test_acc", "test accuracy (%), mean over seeds, 95 % CI")
    ax.set_title("Test accuracy against alpha")
    made[PLOTS[0]] = fig

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    ok_ids = set(ok["run_id"])
    hist = histories[histories["run_id"].isin(ok_ids)]
    contexts = ok["context"].nunique()
    for key, group in hist.groupby(["context", "alpha", "target", "norm", "schedule"]):
        curve = group.groupby("epoch")["val_acc"].mean()
        label = "baseline" if key[2] == "none" else f"alpha={key[1]:g}, {key[2]}, {key[3]}, {key[4]}"
        if contexts > 1:
            label += f" [{key[0]}]"
        ax.plot(curve.index, curve.values, marker=".", label=label,
                **({"color": "black", "linewidth": 2} if key[2] == "none" else {}))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%), mean over seeds")
    ax.set_title("Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    made[PLOTS[1]] = fig

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    _versus_alpha(ax, ok, "gap_pp", "train minus test accuracy (pp), mean over seeds, 95 % CI")
    ax.set_title("Generalization gap against alpha")
    made[PLOTS[2]] = fig
    return made


def write_plots(runs: pd.DataFrame, histories: pd.DataFrame, folder: Path) -> list[Path]:
    """Write the three PNGs into `folder` (each atomically); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures(runs, histories).items():
        # matplotlib.figure.Figure needs no pyplot, so no GUI backend is ever touched (headless-safe)
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=110)
        write_bytes_atomic(folder / name, buffer.getvalue())
        written.append(folder / name)
    return written
