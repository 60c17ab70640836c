"""The claim check at a glance: one markdown table over several results folders (the main grid and
each control), a row per folder and context, read from the files `l2sweep report` wrote there
(verdict.json, summary.csv, runs.csv) and the runs planned in sweep.json. It recomputes no
statistic: each folder's report is the evidence, this table points to it. A folder whose report no
longer describes its run files (files added or removed, a run re-run with another status or test
accuracy) is marked stale rather than silently summarised. Staleness is judged by content, never by
file times: a git clone gives every file the time of the checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2reg import axes, claims, files, report, text
from l2reg.executors.status import known_runs


class OverviewError(RuntimeError):
    """A folder that cannot be summarised (named, with what to do)."""


@dataclass
class FolderRow:
    folder: str
    context: str
    regime: str
    runs: str  # "done of planned (ok)"
    compute: str  # the runs' wall time: sum (median per run)
    verdicts: dict  # claim -> verdict
    best_gain: str  # the accuracy claim's best paired gain with its CI and n
    note: str  # stale report, not started, ...

    @classmethod
    def without_report(cls, folder: str, runs: str, note: str) -> FolderRow:
        """The one row of a folder with nothing to summarise yet (no folder, no run, no report)."""
        return cls(folder=folder, context="-", regime="-", runs=runs, compute="-",
                   verdicts={claim: "-" for claim in claims.names()}, best_gain="-", note=note)


def _best_gain(rows: pd.DataFrame) -> str:
    """The tested setting (paired over 2 or more seeds) with the highest paired gain: its delta,
    its own 95 % paired CI (not adjusted for being the largest of several), n and call."""
    tested = rows[(~axes.baseline_rows(rows)) & rows["delta_pp"].notna() & (rows["paired_n"] >= 2)]
    if not len(tested):
        return "-"
    best = tested.loc[tested["delta_pp"].idxmax()]
    varying = axes.varying(rows[~axes.baseline_rows(rows)], fallback=["alpha", "target"])
    name = text.setting_name(best, varying if "alpha" in varying else ["alpha", *varying])
    return (f"{name}: {text.cell(best['delta_pp'], 3, True)} pp "
            f"{text.interval(best['paired_ci_low_pp'], best['paired_ci_high_pp'])}, n = {int(best['paired_n'])}, "
            f"{best['call']}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _compute(runs: pd.DataFrame) -> str:
    """The wall time the runs took, from runs.csv's `seconds` (each run's own wall time: training,
    evaluations, feature metrics; pauses included): their sum and the median run. Failed runs count
    (they took the time too). On several workers at once the elapsed time is shorter than the sum."""
    if "seconds" not in runs:
        return "-"
    seconds = pd.to_numeric(runs["seconds"], errors="coerce").dropna()
    if not len(seconds):
        return "-"
    return f"{_duration(float(seconds.sum()))} (median {seconds.median():.0f} s)"


def _read_report(folder: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """verdict.json, summary.csv and runs.csv of a folder, checked to describe the same runs and
    contexts (a report interrupted between its files would not)."""
    rebuild = f"rebuild them with `l2sweep report {folder}`"
    try:
        verdict = files.read_json(folder / "verdict.json")
        summary = pd.read_csv(folder / "summary.csv")
        runs = pd.read_csv(folder / "runs.csv")
        contexts = verdict["contexts"]
        by_context = {context: {name: contexts[context]["claims"].get(name, {}).get("verdict", "-")
                                for name in claims.names()} for context in contexts}
        counted = int(verdict["runs"]), len(verdict.get("skipped_files") or [])
        interim = bool(verdict.get("interim"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OverviewError(f"{folder}: its report files cannot be read ({type(error).__name__}: {error}): "
                            f"{rebuild}") from error
    if counted[0] != len(runs) or set(map(str, contexts)) != set(map(str, runs["context"])) \
            or set(map(str, contexts)) != set(map(str, summary["context"])):
        raise OverviewError(f"{folder}: its verdict.json, runs.csv and summary.csv describe different runs or "
                            f"contexts (a report interrupted while writing?): {rebuild}")
    return {"claims": by_context, "runs": counted[0], "skipped": counted[1], "interim": interim}, summary, runs


def _changed_since_report(folder: Path, runs: pd.DataFrame) -> int:
    """How many of the report's runs (runs.csv) have a run file that now says another thing: gone,
    no longer a readable run record, or another status or test accuracy (a failed run retried, a run
    re-run with --force under other code). Loads the folder as `l2sweep report` does."""
    def same(a, b) -> bool:  # NaN (no metric: a failed run) equals NaN
        a, b = (float("nan") if v is None else float(v) for v in (a, b))
        return a == b or (a != a and b != b)

    now = {record["run_id"]: (record["status"], (record.get("metrics") or {}).get("test_acc"))
           for record in report.load_records(folder).records}
    changed = 0
    for run_id, status, test_acc in zip(runs["run_id"], runs["status"], runs["test_acc"]):
        if run_id not in now:
            changed += 1
            continue
        status_now, test_acc_now = now[run_id]
        try:
            changed += status_now != status or not same(test_acc_now, test_acc)
        except (TypeError, ValueError):  # a metric that is not a number is a change, not a traceback
            changed += 1
    return changed


def folder_rows(folder: Path) -> list[FolderRow]:
    """The rows of one results folder: one per context of its report; one row saying why when the
    folder has not started, has no finished run or has no report yet. Runs done and ok are those
    of the report (runs.csv); a note says when runs/ has changed since."""
    folder = Path(folder)
    name = str(folder)
    if not folder.is_dir():
        return [FolderRow.without_report(name, runs="0", note="not started")]
    planned = len(known_runs(folder))
    run_files = files.run_files(folder / "runs")
    verdict_path = folder / "verdict.json"
    if not run_files:
        return [FolderRow.without_report(name, runs=f"0 of {planned}", note="started, no run finished yet")]
    if not verdict_path.is_file():
        return [FolderRow.without_report(name, runs=f"{len(run_files)} files of {planned}",
                                         note=f"no report yet: `l2sweep report {name}`")]
    verdict, summary, runs = _read_report(folder)
    reported_files = verdict["runs"] + verdict["skipped"]
    notes = []  # most important first
    if verdict["skipped"]:
        notes.append(f"{verdict['skipped']} file(s) in runs/ are not run records (report.md)")
    if not (folder / "sweep.json").is_file():  # e.g. a control holding only the baselines copied to it
        notes.append("no sweep has run here yet (no sweep.json: nothing planned; its run files were put here)")
    if verdict["interim"]:
        notes.append("interim: not all planned runs are in")
    if reported_files != len(run_files):
        notes.append(f"stale: runs/ holds {len(run_files)} files, the report read {reported_files}: "
                     f"`l2sweep report {name}`")
    elif changed := _changed_since_report(folder, runs):
        notes.append(f"stale: {changed} run file(s) changed since the report: `l2sweep report {name}`")
    rows = []
    several = len(verdict["claims"]) > 1
    for context in sorted(verdict["claims"], key=str):
        ctx_runs = runs[runs["context"].astype(str) == str(context)]
        ok = int((ctx_runs["status"] == "ok").sum())
        # sweep.json plans runs per folder, not per context: with several contexts a row counts its
        # own runs and the note gives the folder's total
        counted = f"{len(ctx_runs)}" if several else f"{len(ctx_runs)} of {planned}"
        rows.append(FolderRow(
            folder=name, context=context, regime=report.regime_text(ctx_runs.iloc[0]), runs=f"{counted} ({ok} ok)",
            compute=_compute(ctx_runs),
            verdicts=verdict["claims"][context],
            best_gain=_best_gain(summary[summary["context"].astype(str) == str(context)]),
            note="; ".join(([f"folder: {len(runs)} of {planned} runs"] if several else []) + notes)))
    return rows


def overview_markdown(folders: list[Path], link_from: Path = Path(".")) -> str:
    """The overview table over `folders`, with a line on how to read it; links to each report.md
    are relative to the folder `link_from` (where the markdown will live)."""
    rows = [row for folder in folders for row in folder_rows(folder)]

    def link(row: FolderRow) -> str:
        if row.context == "-":
            return row.folder
        return f"[{row.folder}]({Path(os.path.relpath(Path(row.folder) / 'report.md', link_from)).as_posix()})"

    table = pd.DataFrame({
        "results": [link(r) for r in rows],
        "regime (context)": [r.regime for r in rows],
        "runs": [r.runs for r in rows],
        "compute: sum of run wall times (median run)": [r.compute for r in rows],
        **{claim: [f"**{r.verdicts[claim]}**" if r.verdicts[claim] != "-" else "-" for r in rows]
           for claim in claims.names()},
        "highest paired gain in test accuracy (its 95 % CI, n seeds, call)": [r.best_gain for r in rows],
        "note": [r.note or "" for r in rows],
    }).map(lambda cell: cell.replace("|", "\\|"))  # a "|" in a folder name or a context must not split a cell
    return "\n".join([
        "# The claim check at a glance",
        "",
        "A row per results folder and training regime (context): each is its own family, with its own baseline, "
        "Holm correction and verdicts (docs/statistics.md \"The rules\"); never read one row's verdict as "
        "another's. Runs: those the report read, of those planned in sweep.json (ok: trained to the end). Compute: "
        "the sum of the runs' own wall times (runs.csv `seconds`; on several workers at once the elapsed time is "
        "shorter; a run in two folders, such as a control's baselines copied from the main grid, counts in "
        "both) and the median run. Highest "
        "paired gain: the setting with the largest mean paired gain over 2 or more seeds, with its own 95 % CI "
        "(not adjusted for being the largest) and its call; the decisions are in each folder's report.md. This "
        "table recomputes nothing.",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ])


def write_overview(folders: list[Path], out: Path | None) -> str:
    """The overview as markdown; also written to `out` (atomically) when given."""
    text = overview_markdown(folders, Path(out).parent if out is not None else Path("."))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        files.write_text_atomic(Path(out), text)
    return text
