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

from l2reg import axes, files, stats

METRIC_COLUMNS = ["test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "penalty",
                  "weight_sq_norm", "dense_weight_sq_norm", "activation_sq_norm", "probe_acc_100", "probe_acc_1000",
                  "zero_fraction", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3", "n_test", "n_train"]
RUN_COLUMNS = ["run_id", "context", *axes.SETTING_COLUMNS, *axes.CONTEXT_COLUMNS, "seed", "status", *METRIC_COLUMNS,
               "epochs", "seconds", "train_seconds", "eval_seconds", "pack_size", "peak_memory_mib", "device",
               "compiled", "git_commit", "error"]
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
    baseline = setting.get("alpha") == 0
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
            "seed": record["seed"], "status": record["status"], **{k: metrics.get(k) for k in METRIC_COLUMNS},
            "epochs": (record.get("config") or {}).get("train", {}).get("epochs"),
            **{k: record.get(k) for k in ("seconds", "train_seconds", "eval_seconds", "pack_size", "peak_memory_mib",
                                          "device", "compiled", "git_commit", "error")},
        })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
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
    """Per context: the devices, code paths (compiled or eager; single run or vmapped pack) and
    git commits of its runs. `compiled` is None for runs recorded before l2sweep kept it. One path
    = one recorded compile decision, one device, one pack kind. Commits are listed, not required
    to be one: a context may hold runs of commits whose training code is the same (the README's
    claim-check section says which)."""
    out = {}
    for context, group in runs.groupby("context", sort=True):
        compiled = sorted({"not recorded" if c is None or c != c else ("compiled" if c else "eager")
                           for c in group["compiled"]})
        packs = sorted({"single run" if (p != p or p is None or p <= 1) else "vmapped pack"
                        for p in group["pack_size"]})
        devices = sorted({str(d) for d in group["device"]})
        commits = sorted({str(c).replace("+dirty", " (uncommitted changes)") for c in group["git_commit"].dropna()})
        out[context] = {"devices": devices, "code_paths": [f"{c}, {p}" for c in compiled for p in packs],
                        "commits": commits,
                        "one_path": (len(compiled) == 1 and compiled[0] != "not recorded" and len(devices) == 1
                                     and len(packs) == 1)}
    return out


@dataclass
class Report:
    runs: pd.DataFrame
    analysis: stats.Analysis
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
    analysis = stats.analyse(runs, axes.SETTING_COLUMNS, min_effect, predictions, labels,
                             min_feature_effect_pp=min_effect_of(records, "min_feature_effect_pp"))
    paths = code_paths(runs)
    plots = write_plots(runs, histories_frame(records), results_dir / "plots", analysis.summary,
                        analysis.min_effect_pp)
    # interim: a planned run (sweep.json) without a final record (ok or diverged; a failed run is
    # retried by the next invocation), so the verdicts may still change
    planned_ids = set(files.planned_runs(results_dir)) | set(runs["run_id"])
    final = int(runs["status"].isin(["ok", "diverged"]).sum())
    verdict = {**analysis.to_json(), "runs": int(len(runs)), "runs_ok": int((runs["status"] == "ok").sum()),
               "runs_planned": len(planned_ids), "runs_final": final, "interim": bool(final < len(planned_ids)),
               "code_paths": paths, "skipped_files": [{"file": name, "why": why} for name, why in loaded.skipped]}
    files.write_text_atomic(results_dir / "runs.csv", runs.to_csv(index=False))
    files.write_text_atomic(results_dir / "summary.csv", analysis.summary.to_csv(index=False))
    files.write_json_atomic(results_dir / "verdict.json", verdict)
    files.write_text_atomic(results_dir / "report.md", render_markdown(results_dir, records, runs, analysis, paths,
                                                                        plots, loaded.skipped, len(planned_ids), final))
    return Report(runs, analysis, loaded.skipped, paths)


# ------------------------------------------------------------------------------------------------
# report.md

CLAIM_TEXT = {
    "accuracy": "clearly raises test accuracy (明显提高测试准确率)",
    "overfitting": "reduces overfitting (有效地减少过拟合现象)",
    "stability": "makes the model more stable (使得模型更加稳定)",
    "features": "extracts better features (提取更好的特征)",
}


def _fmt(value, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def _p(value) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _value(value, spec: str = "") -> str:
    """A config value formatted with `spec`, or "?" when the record lacks it (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return "?"
    try:
        return format(int(value) if spec == "d" else value, spec)
    except (TypeError, ValueError):
        return str(value)


def _ci(low, high, digits: int = 3) -> str:
    return "-" if low is None or low != low else f"[{_fmt(low, digits, True)}, {_fmt(high, digits, True)}]"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True)  # keep "+0.200" as written


def _setting_name(row, varying: list[str]) -> str:
    if row["alpha"] == 0:
        return "baseline"
    return " ".join(f"{col}={row[col]:g}" if col == "alpha" else f"{col}={row[col]}" for col in varying)


def _varying(rows: pd.DataFrame) -> list[str]:
    tested = rows[rows["alpha"] != 0]
    return [c for c in axes.SETTING_COLUMNS if tested[c].nunique(dropna=False) > 1] or ["alpha", "target"]


def _accuracy_table(rows: pd.DataFrame, varying: list[str]) -> str:
    return _table(pd.DataFrame({
        "setting": [_setting_name(r, varying) for _, r in rows.iterrows()],
        "n": rows["n"].map(lambda v: _fmt(int(v)) if v == v else "-"),
        "failed": rows["n_not_ok"].map(lambda v: _fmt(int(v)) if v == v else "-"),
        "mean acc %": rows["mean_acc"].map(_fmt), "sd": rows["std_acc"].map(_fmt),
        "delta pp (paired)": rows["delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "95 % CI (paired t)": [_ci(lo, hi) for lo, hi in zip(rows["paired_ci_low_pp"], rows["paired_ci_high_pp"])],
        "95 % CI (bootstrap)": [_ci(lo, hi) for lo, hi in zip(rows["boot_ci_low_pp"], rows["boot_ci_high_pp"])],
        "images differing": rows["disagreements"].map(lambda v: _fmt(v, 0)),
        "p > m (Holm)": rows["p_superior_holm"].map(_p), "p within +-m (Holm)": rows["p_equivalent_holm"].map(_p),
        "p < m": rows["p_inferior"].map(_p), "call": rows["call"],
    }))


def _overfitting_table(rows: pd.DataFrame, varying: list[str]) -> str:
    return _table(pd.DataFrame({
        "setting": [_setting_name(r, varying) for _, r in rows.iterrows()],
        "gap change pp": rows["gap_delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "95 % CI": [_ci(lo, hi) for lo, hi in zip(rows["gap_ci_low_pp"], rows["gap_ci_high_pp"])],
        "p gap < -m (Holm)": rows["gap_p_holm"].map(_p),
        "train acc change pp": rows["train_acc_delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "test acc change pp": rows["delta_pp"].map(lambda v: _fmt(v, signed=True)),
        "p test acc held > -m": rows["acc_held_p"].map(_p),
        "p gap shrinks and acc held (Holm)": rows["support_p_holm"].map(_p),
        "test loss change": rows["test_loss_delta"].map(lambda v: _fmt(v, 4, signed=True)),
        "p lower loss (Holm)": rows["test_loss_p_holm"].map(_p),
    }))


def _stability_table(rows: pd.DataFrame, varying: list[str], base_sd: float) -> str:
    return _table(pd.DataFrame({
        "setting": [_setting_name(r, varying) for _, r in rows.iterrows()],
        "n": rows["n"].map(lambda v: _fmt(int(v)) if v == v else "-"),
        "sd of test acc pp": rows["std_acc"].map(_fmt), "baseline sd": _fmt(base_sd),
        "sd ratio": rows["spread_ratio"].map(lambda v: _fmt(v, 2)),
        "Brown-Forsythe p (Holm)": rows["spread_p_holm"].map(_p),
        "power for a 1.5x smaller sd": rows["spread_power_1_5x"].map(lambda v: _fmt(v, 2)),
    }))


def _features_table(rows: pd.DataFrame, varying: list[str]) -> str:
    columns = {"setting": [_setting_name(r, varying) for _, r in rows.iterrows()]}
    for metric in stats.FEATURE_METRICS:
        columns[f"{metric} pp"] = [f"{_fmt(d, 2, True)} ({_p(p)}; {_p(w)})" if d == d else "-"
                                   for d, p, w in zip(rows[f"{metric}_delta_pp"], rows[f"{metric}_p_superior_holm"],
                                                      rows[f"{metric}_p_worse_holm"])]
    columns["zero_fraction"] = [f"{_fmt(d, 4, True)} ({_p(p)})" if d == d else "-"
                                for d, p in zip(rows["zero_fraction_delta"], rows["zero_fraction_p"])]
    return _table(pd.DataFrame(columns))


def by_axis(rows: pd.DataFrame, varying: list[str]) -> str:
    """A row per value of each setting axis that varies, over the settings with that value: the
    mean and best paired accuracy gain and the calls (accuracy), the mean change of the train-test
    gap (overfitting), the median sd ratio (stability) and the mean paired gain of each feature
    metric (features), settings that diverged in some seed left out of the means and the best (their
    calls still counted). A reading aid on what each part of the penalty does: the tests are the
    per-setting rows of each claim's table."""
    table = []
    for col in varying:
        others = [c for c in varying if c != col]
        for value, everything in rows.groupby(col, sort=True):
            group = _without_diverged(everything)  # the calls below still count the diverged ones
            best = group.loc[group["delta_pp"].idxmax()] if group["delta_pp"].notna().any() else None
            calls = ", ".join(f"{count} {call}" for call, count in everything["call"].value_counts().items())
            table.append({
                "axis": col,
                "value": f"{value:g}" if col == "alpha" else str(value),
                "settings": str(len(everything)),
                "accuracy gain pp, mean": _fmt(group["delta_pp"].mean(), 3, True),
                "best (setting)": "-" if best is None else _fmt(best["delta_pp"], 3, True)
                + (f" ({_setting_name(best, others)})" if others else ""),
                "accuracy calls": calls,
                "gap change pp, mean": _fmt(group["gap_delta_pp"].mean(), 3, True),
                "sd ratio, median": _fmt(group["spread_ratio"].median(), 2),
                **{f"{metric} gain pp, mean": _fmt(group[f"{metric}_delta_pp"].mean(), 2, True)
                   if f"{metric}_delta_pp" in group else "-" for metric in stats.FEATURE_METRICS},
            })
    return _table(pd.DataFrame(table))


def _count(mask) -> int:
    return int(np.asarray(mask, dtype=bool).sum())


def _without_diverged(group: pd.DataFrame) -> pd.DataFrame:
    """The settings none of whose runs diverged: a setting that diverged in some seed counts against
    every claim (stats.diverged_mask, as the verdicts), and its surviving runs' numbers would flatter it."""
    return group[~stats.diverged_mask(group)]


def axis_findings(group: pd.DataFrame) -> dict:
    """What the declared per-setting tests decided in a group of settings (one axis value): counts of
    settings, never a new test. Settings that diverged in some seed are counted apart (against every
    claim) and left out of everything else, as the verdicts do. accuracy: the calls; overfitting: gap
    shrunk by more than m with test accuracy held (support_p_holm < 0.05: counts for the claim) or
    shrunk without the accuracy shown held (gap_p_holm < 0.05 only: does not count); stability: sd
    significantly smaller or larger (spread_p_holm < 0.05); features: better on some metric
    (p_superior_holm < 0.05) and not shown worse on any (counts for the claim), and shown worse on
    some metric (p_worse_holm < 0.05)."""
    level = stats.SIGNIFICANCE
    live = _without_diverged(group)
    measured = [m for m in stats.FEATURE_METRICS  # metrics some setting of the group has paired seeds of
                if f"{m}_n" in live and (live[f"{m}_n"] >= 2).any()]
    better_on_one = np.zeros(len(live), dtype=bool)
    worse_on_one = np.zeros(len(live), dtype=bool)
    for metric in measured:  # NaN p (untested) compares False: neither better nor worse
        better_on_one |= (live[f"{metric}_p_superior_holm"] < level).to_numpy()
        worse_on_one |= (live[f"{metric}_p_worse_holm"] < level).to_numpy()
    support = (live["support_p_holm"] < level).to_numpy()
    shrunk = (live["gap_p_holm"] < level).to_numpy()
    return {
        "settings": len(group),
        "diverged": len(group) - len(live),
        "calls": live["call"].value_counts().to_dict(),
        "mean_gain_pp": float(live["delta_pp"].mean()),
        "gap_support": _count(support),
        "gap_shrunk_not_held": _count(shrunk & ~support),
        "sd_smaller": _count((live["spread_ratio"] < 1) & (live["spread_p_holm"] < level)),
        "sd_larger": _count((live["spread_ratio"] > 1) & (live["spread_p_holm"] < level)),
        "features_count": _count(better_on_one & ~worse_on_one) if measured else None,
        "features_worse": _count(worse_on_one) if measured else None,
    }


def _value_name(col: str, value) -> str:  # alpha=0.0001 -> alpha=1e-04 would mislead: :g
    return f"{col}={value:g}" if col == "alpha" else f"{col}={value}"


def _decided(f: dict) -> str:
    """A group's findings (axis_findings) in words: a clause per claim where a test decided something
    (accuracy always, every call the table shows: "0 better" is a finding), counts of settings."""
    calls = f["calls"]
    clauses = [f"{f['diverged']} diverged in some seed (against every claim)"] if f["diverged"] else []
    accuracy = [f"{calls.get(stats.BETTER, 0)} better"] + [
        f"{calls[c]} {c}" for c in (stats.ABOVE_ZERO_ONLY, stats.EQUIVALENT, stats.WORSE, stats.UNDECIDED,
                                    stats.NOT_TESTED) if calls.get(c)]
    clauses.append(f"accuracy {', '.join(accuracy)}")
    gap = ([f"{f['gap_support']} shrunk with test accuracy held"] if f["gap_support"] else []) + (
        [f"{f['gap_shrunk_not_held']} shrunk without test accuracy shown held (does not count)"]
        if f["gap_shrunk_not_held"] else [])
    if gap:
        clauses.append("gap " + ", ".join(gap))
    spread = [f"{f[k]} {w}" for k, w in (("sd_smaller", "smaller"), ("sd_larger", "larger")) if f[k]]
    if spread:
        clauses.append("sd " + ", ".join(spread))
    features = [f"{f[k]} {w}" for k, w in (("features_count", "better (not shown worse on any metric)"),
                                           ("features_worse", "shown worse on some metric")) if f[k]]
    if features:
        clauses.append("features " + ", ".join(features))
    return "; ".join(clauses)


def axis_words(rows: pd.DataFrame, varying: list[str]) -> list[str]:
    """The by-axis reading in words, a bullet per axis (which value gains most and least test accuracy
    on average) with a sub-bullet per value: what the declared per-setting tests decided, as counts
    of settings (axis_findings). Descriptive: it restates the per-setting decisions, it decides nothing."""
    lines = []
    for col in varying:
        groups = list(rows.groupby(col, sort=True))
        if len(groups) < 2:
            continue
        found = {value: axis_findings(group) for value, group in groups}
        ranked = sorted((item for item in found.items() if np.isfinite(item[1]["mean_gain_pp"])),
                        key=lambda item: -item[1]["mean_gain_pp"])
        lead = f"- **{col}**"
        if len(ranked) >= 2:
            (top, top_f), (low, low_f) = ranked[0], ranked[-1]
            lead += (f": mean accuracy change highest at {_value_name(col, top)} "
                     f"({_fmt(top_f['mean_gain_pp'], 3, True)} pp), lowest at {_value_name(col, low)} "
                     f"({_fmt(low_f['mean_gain_pp'], 3, True)} pp; means over settings, no test compares values)")
        lines.append(lead + "; settings by what the declared tests decided:")
        lines += [f"  - {_value_name(col, value)} ({f['settings']} setting{'s' * (f['settings'] != 1)}): {_decided(f)}"
                  for value, f in found.items()]
    return lines


def regime_text(run_row) -> str:
    """A context's training regime in words, from one of its rows of runs.csv."""
    return (f"{_value(run_row['epochs'], 'd')} epoch(s), dropout {_value(run_row['dropout'], 'g')}, "
            + (f"{_value(run_row['train_size'], 'd')} training images drawn per seed"
               if _value(run_row["train_size"]) != "?" else "all training images"))


def _context_section(context: str, runs: pd.DataFrame, analysis: stats.Analysis, paths: dict,
                     several: bool) -> list[str]:
    claims = analysis.verdicts[context]
    summary = analysis.summary[analysis.summary["context"] == context]
    rows = summary[summary["alpha"] != 0]
    base = summary[summary["alpha"] == 0]
    ctx_runs = runs[runs["context"] == context]
    varying = _varying(summary)
    seeds = sorted({int(s) for s in ctx_runs["seed"]})
    regime = regime_text(ctx_runs.iloc[0])
    constant = [f"{c}={rows[c].iloc[0]}" for c in axes.SETTING_COLUMNS
                if c not in varying and c != "alpha" and len(rows) and rows[c].nunique() == 1]
    path = paths[context]
    lines = []
    if several:
        lines += [f"## Context `{context}`", ""]
    lines += [
        f"Regime: {regime}. Runs: {len(ctx_runs)} ({int((ctx_runs['status'] == 'ok').sum())} ok), "
        f"{len(rows)} regularized setting(s) and the baseline; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)})"
        + (f"; every setting has {', '.join(constant)}" if constant else "") + ".",
        f"Code path: {', '.join(path['code_paths'])} on {', '.join(path['devices'])}"
        + ("" if path["one_path"] else " - **the arms of this comparison did not all take one recorded code path "
           "and device**: a difference between arms may come from the code, not the regularizer")
        + f"; commit(s) {', '.join(path['commits']) or 'not recorded'}.",
        "",
        "| claim | verdict | main evidence |",
        "| --- | --- | --- |",
    ]
    for claim in stats.CLAIMS:
        reasons = claims[claim]["reasons"]
        lines.append(f"| {claim}: {CLAIM_TEXT[claim]} | **{claims[claim]['verdict']}** | "
                     f"{(reasons[0] if reasons else '').replace('|', '/')} |")
    lines.append("")
    heading = "###" if several else "##"
    m = analysis.min_effect_pp
    acc = claims["accuracy"]
    lines += [f"{heading} Accuracy: {acc['verdict']}", "", *[f"- {r}." for r in acc["reasons"]]]
    lines += ["", f"Paired by seed: delta = setting minus baseline, same seed (init, data order, dropout masks); "
              f"m = {m:g} pp. Calls: better (p > m, Holm), equivalent (TOST within +-m, Holm), worse (below 0, Holm), "
              "above zero (not shown above m): above 0 (Holm), whether above m is open, undecided. The bootstrap "
              "CI resamples seeds and test images (reported alongside, not decisive).", "",
              _accuracy_table(rows, varying), ""]
    sens = analysis.sensitivity[context]
    lines += [f"{heading} Sensitivity to the margin", "",
              _table(pd.DataFrame({"m (pp)": [f"{r['min_effect_pp']:g}" for r in sens],
                                   "accuracy verdict": [r["verdict"] for r in sens],
                                   "better": [str(r["better"]) for r in sens],
                                   "equivalent": [str(r["equivalent"]) for r in sens],
                                   "worse": [str(r["worse"]) for r in sens]})), ""]
    if len(rows) > 1:
        lines += [f"{heading} By axis, at a glance", "",
                  "Each axis value over the settings that have it (means of the per-setting paired "
                  "differences; a reading aid: the decisions are the per-setting tests of each claim). Gap "
                  "change: train-test gap of the setting minus the baseline's (negative = less overfitting); "
                  "sd ratio: seed-to-seed sd of test accuracy over the baseline's (below 1 = steadier); "
                  "feature gains: paired, in pp. Settings that diverged in some seed are left out of the means (their "
                  "surviving runs would flatter them) and counted apart. In words, counts of settings by what the "
                  "per-setting tests decided:", "", *axis_words(rows, varying), "", by_axis(rows, varying), ""]
    for claim, table in (("overfitting", _overfitting_table(rows, varying)),
                         ("stability", _stability_table(rows, varying,
                                                        base["std_acc"].iloc[0] if len(base) else float("nan"))),
                         ("features", _features_table(rows, varying))):
        verdict = claims[claim]
        caption = {"features": ["Each cell: the paired gain in pp (Holm p of a gain above the feature margin; Holm p "
                                "of a loss, H0 gain >= 0).", ""],
                   "overfitting": ["Negative gap change = less overfitting; it counts only with the test accuracy "
                                   "held: the joint test (the larger of the two one-sided p, Holm) decides.",
                                   ""]}.get(claim, [])
        lines += [f"{heading} {claim.capitalize()}: {verdict['verdict']}", "", *[f"- {r}." for r in verdict["reasons"]],
                  "", f"Test: {verdict['tests']}.", "", *caption, table, ""]
    return lines


def render_markdown(results_dir: Path, records: list[dict], runs: pd.DataFrame, analysis: stats.Analysis,
                    paths: dict, plots: list[Path], skipped: list[tuple[str, str]], planned: int = 0,
                    final: int = 0) -> str:
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
        "activations of a small MNIST CNN " + "; ".join(f"({i}) {t}" for i, t in enumerate(CLAIM_TEXT.values(), 1))
        + ".",
        "",
        f"Smallest effect of interest m = {m:g} pp of test accuracy ({m / 100 * n_test[0]:g} of {n_test[0]} test "
        "images); every test and decision rule is declared in the README (\"Statistics and the verdicts\") and "
        "verdict.json holds the same verdicts for scripts. Each context (training regime) is its own family: its own "
        "baseline, Holm correction and verdicts.",
        "",
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
        *[f"![{p.stem}](plots/{p.name})" for p in plots],
        "",
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
