"""The stability claim: L2 regularization "makes the model more stable".

Measured as the seed-to-seed spread of test accuracy: spread_ratio = sd(setting) / sd(baseline),
the Brown-Forsythe test (scipy levene, center='median') of equal spread, Holm over the settings of
the context, and the Monte Carlo power of that rule to find a 1.5x smaller sd with these seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg import stats, text
from l2reg.claims.base import (
    HEAT_AGAINST,
    HEAT_DIVERGED,
    HEAT_NOT_TESTED,
    HEAT_SHOWN_NOT,
    HEAT_SUPPORTS,
    HEAT_UNDECIDED,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    Claim,
    Context,
    HeatCall,
    SectionView,
    Setting,
    column,
    count,
    holm_into,
    names_of,
    split_diverged,
    verdict_dict,
)

POWER = stats.POWER
COLUMNS = ("spread_ratio", "spread_p", "spread_p_holm", "spread_power_1_5x")

TESTS = ("seed-to-seed sd of test accuracy: spread_ratio = sd(setting) / sd(baseline); Brown-Forsythe "
                   "test (scipy levene, center='median'), Holm over the settings; supported = some ratio < 1 with "
                   "Holm p < 0.05; not supported = none such AND >= 80 % Monte Carlo power for every setting to "
                   "detect a 1.5x smaller sd at 0.05/k")


def verdict_of(table: pd.DataFrame, n_spread_sim: int = stats.N_SPREAD_SIMULATIONS,
                      rng_seed: int = stats.RNG_SEED) -> dict:
    """Stability claim for one context (columns spread_*, n, name). supported: some setting has
    spread_ratio < 1 and spread_p_holm < 0.05. not supported: no such setting, every setting tested,
    and every spread_power_1_5x >= 0.8. Else inconclusive, seeds_needed = runs per arm (equal arms) at
    which the rule's power to detect a 1.5x smaller sd at 0.05/k reaches 80 % (stats.spread_seeds_needed)."""
    f, p, level = text.number, text.p_value, stats.SIGNIFICANCE
    k_all = len(table)
    live, diverged, diverged_reason = split_diverged(table)
    tested = live[np.isfinite(live["spread_p"].astype(float))]
    k = len(tested)
    extra = {"min_spread_ratio": stats.SPREAD_RATIO_OF_INTEREST}
    if k == 0 and len(diverged):
        untested_live = live[~np.isfinite(live["spread_p"].astype(float))]
        return verdict_dict(INCONCLUSIVE if len(untested_live) else NOT_SUPPORTED,
                      [r.replace("not supporting the claim", "less stable (a diverged run is the widest spread)")
                       for r in diverged_reason], None, None, TESTS, **extra)
    if k == 0:
        why = "no regularized setting in this context" if k_all == 0 else (
            f"none of the {k_all} settings has >= {stats.MIN_SPREAD_RUNS} ok runs with an ok baseline of >= "
            f"{stats.MIN_SPREAD_RUNS} runs (Brown-Forsythe needs them)")
        return verdict_dict(NOT_TESTED, [why], None, None, TESTS, **extra)
    untested = live[~np.isfinite(live["spread_p"].astype(float))]
    k_holm = int(np.isfinite(table["spread_p"].astype(float)).sum())  # Holm's family, diverged settings too
    smaller = tested[(tested["spread_ratio"] < 1) & (tested["spread_p_holm"] < level)]
    larger = tested[(tested["spread_ratio"] > 1) & (tested["spread_p_holm"] < level)]

    def line(row) -> str:
        return (f"{row['name']}: sd ratio {f(row['spread_ratio'], 2, False)} (n = {int(row['n'])} runs vs baseline), "
                f"Brown-Forsythe Holm p = {p(row['spread_p_holm'])}, power for a 1.5x smaller sd "
                f"{f(row['spread_power_1_5x'], 2, False)}")

    reasons = []
    seeds = None
    if len(smaller):
        verdict = SUPPORTED
        reasons.append(f"{len(smaller)} of {k} settings have a significantly smaller seed-to-seed spread of test "
                       f"accuracy (Brown-Forsythe, Holm over {k_holm} settings, p < {level})")
        reasons += [line(row) for _, row in smaller.iterrows()]
    elif len(untested) == 0 and (tested["spread_power_1_5x"] >= POWER).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"no setting has a significantly smaller spread, and with these seeds each of the {k} tests "
                       f"had >= {POWER:.0%} power to find a 1.5x smaller sd (the lowest "
                       f"{f(tested['spread_power_1_5x'].min(), 2, False)})")
    else:
        verdict = INCONCLUSIVE
        low_power = tested[~(tested["spread_power_1_5x"] >= POWER)]
        reasons.append("no setting has a significantly smaller spread"
                       + (f", but for {len(low_power)} of {k} settings the seeds give less than {POWER:.0%} power to "
                          f"find a 1.5x smaller sd (lowest {f(tested['spread_power_1_5x'].min(), 2, False)})"
                          if len(low_power) else "")
                       + (f"; {len(untested)} setting(s) not tested (fewer than {stats.MIN_SPREAD_RUNS} ok runs per "
                          f"arm): {names_of(untested)}" if len(untested) else ""))
        seeds = stats.spread_seeds_needed(level / k_holm, n_sim=n_spread_sim, rng_seed=rng_seed)
        reasons.append(f"about {seeds} runs per arm would give {POWER:.0%} power to find a 1.5x smaller sd at "
                       f"{level}/{k_holm} (Monte Carlo, normal data)" if seeds else
                       f"more than {stats.MAX_SPREAD_SEEDS} runs per arm would be needed for {POWER:.0%} power")
    if verdict != SUPPORTED:
        reasons.append("smallest observed ratio: " + line(tested.sort_values("spread_ratio").iloc[0]))
    if len(larger):
        reasons.append(f"{len(larger)} setting(s) have a significantly LARGER spread: {names_of(larger)}")
    reasons += [r.replace("not supporting the claim", "less stable (a diverged run is the widest spread)")
                for r in diverged_reason]
    return verdict_dict(verdict, reasons, None, seeds, TESTS, **extra)


class Stability(Claim):
    name = "stability"
    words = "makes the model more stable (使得模型更加稳定)"
    metrics = ("test_acc",)
    columns = COLUMNS
    tests = TESTS

    def setting_row(self, setting: Setting, context: Context) -> dict:
        set_acc = column(setting.ok, "test_acc").dropna().to_numpy()
        base_acc = column(setting.baseline, "test_acc").dropna().to_numpy()
        row = {"_spread_n": (len(set_acc), len(base_acc))}
        if len(set_acc) >= stats.MIN_SPREAD_RUNS and len(base_acc) >= stats.MIN_SPREAD_RUNS:
            sd_base = base_acc.std(ddof=1)
            row["spread_ratio"] = float(set_acc.std(ddof=1) / sd_base) if sd_base > 0 else float("nan")
            p = float(sps.levene(set_acc, base_acc, center="median").pvalue)
            row["spread_p"] = p if np.isfinite(p) else float("nan")
            if not np.isfinite(p):
                setting.notes.append("spread not tested: no spread of absolute deviations")
        else:
            row.update(spread_ratio=float("nan"), spread_p=float("nan"))
            setting.notes.append(f"spread not tested: needs >= {stats.MIN_SPREAD_RUNS} ok runs per arm")
        return row

    def family(self, rows: list[dict], context: Context) -> None:
        holm_into(rows, "spread_p", None)  # Brown-Forsythe: NaN only where it has no test
        k_spread = sum(np.isfinite(row["spread_p"]) for row in rows)
        powers: dict[tuple[int, int], float] = {}  # one simulation per pair of arm sizes
        for row in rows:
            if np.isfinite(row["spread_p"]):
                sizes = row["_spread_n"]
                if sizes not in powers:
                    powers[sizes] = stats.spread_power(*sizes, stats.SIGNIFICANCE / k_spread,
                                                       n_sim=context.n_spread_sim, rng_seed=context.rng_seed)
                row["spread_power_1_5x"] = powers[sizes]
            else:
                row["spread_power_1_5x"] = float("nan")

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        return verdict_of(table, context.n_spread_sim, context.rng_seed)

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        base_sd = view.baseline["std_acc"].iloc[0] if len(view.baseline) else float("nan")
        return text.markdown_table(pd.DataFrame({
            "setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()],
            "n": rows["n"].map(lambda v: cell(int(v)) if v == v else "-"),
            "sd of test acc pp": rows["std_acc"].map(cell), "baseline sd": cell(base_sd),
            "sd ratio": rows["spread_ratio"].map(lambda v: cell(v, 2)),
            "Brown-Forsythe p (Holm)": rows["spread_p_holm"].map(text.p_cell),
            "power for a 1.5x smaller sd": rows["spread_power_1_5x"].map(lambda v: cell(v, 2)),
        }))

    def heat_call(self, row) -> HeatCall:
        """sd ratio < 1 with Brown-Forsythe Holm p < 0.05: supports; ratio > 1 with Holm p < 0.05
        (a larger spread): against; neither with >= 80 % power to find a 1.5x smaller sd (the
        per-setting part of "not supported"): shown not to; else undecided. The text: the sd ratio."""
        if row.get("n_diverged", 0) > 0:
            return HeatCall(HEAT_DIVERGED)
        p, ratio = row.get("spread_p_holm", float("nan")), row.get("spread_ratio", float("nan"))
        if not np.isfinite(row.get("spread_p", float("nan"))):
            return HeatCall(HEAT_NOT_TESTED)
        text_ = f"sd x{ratio:.2f}" if ratio == ratio else ""
        if p < stats.SIGNIFICANCE and ratio < 1:
            return HeatCall(HEAT_SUPPORTS, text_)
        if p < stats.SIGNIFICANCE and ratio > 1:
            return HeatCall(HEAT_AGAINST, text_)
        if row.get("spread_power_1_5x", float("nan")) >= POWER:
            return HeatCall(HEAT_SHOWN_NOT, text_)
        return HeatCall(HEAT_UNDECIDED, text_)

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        return {"sd ratio, median": text.cell(live["spread_ratio"].median(), 2)}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        significant = live["spread_p_holm"] < stats.SIGNIFICANCE
        return {"sd_smaller": count((live["spread_ratio"] < 1) & significant),
                "sd_larger": count((live["spread_ratio"] > 1) & significant)}

    def axis_clause(self, findings: dict) -> str | None:
        spread = [f"{findings[k]} {w}" for k, w in (("sd_smaller", "smaller"), ("sd_larger", "larger")) if findings[k]]
        return "sd " + ", ".join(spread) if spread else None


CLAIM = Stability()
