"""Reports: saved runs -> runs.csv, summary.csv, report.md with the verdict, plots/. Trains nothing.

Reads only `runs/*.json` (never imports the training code), so `l2sweep report DIR` can rebuild
every file of a results folder from the runs alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from l2reg import files, stats

RUN_COLUMNS = ["run_id", "context", "alpha", "target", "norm", "schedule", "seed", "status", "test_acc",
               "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "penalty", "weight_sq_norm",
               "activation_sq_norm", "n_test", "epochs", "seconds", "pack_size", "peak_memory_mib", "device",
               "error"]


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
                                                                         "activation_sq_norm", "n_test")},
            "epochs": record["config"]["train"]["epochs"], "seconds": record.get("seconds"),
            "pack_size": record.get("pack_size"), "peak_memory_mib": record.get("peak_memory_mib"),
            "device": record.get("device"), "error": record.get("error"),
        })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values(["context", "alpha", "target", "norm", "schedule", "seed"], kind="stable",
                             ignore_index=True)


def histories_frame(records: list[dict]) -> pd.DataFrame:
    """A row per (run, epoch) of ok runs' histories, with the setting columns."""
    rows = [{"run_id": r["run_id"], "context": r["context"], **r["setting"], "seed": r["seed"], **h}
            for r in records for h in r.get("history") or []]
    return pd.DataFrame(rows, columns=["run_id", "context", "alpha", "target", "norm", "schedule", "seed", "epoch",
                                       "train_loss", "train_acc", "val_loss", "val_objective", "val_acc", "lr"])


def _fmt(value, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def _p(value) -> str:
    return "-" if value is None or value != value else (f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}")


def markdown_table(summary: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "alpha": summary["alpha"].map(lambda a: "0 (baseline)" if a == 0 else f"{a:g}"),
        "target": summary["target"], "norm": summary["norm"], "schedule": summary["schedule"],
        "n": summary["n"], "failed": summary["n_not_ok"],
        "mean acc %": summary["mean_acc"].map(_fmt), "sd": summary["std_acc"].map(_fmt),
        "delta pp": summary["delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "delta images": summary["delta_images"].map(lambda v: _fmt(v, 1, signed=True)),
        "95 % CI pp": [f"[{_fmt(lo, signed=True)}, {_fmt(hi, signed=True)}]" if lo == lo else "-"
                       for lo, hi in zip(summary["ci_low_pp"], summary["ci_high_pp"])],
        "p (Welch)": summary["p_value"].map(_p), "p Holm": summary["p_holm"].map(_p),
        "paired pp": summary["paired_delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "paired p": summary["paired_p"].map(_p), "Hedges g": summary["hedges_g"].map(lambda v: _fmt(v, 2)),
        "call": summary["call"],
    })
    if summary["context"].nunique() > 1:
        shown.insert(0, "context", summary["context"])
    return shown.to_markdown(index=False, disable_numparse=True)  # keep "+0.200" as written


def min_effect_of(records: list[dict]) -> float:
    """The smallest effect of interest the sweep was run with (report.min_effect_pp)."""
    from l2reg.config import ReportConfig

    default = ReportConfig().min_effect_pp
    return float(((records[0].get("config") or {}).get("report") or {}).get("min_effect_pp", default))


def write_reports(results_dir: Path, min_effect_pp: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                   stats.Verdict]:
    """Rebuild runs.csv, summary.csv, plots/ and report.md from runs/*.json; return (runs, summary, verdict)."""
    from l2reg.plots import write_plots

    results_dir = Path(results_dir)
    records, unreadable = load_records(results_dir)
    if not records:
        raise ReportError(f"no finished runs in {results_dir / 'runs'}")
    min_effect = min_effect_pp if min_effect_pp is not None else min_effect_of(records)
    runs = runs_frame(records)
    summary = stats.summarize(runs)
    claim = stats.verdict(summary, runs, min_effect)
    plots = write_plots(runs, histories_frame(records), results_dir / "plots")
    files.write_text_atomic(results_dir / "runs.csv", runs.to_csv(index=False))
    files.write_text_atomic(results_dir / "summary.csv", summary.to_csv(index=False))
    files.write_text_atomic(results_dir / "report.md", render_markdown(results_dir, records, runs, summary, claim,
                                                                        plots, unreadable))
    return runs, summary, claim


def render_markdown(results_dir: Path, records: list[dict], runs: pd.DataFrame, summary: pd.DataFrame,
                    claim: stats.Verdict, plots: list[Path], unreadable: list[str]) -> str:
    ok_records = [r for r in records if r["status"] == "ok"] or records
    cfg = ok_records[0]["config"]
    devices = sorted({str(r.get("device")) for r in records})
    not_ok = runs[runs["status"] != "ok"]
    ok = runs[runs["status"] == "ok"]
    seeds = sorted(set(int(s) for s in runs["seed"]))
    n_test = sorted({int(v) for v in runs.get("n_test", pd.Series(dtype=float)).dropna()}) or [10000]
    tested = summary[summary["target"] != "none"]
    base = summary[summary["target"] == "none"]
    lines = [
        f"# l2sweep report: {results_dir.name}",
        "",
        "**Claim under test** (from the article): adding L2 regularization to the convolution weights and "
        "activations of a small MNIST CNN clearly raises its test accuracy.",
        "",
        f"## Verdict: {claim.verdict}",
        "",
        f"Smallest effect of interest: {claim.min_effect_pp:g} pp of test accuracy "
        f"({claim.min_effect_pp / 100 * n_test[0]:g} of {n_test[0]} test images).",
        "",
        *[f"- {reason}." for reason in claim.reasons],
        "",
        "## Setup",
        "",
        f"- Model: Conv32-Pool-Conv64-Pool-Dense64-Dropout0.5-Dense10, Glorot-uniform kernels; Adam "
        f"(lr {cfg['train']['lr']:g}, eps {cfg['train']['adam_eps']:g}), batch {cfg['train']['batch_size']}, "
        f"{cfg['train']['epochs']} epoch(s), ReduceLROnPlateau(factor {cfg['train']['plateau_factor']:g}, "
        f"patience {cfg['train']['plateau_patience']}) on the validation objective.",
        f"- Data: MNIST via torchvision; validation = last {cfg['data']['val_fraction']:.0%} of the training set"
        + (f"; first {cfg['data']['train_limit']} training images only" if cfg["data"]["train_limit"] else "")
        + f"; test set: {', '.join(map(str, n_test))} images.",
        f"- Runs: {len(runs)} ({len(ok)} ok, {len(not_ok)} not ok), {len(tested)} regularized setting(s) "
        f"and {len(base)} baseline(s); seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}).",
        f"- Hardware: {', '.join(devices)}; total training time {sum(r.get('seconds') or 0 for r in records) / 60:.1f}"
        f" min (sum of per-run wall times; runs of one pack share theirs).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in (ok_records[0].get('versions') or {}).items())}; "
        f"commit {ok_records[0].get('git_commit', 'unknown')}.",
        "",
        "## Test accuracy by setting",
        "",
        "Accuracy in percent over seeds; delta = setting minus baseline (same seeds and training settings) in "
        "percentage points and in test images; 95 % CI and p from Welch's t-test; paired = by seed; "
        "p Holm = Holm-adjusted over all settings of this sweep; call at p Holm < 0.05.",
        "",
        markdown_table(summary),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}](plots/{p.name})" for p in plots],
        "",
        "## Limits of this evidence",
        "",
        f"- {len(seeds)} seed(s) per setting: seed-to-seed spread of test accuracy is about "
        f"{stats.pooled_sd(runs):.3f} pp here, so differences much smaller than that cannot be told apart.",
        "- One architecture, one optimizer (Adam, where an L2 term is not weight decay), "
        f"{cfg['train']['epochs']} epoch(s): the verdict says nothing about longer training, SGD or other models.",
        "- The alpha grid is coarse (decades); a narrow sweet spot between grid points would be missed.",
        "- Test accuracy on MNIST is near its ceiling; a gain that matters on harder data may be invisible here.",
        "",
    ]
    if len(not_ok) or unreadable:
        lines += ["## Runs that did not finish (left out of the statistics)", ""]
        lines += [f"- `{row.run_id}`: {row.status}" + (f" ({row.error})" if isinstance(row.error, str) else "")
                  for row in not_ok.itertuples()]
        lines += [f"- `{name}`: unreadable JSON" for name in unreadable]
        lines.append("")
    return "\n".join(lines)
