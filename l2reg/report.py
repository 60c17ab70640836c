"""Reports: saved runs -> runs.csv, summary.csv, report.md (and plots). Trains nothing.

Reads only `runs/*.json` (never imports the training code), so `l2sweep report DIR` can rebuild
every file of a results folder from the runs alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from l2reg import files, stats

RUN_COLUMNS = ["run_id", "context", "alpha", "target", "norm", "schedule", "seed", "status", "test_acc",
               "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "penalty", "weight_sq_norm",
               "activation_sq_norm", "epochs", "seconds", "pack_size", "device", "error"]


class ReportError(RuntimeError):
    """A results folder that cannot be reported on (missing, or with no runs)."""


def load_records(results_dir: Path) -> tuple[list[dict], list[str]]:
    """All run records of a folder, and the names of JSON files that could not be read."""
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        raise ReportError(f"{results_dir} has no runs/ folder: is it a results folder written by `l2sweep run`?")
    records, unreadable = [], []
    for path in sorted(runs_dir.glob("*.json")):
        try:
            records.append(files.read_json(path))
        except (OSError, ValueError):
            unreadable.append(path.name)
    return records, unreadable


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        rows.append({
            "run_id": record["run_id"], "context": record["context"], **record["setting"], "seed": record["seed"],
            "status": record["status"], **{k: metrics.get(k) for k in ("test_acc", "test_loss", "val_acc",
                                                                         "val_loss", "train_acc", "train_loss",
                                                                         "penalty", "weight_sq_norm",
                                                                         "activation_sq_norm")},
            "epochs": record["config"]["train"]["epochs"], "seconds": record.get("seconds"),
            "pack_size": record.get("pack_size"), "device": record.get("device"), "error": record.get("error"),
        })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values(["context", "alpha", "target", "norm", "schedule", "seed"], kind="stable",
                             ignore_index=True)


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(summary: pd.DataFrame) -> str:
    shown = summary.copy()
    shown["alpha"] = shown["alpha"].map(lambda a: "0 (baseline)" if a == 0 else f"{a:g}")
    for column in ("mean_acc", "std_acc"):
        shown[column] = shown[column].map(lambda v: _fmt(v, 3))
    shown["delta_pp"] = shown["delta_pp"].map(lambda v: "-" if v != v else f"{v:+.3f}")
    if shown["context"].nunique() == 1:
        shown = shown.drop(columns="context")
    return shown.to_markdown(index=False)


def write_reports(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rebuild runs.csv, summary.csv and report.md from runs/*.json; return (runs, summary)."""
    results_dir = Path(results_dir)
    records, unreadable = load_records(results_dir)
    if not records:
        raise ReportError(f"no finished runs in {results_dir / 'runs'}")
    runs = runs_frame(records)
    summary = stats.summarize(runs)
    files.write_text_atomic(results_dir / "runs.csv", runs.to_csv(index=False))
    files.write_text_atomic(results_dir / "summary.csv", summary.to_csv(index=False))
    files.write_text_atomic(results_dir / "report.md", render_markdown(results_dir, records, runs, summary,
                                                                        unreadable))
    return runs, summary


def render_markdown(results_dir: Path, records: list[dict], runs: pd.DataFrame, summary: pd.DataFrame,
                    unreadable: list[str]) -> str:
    first = records[0]
    cfg = first["config"]
    devices = sorted({str(r.get("device")) for r in records})
    not_ok = runs[runs["status"] != "ok"]
    lines = [
        f"# l2sweep report: {results_dir.name}",
        "",
        "Claim under test: L2 regularization of the convolution weights and activations of a small MNIST "
        "CNN clearly raises its test accuracy.",
        "",
        "## Setup",
        "",
        f"- Model: Conv32-Pool-Conv64-Pool-Dense64-Dropout0.5-Dense10, Adam (lr {cfg['train']['lr']:g}, "
        f"eps {cfg['train']['adam_eps']:g}), batch {cfg['train']['batch_size']}, "
        f"{cfg['train']['epochs']} epoch(s), ReduceLROnPlateau(factor {cfg['train']['plateau_factor']:g}, "
        f"patience {cfg['train']['plateau_patience']}).",
        f"- Data: MNIST, validation = last {cfg['data']['val_fraction']:.0%} of the training set"
        + (f", first {cfg['data']['train_limit']} training images only" if cfg["data"]["train_limit"] else "")
        + (f", first {cfg['data']['test_limit']} test images only" if cfg["data"]["test_limit"] else "") + ".",
        f"- Runs: {len(runs)} ({int((runs['status'] == 'ok').sum())} ok), seeds {sorted(set(runs['seed']))}; "
        f"device(s): {', '.join(devices)}; versions: {json.dumps(first.get('versions', {}))}; "
        f"commit {first.get('git_commit', 'unknown')}.",
        f"- Total training time: {sum(r.get('seconds') or 0 for r in records) / 60:.1f} min (sum over runs).",
        "",
        "## Test accuracy by setting (percent; delta in percentage points vs the baseline)",
        "",
        markdown_table(summary),
        "",
    ]
    if len(not_ok) or unreadable:
        lines += ["## Runs that did not finish (left out of the statistics)", ""]
        lines += [f"- `{row.run_id}`: {row.status}" + (f" ({row.error})" if row.error else "")
                  for row in not_ok.itertuples()]
        lines += [f"- `{name}`: unreadable JSON" for name in unreadable]
        lines.append("")
    return "\n".join(lines)
