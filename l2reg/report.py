"""Reports: saved runs -> runs.csv, summary.csv, verdict.json, report.md, plots/. Trains nothing.

Reads only `runs/*.json` (never imports the training code), so `l2sweep report DIR` can rebuild
every file of a results folder from the runs alone. A file in runs/ that is not a run record
(foreign, damaged, truncated, or named other than its run id) is left out with a warning that
names it, counted in report.md and verdict.json: never a crash and never silent.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from l2reg import axes, axis_reading, claims, evaluate, files
from l2reg.analysis import Analysis, analyse

RUN_INFO_COLUMNS = ["epochs", "seconds", "train_seconds", "eval_seconds", "pack_size", "peak_memory_mib", "device",
                    "compiled", "threads", "git_commit", "code_fingerprint", "error"]


def run_columns() -> list[str]:
    """runs.csv's columns: identity, setting and context axes, then every registered metric
    (l2reg.evaluate, in registration order), then how the run was produced."""
    return ["run_id", "context", *axes.SETTING_COLUMNS, *axes.CONTEXT_COLUMNS, "seed", "status",
            *evaluate.metric_columns(), *RUN_INFO_COLUMNS]


REQUIRED_KEYS = ("run_id", "status", "setting", "seed", "context", "config")


class ReportError(RuntimeError):
    """A results folder that cannot be reported on (missing, or with no runs)."""


@dataclass
class Loaded:
    records: list[dict]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, why)


STATUSES = ("ok", "diverged", "failed")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _problem(path: Path, record) -> str | None:
    """Why a parsed JSON is not a run record of this folder, or None."""
    if not isinstance(record, dict):
        return f"not a run record (a JSON {type(record).__name__})"
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return f"not a run record (no {', '.join(missing)})"
    if not isinstance(record["setting"], dict) or not _is_number(record["setting"].get("alpha")):
        return "not a run record (its setting has no numeric alpha)"
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool):
        return f"not a run record (seed {record['seed']!r} is not an integer)"
    if not isinstance(record["config"], dict):
        return "not a run record (its config is not a JSON object)"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r} (a run record says {', '.join(STATUSES)})"
    if record["run_id"] != path.stem:
        return f"its run_id {record['run_id']!r} does not match the file name"
    metrics = record.get("metrics")
    if record["status"] == "ok" and not (isinstance(metrics, dict) and _is_number(metrics.get("test_acc"))):
        return "a partial run record (status ok but no numeric metrics.test_acc)"
    return None


def load_records(results_dir: Path) -> Loaded:
    """All run records of a folder, and the files left out with the reason."""
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        raise ReportError(f"{results_dir} has no runs/ folder: is it a results folder written by `l2sweep run`?")
    loaded = Loaded([])
    for path in files.run_files(runs_dir):
        try:
            record = files.read_json(path)
        except UnicodeDecodeError:
            loaded.skipped.append((path.name, "not UTF-8 text"))
            continue
        except ValueError as error:
            loaded.skipped.append((path.name, f"damaged or truncated JSON ({str(error).splitlines()[0]})"))
            continue
        except OSError as error:
            loaded.skipped.append((path.name, f"unreadable ({error.strerror or error})"))
            continue
        why = _problem(path, record)
        if why:
            loaded.skipped.append((path.name, why))
        else:
            loaded.records.append(record)
    return loaded


def _setting(record: dict) -> dict:
    """The record's setting columns; records written before an axis existed get its off value
    (a baseline: 'none')."""
    setting = dict(record["setting"])
    baseline = axes.baseline_rows(setting)
    for ax in axes.SETTING_AXES:
        if ax.column not in setting:
            setting[ax.column] = axes.BASELINE_LABEL if baseline else ax.off
    return {col: setting[col] for col in axes.SETTING_COLUMNS}


def _context_axes(record: dict) -> dict:
    values = dict(record.get("context_axes") or {})
    return {ax.column: values.get(ax.column, ax.off) for ax in axes.CONTEXT_AXES}


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        rows.append({
            "run_id": record["run_id"], "context": record["context"], **_setting(record), **_context_axes(record),
            "seed": record["seed"], "status": record["status"],
            **{k: metrics.get(k) for k in evaluate.metric_columns()},
            "epochs": (record.get("config") or {}).get("train", {}).get("epochs"),
            **{k: record.get(k) for k in RUN_INFO_COLUMNS if k != "epochs"},
        })
    frame = pd.DataFrame(rows, columns=run_columns())
    return frame.sort_values(["context", *axes.SETTING_COLUMNS, "seed"], kind="stable", ignore_index=True,
                             key=lambda col: col.map(str) if col.name != "alpha" and col.name != "seed" else col)


def histories_frame(records: list[dict]) -> pd.DataFrame:
    """A row per (run, epoch) of the runs' histories, with the setting columns."""
    rows = [{"run_id": r["run_id"], "context": r["context"], **_setting(r), "seed": r["seed"], **h}
            for r in records for h in r.get("history") or []]
    return pd.DataFrame(rows, columns=["run_id", "context", *axes.SETTING_COLUMNS, "seed", "epoch", "train_loss",
                                       "train_acc", "val_loss", "val_objective", "val_acc", "lr"])


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8)


def predictions_of(records: list[dict]) -> tuple[dict, dict]:
    """Per run id: predicted and true test labels (uint8 arrays), for runs that kept them."""
    predictions, labels = {}, {}
    for record in records:
        if record.get("status") == "ok" and record.get("test_predictions") and record.get("test_labels"):
            predictions[record["run_id"]] = _decode(record["test_predictions"])
            labels[record["run_id"]] = _decode(record["test_labels"])
    return predictions, labels


def min_effect_of(records: list[dict], key: str = "min_effect_pp") -> float:
    """A margin the sweep was run with (report.min_effect_pp or report.min_feature_effect_pp;
    the default where the runs predate the key)."""
    from l2reg.config import ReportConfig

    default = getattr(ReportConfig(), key)
    return float(((records[0].get("config") or {}).get("report") or {}).get(key, default))


def code_paths(runs: pd.DataFrame) -> dict:
    """Per context: the devices, code paths (compiled or eager; single run or vmapped pack), git
    commits, code fingerprints (l2reg.fingerprint) and CPU thread counts of its runs. `compiled` is
    None for runs recorded before l2sweep kept it; a fingerprint or a thread count that a run does
    not record reads "not recorded". One path = one recorded compile decision, one device, one pack
    kind. One code = one fingerprint and at most one recorded thread count: runs of two code
    versions or thread counts pooled in one comparison make the context **mixed** (l2sweep run
    refuses to make one without --mixed-code). Commits are listed, not required to be one: runs of
    commits whose number-deciding code is the same share a fingerprint."""
    def recorded(values, shown=str) -> list[str]:
        return sorted({"not recorded" if v is None or v != v else shown(v) for v in values})

    out = {}
    for context, group in runs.groupby("context", sort=True):
        compiled = recorded(group["compiled"], lambda c: "compiled" if c else "eager")
        packs = sorted({"single run" if (p != p or p is None or p <= 1) else "vmapped pack"
                        for p in group["pack_size"]})
        devices = sorted({str(d) for d in group["device"]})
        commits = sorted({str(c).replace("+dirty", " (uncommitted changes)") for c in group["git_commit"].dropna()})
        prints = recorded(group["code_fingerprint"]) if "code_fingerprint" in group else ["not recorded"]
        cpu = group[group["device"].astype(str) == "cpu"]
        threads = recorded(cpu["threads"], lambda t: str(int(t))) if "threads" in cpu and len(cpu) else []
        known_threads = [t for t in threads if t != "not recorded"]
        out[context] = {"devices": devices, "code_paths": [f"{c}, {p}" for c in compiled for p in packs],
                        "commits": commits, "fingerprints": prints, "threads": threads,
                        "one_path": (len(compiled) == 1 and compiled[0] != "not recorded" and len(devices) == 1
                                     and len(packs) == 1),
                        "mixed_code": len(prints) > 1 or len(known_threads) > 1}
    return out


@dataclass
class Report:
    runs: pd.DataFrame
    analysis: Analysis
    skipped: list[tuple[str, str]]
    paths: dict


def write_reports(results_dir: Path, min_effect_pp: float | None = None) -> Report:
    """Rebuild runs.csv, summary.csv, verdict.json, plots/ and report.md from runs/*.json."""
    from l2reg.plots import write_plots

    results_dir = Path(results_dir)
    loaded = load_records(results_dir)
    records = loaded.records
    if not records:
        skipped = ""
        if loaded.skipped:
            named = "; ".join(f"{name}: {why}" for name, why in loaded.skipped[:5])
            more = f"; and {len(loaded.skipped) - 5} more" if len(loaded.skipped) > 5 else ""
            skipped = f": its {len(loaded.skipped)} file(s) are not run records ({named}{more})"
        raise ReportError(f"no finished runs in {results_dir / 'runs'}{skipped}")
    min_effect = min_effect_pp if min_effect_pp is not None else min_effect_of(records)
    runs = runs_frame(records)
    predictions, labels = predictions_of(records)
    analysis = analyse(runs, axes.SETTING_COLUMNS, min_effect, predictions, labels,
                             min_feature_effect_pp=min_effect_of(records, "min_feature_effect_pp"))
    paths = code_paths(runs)
    plots = write_plots(runs, histories_frame(records), results_dir / "plots", analysis)
    # interim: a planned run (sweep.json) without a final record (ok or diverged; a failed run is
    # retried by the next invocation), so the verdicts may still change
    planned_ids = set(files.planned_runs(results_dir)) | set(runs["run_id"])
    final = int(runs["status"].isin(["ok", "diverged"]).sum())
    verdict = {**analysis.to_json(), "runs": int(len(runs)), "runs_ok": int((runs["status"] == "ok").sum()),
               "runs_planned": len(planned_ids), "runs_final": final, "interim": bool(final < len(planned_ids)),
               "code_paths": paths, "mixed_code": sorted(c for c, path in paths.items() if path["mixed_code"]),
               "skipped_files": [{"file": name, "why": why} for name, why in loaded.skipped]}
    files.write_text_atomic(results_dir / "runs.csv", runs.to_csv(index=False))
    files.write_text_atomic(results_dir / "summary.csv", analysis.summary.to_csv(index=False))
    files.write_json_atomic(results_dir / "verdict.json", verdict)
    files.write_text_atomic(results_dir / "report.md", render_markdown(results_dir, records, runs, analysis, paths,
                                                                        plots, loaded.skipped, len(planned_ids), final))
    from l2reg.html_report import write_html_report  # plotly is imported only when a report is written

    write_html_report(runs, histories_frame(records), analysis, results_dir)  # report.html beside report.md
    return Report(runs, analysis, loaded.skipped, paths)


# ------------------------------------------------------------------------------------------------
# report.md

def _study_note(results_dir: Path) -> list[str]:
    """In a confirmation study's folder (it holds the study's plan from before its first run): the
    lines that send the reader to the study's own report, whose answer is the confirmatory one."""
    from l2reg.confirm.plan import PLAN_FILE
    from l2reg.confirm.report import REPORT_FILE

    if not (results_dir / PLAN_FILE).is_file():
        return []
    return [f"**A confirmation study** ({REPORT_FILE}, {PLAN_FILE}): its confirmatory answer is {REPORT_FILE}, "
            "from the plan's group-sequential tests. This report applies a screen's fixed-sample rules to the same "
            "runs (the arms stopped at different looks, so their seeds differ): descriptive here.", ""]


def _article_claims() -> str:
    """The registered claims, numbered, in the article's words; a claim that re-reads an earlier
    one's words (churn: stability read another way) names that one instead of repeating it."""
    parts, numbered = [], {}
    for index, claim in enumerate(claims.all_claims(), 1):
        earlier = next(((words, n) for words, n in numbered.items() if claim.words.startswith(words + ",")), None)
        if earlier is not None:
            words, number = earlier
            parts.append(f"({index}) claim ({number}){claim.words[len(words):]}")
        else:
            parts.append(f"({index}) {claim.words}")
            numbered[claim.words] = index
    return "; ".join(parts)


def _value(value, spec: str = "") -> str:
    """A config value formatted with `spec`, or "?" when the record lacks it (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return "?"
    try:
        return format(int(value) if spec == "d" else value, spec)
    except (TypeError, ValueError):
        return str(value)


def regime_text(run_row) -> str:
    """A context's training regime in words, from one of its rows of runs.csv."""
    return (f"{_value(run_row['epochs'], 'd')} epoch(s), dropout {_value(run_row['dropout'], 'g')}, "
            + (f"{_value(run_row['train_size'], 'd')} training images drawn per seed"
               if _value(run_row["train_size"]) != "?" else "all training images"))




def _context_section(context: str, runs: pd.DataFrame, analysis: Analysis, paths: dict,
                     several: bool) -> list[str]:
    """One context's part of report.md: its regime and code path, the claim table, then each claim's
    section (the first claim's, the by-axis reading, the others')."""
    verdicts = analysis.verdicts[context]
    summary = analysis.summary[analysis.summary["context"] == context]
    rows = summary[~axes.baseline_rows(summary)]
    ctx_runs = runs[runs["context"] == context]
    varying = axes.varying(rows, fallback=["alpha", "target"])
    seeds = sorted({int(s) for s in ctx_runs["seed"]})
    constant = [f"{c}={rows[c].iloc[0]}" for c in axes.SETTING_COLUMNS
                if c not in varying and c != "alpha" and len(rows) and rows[c].nunique() == 1]
    path = paths[context]
    lines = [f"## Context `{context}`", ""] if several else []
    lines += [
        f"Regime: {regime_text(ctx_runs.iloc[0])}. Runs: {len(ctx_runs)} ({int((ctx_runs['status'] == 'ok').sum())} "
        f"ok), {len(rows)} regularized setting(s) and the baseline; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)})"
        + (f"; every setting has {', '.join(constant)}" if constant else "") + ".",
        *([f"**Mixed code: this comparison pools runs of {len(path['fingerprints'])} code fingerprint(s) "
           f"({', '.join(path['fingerprints'])}) and CPU thread count(s) {', '.join(path['threads']) or '-'}**: a "
           "difference between arms may come from the code, not the regularizer.", ""] if path["mixed_code"] else []),
        f"Code path: {', '.join(path['code_paths'])} on {', '.join(path['devices'])}"
        + ("" if path["one_path"] else " - **the arms of this comparison did not all take one recorded code path "
           "and device**: a difference between arms may come from the code, not the regularizer")
        + f"; code fingerprint(s) {', '.join(path['fingerprints'])}"
        + (f"; CPU threads per run {', '.join(path['threads'])}" if path["threads"] else "")
        + f"; commit(s) {', '.join(path['commits']) or 'not recorded'}.",
        "",
        "| claim | verdict | main evidence |",
        "| --- | --- | --- |",
    ]
    for claim in claims.all_claims():
        reasons = verdicts[claim.name]["reasons"]
        lines.append(f"| {claim.name}: {claim.words} | **{verdicts[claim.name]['verdict']}** | "
                     f"{(reasons[0] if reasons else '').replace('|', '/')} |")
    lines.append("")
    heading = "###" if several else "##"
    first, *others = claims.all_claims()

    def view(claim) -> claims.SectionView:
        return claims.SectionView(context=context, rows=rows, baseline=summary[axes.baseline_rows(summary)],
                                  verdict=verdicts[claim.name], extras=analysis.extras[context], heading=heading,
                                  varying=varying, min_effect_pp=analysis.min_effect_pp)

    lines += first.section(view(first))
    lines += axis_reading.section(rows, varying, heading)
    for claim in others:
        lines += claim.section(view(claim))
    return lines


def render_markdown(results_dir: Path, records: list[dict], runs: pd.DataFrame, analysis: Analysis,
                    paths: dict, plots: list[Path], skipped: list[tuple[str, str]], planned: int = 0,
                    final: int = 0) -> str:
    from l2reg.plots import CAPTIONS as plot_captions
    ok_records = [r for r in records if r["status"] == "ok"] or records
    cfg = ok_records[0]["config"]
    train, data = cfg.get("train") or {}, cfg.get("data") or {}  # a record may predate a key: "?" then
    contexts = sorted(analysis.verdicts, key=str)
    n_test = sorted({int(v) for v in runs["n_test"].dropna()}) or [10000]
    m = analysis.min_effect_pp
    devices = sorted({str(d) for d in runs["device"]})
    commits = sorted({str(c) for c in runs["git_commit"].dropna()})
    not_ok = runs[runs["status"] != "ok"]
    lines = [
        f"# l2sweep report: {results_dir.name}",
        "",
        *([f"**Interim report: {final} of the {planned} planned runs have finished (ok or diverged).** The "
           "verdicts below are those of the runs so far, by the declared rules; they may change as the remaining "
           "runs come in (failed runs are retried), and the sweep is not stopped on a verdict: it runs to its "
           "planned seeds.", ""] if final < planned else []),
        "**The article's claims** (../shared/article.md): adding L2 regularization to the convolution weights and "
        "activations of a small MNIST CNN " + _article_claims() + ".",
        "",
        f"Smallest effect of interest m = {m:g} pp of test accuracy ({m / 100 * n_test[0]:g} of {n_test[0]} test "
        "images); every test and decision rule is declared in docs/statistics.md (\"The rules\") and "
        "verdict.json holds the same verdicts for scripts. Each context (training regime) is its own family: its own "
        "baseline, Holm correction and verdicts.",
        "",
        *_study_note(results_dir),
    ]
    for context in contexts:
        lines += _context_section(context, runs, analysis, paths, len(contexts) > 1)
    lines += [
        "## Setup",
        "",
        f"- Model: Conv32-Pool-Conv64-Pool-Dense64-Dropout-Dense10, Glorot-uniform kernels; Adam "
        f"(lr {_value(train.get('lr'), 'g')}, eps {_value(train.get('adam_eps'), 'g')}), batch "
        f"{_value(train.get('batch_size'), 'd')}, ReduceLROnPlateau(factor {_value(train.get('plateau_factor'), 'g')}, "
        f"patience {_value(train.get('plateau_patience'), 'd')}) "
        "on the validation objective.",
        f"- Data: MNIST via torchvision; validation = the last {_value(data.get('val_fraction'), '.0%')} of the "
        "training set; "
        f"test set: {', '.join(map(str, n_test))} images.",
        f"- Runs: {len(runs)} ({len(runs) - len(not_ok)} ok, {len(not_ok)} not ok) in {len(contexts)} context(s).",
        f"- Hardware: {', '.join(devices)}; total training time "
        f"{sum(r.get('seconds') or 0 for r in records) / 60:.1f} min (sum of per-run wall times; runs of one pack "
        "share theirs).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in (ok_records[0].get('versions') or {}).items())}; "
        f"commit(s) {', '.join(commits) or 'unknown'}.",
        "",
        "## Plots",
        "",
        *[line for p in plots for line in (f"![{p.stem}](plots/{p.name})", "", plot_captions.get(p.name, ""), "")],
        "## Limits of this evidence",
        "",
        "- One architecture, one optimizer (Adam, where an L2 term in the loss is not weight decay; `form=decoupled` "
        "is the weight-decay control), a few epochs: the verdicts say nothing about longer training, SGD or other "
        "models.",
        "- The alpha grid is coarse (decades); a narrow sweet spot between grid points would be missed.",
        "- Test accuracy on MNIST is near its ceiling; a gain that matters on harder data may be invisible here.",
        "",
    ]
    if len(not_ok) or skipped:
        lines += ["## Runs and files left out of the statistics", ""]
        lines += [f"- `{row.run_id}`: {row.status}" + (f" ({row.error})" if isinstance(row.error, str) else "")
                  for row in not_ok.itertuples()]
        if skipped:
            lines.append(f"- {len(skipped)} file(s) in runs/ are not run records and were skipped:")
            lines += [f"  - `{name}`: {why}" for name, why in skipped]
        lines.append("")
    return "\n".join(lines)
