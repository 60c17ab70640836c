"""What every claim shares: the :class:`Claim` interface, the evidence a claim is handed (one
context's baseline, one setting's runs), the verdict vocabulary and helpers the built-in claims use
(a verdict dict, diverged settings, the seeds a margin rule needs), and the heat map's shared
per-setting vocabulary (HEAT_CALLS, :meth:`Claim.heat_call`).

Conventions for every claim:
- Families. Each context is its own family: its own baseline (the ok runs with alpha == 0), its
  own corrections, its own verdicts. Nothing is ever pooled across contexts.
- Only runs with status "ok" count; the others are counted in n_not_ok.
- Pairing. For a setting and a metric, d_s = metric(setting, s) - metric(baseline, s) over the
  seeds s that both arms have (with a value): :meth:`Setting.paired`.
- A setting that diverged in some seed never counts for a claim: its surviving runs alone would
  hide the failures (:func:`split_diverged`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from l2reg import stats, text

# per-setting calls
BASELINE = "baseline"
BETTER = "better"
EQUIVALENT = "equivalent"
WORSE = "worse"
ABOVE_ZERO_ONLY = "above zero (not shown above m)"
UNDECIDED = "undecided"
NOT_TESTED = "not tested"
DIVERGED = "diverged"  # some runs of the setting diverged: never better, never more stable
# claim verdicts (and NOT_TESTED)
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

NO_PREDICTIONS = "runs lack per-image predictions"

# The heat map's shared vocabulary (Claim.heat_call): what a claim's declared per-setting test
# decided for one setting, in words common to every claim; each claim maps its own calls onto it.
HEAT_SUPPORTS = "supports"  # the setting meets the claim's rule for "supported"
HEAT_SHOWN_NOT = "shown not to"  # it meets the claim's per-setting rule for "not supported"
HEAT_AGAINST = "against"  # shown to go the other way (worse, larger spread, more churn)
HEAT_UNDECIDED = "undecided"  # tested, neither
HEAT_NOT_TESTED = NOT_TESTED  # too few pairs, or the claim has no per-setting test
HEAT_DIVERGED = DIVERGED  # some run diverged: never counted as supporting
HEAT_CALLS = (HEAT_SUPPORTS, HEAT_SHOWN_NOT, HEAT_AGAINST, HEAT_UNDECIDED, HEAT_NOT_TESTED, HEAT_DIVERGED)


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column of a runs table (NaN where absent or not a number)."""
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=frame.index, dtype=float)


def paired_differences(setting: pd.DataFrame, baseline: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, d): the seeds both arms have with a value of column `name`, sorted, and d = setting - baseline."""
    left = pd.DataFrame({"seed": setting["seed"], "x": column(setting, name)}).dropna()
    right = pd.DataFrame({"seed": baseline["seed"], "y": column(baseline, name)}).dropna()
    pairs = left.merge(right, on="seed").sort_values("seed", kind="stable")
    return pairs["seed"].to_numpy(), (pairs["x"] - pairs["y"]).to_numpy(dtype=float)


@dataclass(frozen=True)
class HeatCall:
    """One heat-map cell: `call` from HEAT_CALLS and a short annotation (the claim's own call or
    the number that decided it; empty: the call itself is written)."""

    call: str
    text: str = ""


@dataclass
class Context:
    """One context (a training regime) as the claims see it: its runs, its ok baseline runs, the
    margins and the analysis' knobs. `predictions`/`labels`: per run id, uint8 test labels."""

    name: str
    runs: pd.DataFrame
    baseline: pd.DataFrame
    min_effect_pp: float
    min_feature_effect_pp: float
    predictions: Mapping = field(default_factory=dict)
    labels: Mapping = field(default_factory=dict)
    n_boot: int = stats.N_BOOT
    n_spread_sim: int = stats.N_SPREAD_SIMULATIONS
    rng_seed: int = stats.RNG_SEED

    @property
    def ok_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["status"].astype(str) == "ok"]

    @property
    def n_test(self) -> float:
        return column(self.ok_runs, "n_test").median()


@dataclass
class Setting:
    """One regularized setting of a context: its key (setting columns), its name, all its runs and
    its ok runs; `notes` collects what the claims could not test (summary.csv's note)."""

    key: dict
    name: str
    runs: pd.DataFrame
    ok: pd.DataFrame
    baseline: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def paired(self, name: str) -> np.ndarray:
        """d = setting - baseline of column `name`, over the seeds both have, in seed order."""
        return paired_differences(self.ok, self.baseline, name)[1]


@dataclass
class SectionView:
    """What a claim's report.md section is drawn from: the context's summary rows of its settings
    and of its baseline, this claim's verdict, the context's extra outputs (verdict.json), the
    heading level and the axes that name a setting."""

    context: str
    rows: pd.DataFrame
    baseline: pd.DataFrame
    verdict: dict
    extras: dict
    heading: str
    varying: list[str]
    min_effect_pp: float


class Claim:
    """One claim of the article. Subclasses set the class attributes and override what they use;
    every hook has a do-nothing default, so a new claim writes only what it decides."""

    name: str = ""
    words: str = ""  # the article's words, English and the original
    metrics: tuple[str, ...] = ()  # run metrics (l2reg.evaluate names) it reads
    columns: tuple[str, ...] = ()  # its per-setting summary columns, in summary.csv order
    tests: str = ""  # the declared tests in one sentence (verdict.json "tests", report.md "Test:")
    caption: tuple[str, ...] = ()  # lines under its section's reasons, above its table

    def baseline_row(self, context: Context) -> dict:
        """Its columns on the baseline's summary row."""
        return {}

    def setting_row(self, setting: Setting, context: Context) -> dict:
        """Its columns for one setting before family corrections (private helpers: keys with '_')."""
        return {}

    def family(self, rows: list[dict], context: Context) -> None:
        """Corrections across the settings of one context (Holm), in place on `rows`."""

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        """{"verdict", "reasons", "min_effect_pp", "seeds_needed", "tests", ...} for one context;
        `table` has the summary columns and a "name" column, one row per setting."""
        raise NotImplementedError

    def context_extras(self, table: pd.DataFrame, rows: list[dict], context: Context) -> dict:
        """More per-context output for verdict.json beside "claims" (e.g. a sensitivity table)."""
        return {}

    def section(self, view: SectionView) -> list[str]:
        """Its report.md section: heading, reasons, the declared test, caption, table."""
        verdict = view.verdict
        return [f"{view.heading} {self.name.capitalize()}: {verdict['verdict']}", "",
                *[f"- {r}." for r in verdict["reasons"]], "", f"Test: {verdict['tests']}.", "", *self.caption,
                self.table(view), ""]

    def table(self, view: SectionView) -> str:
        """The markdown table of its section (one row per setting)."""
        return ""

    def heat_call(self, row) -> HeatCall:
        """What its declared per-setting test decided for one setting (a summary row: a dict or a
        Series with its columns, which an old table may lack), in the shared vocabulary HEAT_CALLS:
        supports = the setting meets the claim's rule for "supported"; shown not to = it meets the
        per-setting part of the rule for "not supported"; against = shown to go the other way;
        undecided; not tested; diverged. A claim without a per-setting test: not tested."""
        return HeatCall(HEAT_NOT_TESTED)

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        """Its cells of the by-axis table for one axis value: `everything` its settings, `live` those
        without a diverged run, `others` the other varying axes (to name a setting)."""
        return {}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        """What its declared per-setting tests decided in a group of settings, as counts."""
        return {}

    def axis_clause(self, findings: dict) -> str | None:
        """Those findings in words (a clause of the by-axis bullets), or None when nothing was decided."""
        return None


def verdict_dict(verdict: str, reasons: list[str], margin, seeds, tests: str, **extra) -> dict:
    return {"verdict": verdict, "reasons": reasons, "min_effect_pp": margin, "seeds_needed": seeds,
            "tests": tests, **extra}


def names_of(table: pd.DataFrame) -> str:
    return "; ".join(table["name"]) if len(table) else "none"


def count(mask) -> int:
    return int(np.asarray(mask, dtype=bool).sum())


def diverged_mask(table: pd.DataFrame) -> pd.Series:
    """True for the settings (rows) with a diverged run in some seed: the verdicts and the report's
    by-axis reading set these apart."""
    n_div = table["n_diverged"] if "n_diverged" in table else pd.Series(0, index=table.index)
    return n_div.fillna(0) > 0


def split_diverged(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(settings without diverged runs, settings with some, a reason sentence or none). A setting
    that diverged in some seed counts as not better / not more stable / not shrinking the gap; for
    the intersection-union "not supported" rules it counts as shown (it does not support the claim)."""
    has_diverged = diverged_mask(table)
    diverged = table[has_diverged]
    live = table[~has_diverged]
    if not len(diverged):
        return live, diverged, []
    named = "; ".join(f"{row['name']} ({int(row['n_diverged'])} of {int(row['n']) + int(row['n_not_ok'])} runs)"
                      for _, row in diverged.iterrows())
    return live, diverged, [f"{len(diverged)} setting(s) diverged in some seeds and count as not supporting the "
                            f"claim: {named}"]


def with_spread(cells: pd.DataFrame, mean_col: str, sd_col: str) -> pd.DataFrame:
    """The rows whose paired differences have spread (stats' tie tolerance)."""
    sd = pd.to_numeric(cells[sd_col], errors="coerce")
    return cells[sd > stats.EXACT_TOLERANCE * np.maximum(1.0, pd.to_numeric(cells[mean_col], errors="coerce").abs())]


def seeds_for_margin(cells: pd.DataFrame, margin: float, k: int, mean_col: str, sd_col: str,
                     p_inferior_col: str) -> tuple[int | None, str]:
    """seeds_needed and its sentence for a margin rule (accuracy, features): if the best observed gain
    exceeds m, the seeds with which its superiority test reaches 80 % power at Holm's first-step level
    0.05/k; otherwise the largest, over the cells not yet shown below m, of the seeds with which their
    inferiority test (gain m - dbar) reaches 80 % power at 0.05 (the IUT's level) -- each assuming the
    observed mean and sd of the paired differences are true. Ties (no spread) are left out."""
    level, f = stats.SIGNIFICANCE, text.number
    spread = with_spread(cells, mean_col, sd_col)
    if spread.empty:
        return None, "no tested one has paired differences with spread yet (ties): no sd to plan the seeds with"
    if len(spread) < len(cells):
        seeds, why = seeds_for_margin(spread, margin, k, mean_col, sd_col, p_inferior_col)
        return seeds, why + (f" ({len(cells) - len(spread)} left out of this estimate: their paired differences "
                             "have no spread yet)")
    best = cells.sort_values(mean_col, ascending=False).iloc[0]
    if best[mean_col] > margin:
        seeds = stats.seeds_needed(best[mean_col] - margin, best[sd_col], level / k)
        what = (f"{best['name']} (observed {f(best[mean_col])} pp, sd of paired differences "
                f"{f(best[sd_col], 3, False)} pp) to be shown better by {margin:g} pp with 80 % power at Holm's "
                f"first-step level {level}/{k}")
        if seeds is None:
            return None, f"no number of seeds from 2 to {stats.MAX_SEEDS} is enough for {what}"
        return seeds, f"about {seeds} seeds per setting are needed for {what}, if the observed values were the truth"
    open_cells = cells[~(cells[p_inferior_col] < level)]
    if open_cells.empty:
        return None, (f"every tested one is shown below {margin:g} pp: only the untested ones, which need "
                      "2 or more paired seeds, keep it open")
    needs = [(stats.seeds_needed(margin - row[mean_col], row[sd_col], level), row) for _, row in open_cells.iterrows()]
    missing = [row for n, row in needs if n is None]
    if missing:
        row = missing[0]
        return None, (f"no finite number of seeds decides it: {row['name']} has an observed mean of "
                      f"{f(row[mean_col])} pp with sd {f(row[sd_col], 3, False)} pp, on the margin of "
                      f"{margin:g} pp or without spread, so neither test gains power with more seeds")
    seeds, row = max(needs, key=lambda item: item[0])
    return seeds, (f"about {seeds} seeds per setting: then every setting not yet shown below {margin:g} pp would be, "
                   f"with 80 % power each at {level} (the largest need is {row['name']}, observed "
                   f"{f(row[mean_col])} pp, sd {f(row[sd_col], 3, False)} pp), if the observed values were the truth")


def holm_into(rows: Sequence[dict], p_column: str, n_column: str | None) -> None:
    """rows[i][p_column + "_holm"] = Holm over the rows' p_column (holm_family with n_column's
    pair counts, so a tie counts as p = 1; plain Holm when n_column is None)."""
    values = [row[p_column] for row in rows]
    adjusted = stats.holm(values) if n_column is None else stats.holm_family(values, [row[n_column] for row in rows])
    for row, value in zip(rows, adjusted):
        row[f"{p_column}_holm"] = float(value)
