"""The claim check at a glance: one markdown table over several results folders (the main grid and
each control), a row per folder and context, read from the files `l2sweep report` wrote there
(verdict.json, summary.csv, runs.csv) and the runs planned in sweep.json. It recomputes no
statistic: each folder's report is the evidence, this table points to it. A folder whose report is
older than its run files is marked stale rather than silently summarised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2reg import executors, files, report, stats


class OverviewError(RuntimeError):
    """A folder that cannot be summarised (named, with what to do)."""


@dataclass
class FolderRow:
    folder: str
    context: str
    regime: str
    runs: str  # "done of planned (ok)"
    verdicts: dict  # claim -> verdict
    best_gain: str  # the accuracy claim's best paired gain with its CI and n
    note: str  # stale report, not started, ...


def _run_files(folder: Path) -> list[Path]:
    # dot-named files are temporaries of an atomic write; the rest are run records
    return [p for p in (folder / "runs").glob("*.json") if not p.name.startswith(".")]


def _best_gain(rows: pd.DataFrame) -> str:
    """The setting with the highest paired gain: its delta, paired 95 % CI and n."""
    tested = rows[(rows["alpha"] != 0) & rows["delta_pp"].notna()]
    if not len(tested):
        return "-"
    best = tested.loc[tested["delta_pp"].idxmax()]
    name = report._setting_name(best, report._varying(rows))
    return (f"{name}: {report._fmt(best['delta_pp'], 3, True)} pp "
            f"{report._ci(best['paired_ci_low_pp'], best['paired_ci_high_pp'])}, n = {int(best['paired_n'])}")


def folder_rows(folder: Path) -> list[FolderRow]:
    """The rows of one results folder: one per context of its verdict.json; one row saying why
    when the folder has not started or has no report yet."""
    folder = Path(folder)
    name = str(folder)
    empty = {claim: "-" for claim in stats.CLAIMS}
    if not folder.is_dir():
        return [FolderRow(name, "-", "-", "0", empty, "-", "not started")]
    planned = len(executors.known_runs(folder))
    run_files = _run_files(folder)
    verdict_path = folder / "verdict.json"
    if not verdict_path.is_file():
        return [FolderRow(name, "-", "-", f"{len(run_files)} of {planned}", empty, "-",
                          f"no report yet: `l2sweep report {name}`")]
    try:
        verdict = files.read_json(verdict_path)
        summary = pd.read_csv(folder / "summary.csv")
        runs = pd.read_csv(folder / "runs.csv")
        contexts = verdict["contexts"]
    except (OSError, ValueError, KeyError) as error:
        raise OverviewError(f"{folder}: its report files cannot be read ({error}): rebuild them with "
                            f"`l2sweep report {name}`") from error
    newest_run = max((p.stat().st_mtime for p in run_files), default=0.0)
    stale = verdict.get("runs") != len(run_files) or newest_run > verdict_path.stat().st_mtime
    note = (f"stale: the report covers {verdict.get('runs')} runs, runs/ holds {len(run_files)}: "
            f"`l2sweep report {name}`") if stale else ""
    rows = []
    several = len(contexts) > 1
    for context in sorted(contexts, key=str):
        ctx_runs = runs[runs["context"] == context]
        ok = int((ctx_runs["status"] == "ok").sum())
        # sweep.json plans runs per folder, not per context: with several contexts a row counts its
        # own runs and the note gives the folder's total
        counted = f"{len(ctx_runs)}" if several else f"{len(run_files)} of {planned}"
        rows.append(FolderRow(
            folder=name, context=context,
            regime=report.regime_text(ctx_runs.iloc[0]) if len(ctx_runs) else "-",
            runs=f"{counted} ({ok} ok)",
            verdicts={claim: contexts[context]["claims"][claim]["verdict"] for claim in stats.CLAIMS},
            best_gain=_best_gain(summary[summary["context"] == context]),
            note="; ".join(filter(None, [f"folder: {len(run_files)} of {planned} runs" if several else "", note]))))
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
        **{claim: [f"**{r.verdicts[claim]}**" if r.verdicts[claim] != "-" else "-" for r in rows]
           for claim in stats.CLAIMS},
        "highest paired gain in test accuracy (95 % CI, n seeds)": [r.best_gain for r in rows],
        "note": [r.note or "" for r in rows],
    })
    return "\n".join([
        "# The claim check at a glance",
        "",
        "A row per results folder and training regime (context): each is its own family, with its own baseline, "
        "Holm correction and verdicts (README \"Statistics and the verdicts\"); never read one row's verdict as "
        "another's. Runs: files in runs/ of those planned in sweep.json (ok: trained to the end). The evidence is "
        "each folder's report.md; this table recomputes nothing.",
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
