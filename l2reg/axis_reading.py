"""The by-axis reading of report.md: each setting axis that varies, value by value, over the
settings that have that value -- a table of means and the per-setting decisions in words.

A reading aid, never a test: each claim contributes its cells and its clause (l2reg.claims'
axis_columns, axis_findings, axis_clause); the decisions stay the per-setting tests of each
claim. Settings that diverged in some seed are counted apart (against every claim) and left out
of the means and the best, as the verdicts do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from l2reg import claims, text
from l2reg.claims.base import diverged_mask


def without_diverged(group: pd.DataFrame) -> pd.DataFrame:
    """The settings none of whose runs diverged: their survivors alone would flatter the others."""
    return group[~diverged_mask(group)]


def table(rows: pd.DataFrame, varying: list[str]) -> str:
    """A row per value of each varying setting axis: the number of settings and every claim's cells."""
    out = []
    for col in varying:
        others = [c for c in varying if c != col]
        for value, everything in rows.groupby(col, sort=True):
            live = without_diverged(everything)  # the calls still count the diverged ones
            row = {"axis": col, "value": f"{value:g}" if col == "alpha" else str(value),
                   "settings": str(len(everything))}
            for claim in claims.all_claims():
                row.update(claim.axis_columns(everything, live, others))
            out.append(row)
    return text.markdown_table(pd.DataFrame(out))


def findings(group: pd.DataFrame) -> dict:
    """What the declared per-setting tests decided in a group of settings (one axis value), as counts
    of settings (every claim's axis_findings), never a new test."""
    live = without_diverged(group)
    found = {"settings": len(group), "diverged": len(group) - len(live)}
    for claim in claims.all_claims():
        found.update(claim.axis_findings(live))
    return found


def decided(found: dict) -> str:
    """A group's findings in words: a clause per claim where a test decided something."""
    clauses = [f"{found['diverged']} diverged in some seed (against every claim)"] if found["diverged"] else []
    for claim in claims.all_claims():
        clause = claim.axis_clause(found)
        if clause:
            clauses.append(clause)
    return "; ".join(clauses)


def words(rows: pd.DataFrame, varying: list[str]) -> list[str]:
    """The by-axis reading in words, a bullet per axis (which value gains most and least test accuracy
    on average) with a sub-bullet per value: what the declared per-setting tests decided."""
    lines = []
    for col in varying:
        groups = list(rows.groupby(col, sort=True))
        if len(groups) < 2:
            continue
        found = {value: findings(group) for value, group in groups}
        ranked = sorted((item for item in found.items() if np.isfinite(item[1]["mean_gain_pp"])),
                        key=lambda item: -item[1]["mean_gain_pp"])
        lead = f"- **{col}**"
        if len(ranked) >= 2:
            (top, top_f), (low, low_f) = ranked[0], ranked[-1]
            lead += (f": mean accuracy change highest at {text.axis_value(col, top)} "
                     f"({text.cell(top_f['mean_gain_pp'], 3, True)} pp), lowest at {text.axis_value(col, low)} "
                     f"({text.cell(low_f['mean_gain_pp'], 3, True)} pp; means over settings, no test compares values)")
        lines.append(lead + "; settings by what the declared tests decided:")
        lines += [f"  - {text.axis_value(col, value)} ({f['settings']} setting{'s' * (f['settings'] != 1)}): "
                  f"{decided(f)}" for value, f in found.items()]
    return lines


def section(rows: pd.DataFrame, varying: list[str], heading: str) -> list[str]:
    """The "By axis, at a glance" section of one context (only with more than one setting)."""
    if len(rows) <= 1:
        return []
    return [f"{heading} By axis, at a glance", "",
            "Each axis value over the settings that have it (means of the per-setting paired "
            "differences; a reading aid: the decisions are the per-setting tests of each claim). Gap "
            "change: train-test gap of the setting minus the baseline's (negative = less overfitting); "
            "sd ratio: seed-to-seed sd of test accuracy over the baseline's (below 1 = steadier); "
            "feature gains: paired, in pp. Settings that diverged in some seed are left out of the means (their "
            "surviving runs would flatter them) and counted apart. In words, counts of settings by what the "
            "per-setting tests decided:", "", *words(rows, varying), "", table(rows, varying), ""]
