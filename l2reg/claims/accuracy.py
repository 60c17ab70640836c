"""The accuracy claim: L2 regularization "clearly raises test accuracy".

Per setting, paired by seed: d = test_acc(setting) - test_acc(baseline), m = min_effect_pp. The
one-sample t-tests of l2reg.stats.paired_margin_tests, Holm over the settings of the context for
superiority, equivalence, worse and above-zero (inferiority enters an intersection-union test
uncorrected), and a call per setting. Alongside, not decisive: Welch's unpaired test, Hedges' g and
a two-level bootstrap over seeds and test images (with the count of images two paired runs
predict differently). The verdict at each margin of SENSITIVITY_MARGINS_PP goes to verdict.json as
the context's sensitivity table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from l2reg import stats, text
from l2reg.claims.base import (
    ABOVE_ZERO_ONLY,
    BASELINE,
    BETTER,
    DIVERGED,
    EQUIVALENT,
    HEAT_AGAINST,
    HEAT_DIVERGED,
    HEAT_NOT_TESTED,
    HEAT_SHOWN_NOT,
    HEAT_SUPPORTS,
    HEAT_UNDECIDED,
    INCONCLUSIVE,
    NO_PREDICTIONS,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    UNDECIDED,
    WORSE,
    Claim,
    Context,
    HeatCall,
    SectionView,
    Setting,
    column,
    names_of,
    seeds_for_margin,
    split_diverged,
    verdict_dict,
)

SENSITIVITY_MARGINS_PP = (0.05, 0.1, 0.2, 0.3)
TEST_COLUMNS = [
    "paired_n", "delta_pp", "paired_sd_pp", "paired_ci_low_pp", "paired_ci_high_pp",
    "p_superior", "p_superior_holm", "p_inferior", "p_equivalent", "p_equivalent_holm",
    "p_worse", "p_worse_holm", "p_above_zero", "p_above_zero_holm", "call",
]
COLUMNS = (
    "paired_n", "delta_pp", "delta_images", "paired_sd_pp", "paired_ci_low_pp", "paired_ci_high_pp",
    "p_superior", "p_superior_holm", "p_inferior", "p_equivalent", "p_equivalent_holm",
    "p_worse", "p_worse_holm", "p_above_zero", "p_above_zero_holm", "call",
    "welch_ci_low_pp", "welch_ci_high_pp", "welch_p", "hedges_g",
    "boot_n", "boot_ci_low_pp", "boot_ci_high_pp", "disagreements",
)
TESTS = ("paired by seed, d = test_acc(setting) - test_acc(baseline); one-sample t-tests (scipy "
         "ttest_1samp): better = H0 mean d <= m rejected at Holm 0.05 over the settings of the context; "
         "not supported = every setting's H0 mean d >= m rejected at 0.05 (intersection-union test, no "
         "correction); TOST within +-m and H0 mean d >= 0 for the equivalent/worse calls, Holm")


def call(row) -> str:
    """The first that applies: not tested (< 2 pairs), better (p_superior_holm < 0.05), equivalent
    (p_equivalent_holm < 0.05), worse (p_worse_holm < 0.05), above zero, not shown above m (p_above_zero_holm
    < 0.05), undecided."""
    if not row["paired_n"] >= 2:
        return NOT_TESTED
    for name, verdict in (("p_superior_holm", BETTER), ("p_equivalent_holm", EQUIVALENT),
                          ("p_worse_holm", WORSE), ("p_above_zero_holm", ABOVE_ZERO_ONLY)):
        if row[name] < stats.SIGNIFICANCE:
            return verdict
    return UNDECIDED


def family_tests(diffs: Sequence, margin: float) -> pd.DataFrame:
    """One family (the settings of one context): stats.paired_margin_tests per setting, Holm across
    the family for p_superior, p_equivalent, p_worse and p_above_zero (p_inferior is used without
    correction, in an intersection-union test), and the call. Rows in the order of ``diffs``."""
    table = pd.DataFrame([stats.paired_margin_tests(d, margin) for d in diffs],
                         columns=[c for c in TEST_COLUMNS if not c.endswith("_holm") and c != "call"])
    for name in ("p_superior", "p_equivalent", "p_worse", "p_above_zero"):
        table[f"{name}_holm"] = stats.holm_family(table[name], table["paired_n"]) if len(table) else []
    table["call"] = [call(row) for _, row in table.iterrows()]
    return table[TEST_COLUMNS]


def bootstrap_row(setting: pd.DataFrame, baseline: pd.DataFrame, predictions, labels, n_boot: int,
                  rng_seed: int) -> dict:
    """The seed-and-image bootstrap CI of the gain and the mean count of test images two paired
    runs predict differently, from the runs' per-image predictions; a note when they lack them."""
    row = {"boot_n": 0, "boot_ci_low_pp": float("nan"), "boot_ci_high_pp": float("nan"),
           "disagreements": float("nan"), "boot_note": None}
    predictions, labels = predictions or {}, labels or {}
    pairs = setting[["seed", "run_id"]].merge(baseline[["seed", "run_id"]], on="seed", suffixes=("", "_base"))
    correct_s, correct_b, differ = [], [], []
    for set_id, base_id in zip(pairs.sort_values("seed")["run_id"], pairs.sort_values("seed")["run_id_base"]):
        if set_id not in predictions or base_id not in predictions:
            continue
        truth = labels.get(set_id, labels.get(base_id))
        if truth is None:
            continue
        truth = np.asarray(truth)
        other = labels.get(base_id)
        if other is not None and not np.array_equal(np.asarray(other), truth):
            raise ValueError(f"runs {set_id} and {base_id} have different test labels")
        pred_s, pred_b = np.asarray(predictions[set_id]), np.asarray(predictions[base_id])
        if not (pred_s.shape == pred_b.shape == truth.shape):
            raise ValueError(f"runs {set_id} and {base_id}: predictions and labels differ in length")
        correct_s.append(pred_s == truth)
        correct_b.append(pred_b == truth)
        differ.append(int((pred_s != pred_b).sum()))
    if len(correct_s) < 2:
        row["boot_note"] = (f"bootstrap: {NO_PREDICTIONS}" if len(pairs) >= 2 else
                            "bootstrap: fewer than 2 paired seeds")
        return row
    low, high, _ = stats.bootstrap_gain(np.array(correct_s), np.array(correct_b), n_boot, rng_seed)
    row.update(boot_n=len(correct_s), boot_ci_low_pp=low, boot_ci_high_pp=high,
               disagreements=float(np.mean(differ)))
    if len(correct_s) < len(pairs):
        row["boot_note"] = f"bootstrap over {len(correct_s)} of {len(pairs)} paired seeds ({NO_PREDICTIONS})"
    return row


def line(row, margin: float) -> str:
    """One setting's accuracy evidence in a sentence."""
    f, p = text.number, text.p_value
    sentence = (f"{row['name']}: {f(row['delta_pp'])} pp ({f(row.get('delta_images', float('nan')), 1)} images), "
                f"paired 95 % CI {f(row['paired_ci_low_pp'])} to {f(row['paired_ci_high_pp'])} pp, "
                f"n = {int(row['paired_n'])} seeds, Holm p (gain > {margin:g} pp) = {p(row['p_superior_holm'])}, "
                f"p (gain < {margin:g} pp) = {p(row['p_inferior'])}")
    if np.isfinite(row.get("boot_ci_low_pp", float("nan"))):
        sentence += (f", seed-and-image bootstrap 95 % CI {f(row['boot_ci_low_pp'])} to {f(row['boot_ci_high_pp'])} "
                     f"pp ({f(row['disagreements'], 1, False)} images predicted differently per seed)")
    return sentence


def verdict_of(table: pd.DataFrame, margin: float) -> dict:
    """Accuracy verdict for one context from its setting rows (columns of family_tests, "name").

    supported: some setting's call is better. not supported: every setting has p_inferior < 0.05
    (intersection-union test). not tested: no setting has 2 pairs. Else inconclusive, with the seeds
    that would decide it (base.seeds_for_margin)."""
    level = stats.SIGNIFICANCE
    k_all = len(table)
    live, diverged, diverged_reason = split_diverged(table)
    tested = live[live["paired_n"] >= 2]
    k = len(tested)
    if k == 0 and not len(diverged):
        why = "no regularized setting in this context" if k_all == 0 else (
            f"none of the {k_all} settings has 2 seeds paired with an ok baseline run")
        return verdict_dict(NOT_TESTED, [why], margin, None, TESTS)
    untested = live[live["paired_n"] < 2]
    if k == 0:  # every setting that could be judged diverged
        verdict = NOT_SUPPORTED if not len(untested) else INCONCLUSIVE
        return verdict_dict(verdict, diverged_reason + ([f"{len(untested)} setting(s) could not be tested: "
                                                         f"{names_of(untested)}"] if len(untested) else []),
                            margin, None, TESTS)
    k_holm = int((table["paired_n"] >= 2).sum())  # Holm's family: every setting with 2 pairs, diverged ones too
    counts = tested["call"].value_counts()
    better = tested[tested["call"] == BETTER].sort_values("delta_pp", ascending=False)
    best = tested.sort_values("delta_pp", ascending=False).iloc[0]
    reasons = []
    if len(better):
        reasons.append(f"{len(better)} of {k} settings raise test accuracy by more than {margin:g} pp (one-sided "
                       f"paired t-test against {margin:g} pp, Holm over {k_holm} settings, p < {level})")
        reasons += [line(row, margin) for _, row in better.iterrows()]
        verdict, seeds = SUPPORTED, None
    elif len(untested) == 0 and (tested["p_inferior"] < level).all():
        reasons.append(f"every one of the {k} settings is shown to gain less than {margin:g} pp (intersection-union "
                       f"test: each one-sided p < {level}, the largest {text.p_value(tested['p_inferior'].max())})")
        equivalent = tested[tested["call"] == EQUIVALENT]
        below_zero = tested[tested["p_worse_holm"] < level]
        reasons.append(f"equivalent to the baseline within +-{margin:g} pp: {names_of(equivalent)}")
        reasons.append(f"significantly below the baseline (Holm p < {level}, whatever the call): "
                       f"{names_of(below_zero)}")
        rest = tested[~tested["call"].isin([EQUIVALENT]) & ~(tested["p_worse_holm"] < level)]
        if len(rest):
            reasons.append(f"below {margin:g} pp but neither shown equivalent nor below zero: {names_of(rest)}")
        reasons.append("highest observed gain: " + line(best, margin))
        verdict, seeds = NOT_SUPPORTED, None
    else:
        verdict = INCONCLUSIVE
        open_rows = tested[~(tested["p_inferior"] < level)]
        if len(open_rows):
            reasons.append(f"no setting is shown to raise test accuracy by more than {margin:g} pp, and "
                           f"{len(open_rows)} of {k} tested settings are not shown to gain less than {margin:g} pp: "
                           f"{names_of(open_rows)}")
        else:
            reasons.append(f"every tested setting is shown to gain less than {margin:g} pp, but not every setting "
                           "could be tested")
        reasons.append("highest observed gain: " + line(best, margin))
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) could not be tested (fewer than 2 paired seeds): "
                           f"{names_of(untested)}")
        seeds, why = seeds_for_margin(tested, margin, k_holm, "delta_pp", "paired_sd_pp", "p_inferior")
        reasons.append(why)
    reasons += diverged_reason
    shown = (BETTER, EQUIVALENT, WORSE, ABOVE_ZERO_ONLY, UNDECIDED)
    reasons.append("calls: " + ", ".join(f"{counts.get(c, 0)} {c}" for c in shown)
                   + (f", {len(diverged)} diverged" if len(diverged) else "")
                   + (f", {len(untested)} not tested" if len(untested) else ""))
    no_boot = tested[~np.isfinite(tested["boot_ci_low_pp"].astype(float))] if "boot_ci_low_pp" in tested else tested
    if len(no_boot):
        reasons.append(f"no seed-and-image bootstrap for {len(no_boot)} of {k} settings: {NO_PREDICTIONS} "
                       "(or fewer than 2 paired seeds have them)")
    return verdict_dict(verdict, reasons, margin, seeds, TESTS)


def sensitivity_table(table: pd.DataFrame, diffs: Sequence, margins: Sequence[float] = SENSITIVITY_MARGINS_PP) -> list:
    """The accuracy verdict of one context at each margin: [{min_effect_pp, verdict, better, equivalent,
    worse}], the tests recomputed from the paired differences ``diffs`` (rows of ``table``) at each m."""
    out = []
    for margin in margins:
        tests = family_tests(diffs, margin)
        tests["name"] = list(table["name"])
        for name in ("n", "n_not_ok", "n_diverged"):  # a setting with a diverged run is never better
            tests[name] = list(table[name]) if name in table else 0
        tests.loc[tests["n_diverged"] > 0, "call"] = DIVERGED
        verdict = verdict_of(tests, margin)["verdict"]
        out.append({"min_effect_pp": float(margin), "verdict": verdict,
                    **{c: int((tests["call"] == c).sum()) for c in (BETTER, EQUIVALENT, WORSE)}})
    return out


class Accuracy(Claim):
    name = "accuracy"
    words = "clearly raises test accuracy (明显提高测试准确率)"
    metrics = ("test_acc",)
    columns = COLUMNS
    tests = TESTS
    sensitivity_margins = SENSITIVITY_MARGINS_PP

    def baseline_row(self, context: Context) -> dict:
        return {"delta_pp": 0.0, "delta_images": 0.0, "call": BASELINE}

    def setting_row(self, setting: Setting, context: Context) -> dict:
        d = setting.paired("test_acc")
        if len(d) < 2:
            setting.notes.append(f"accuracy not tested: {len(d)} paired seed(s), needs 2"
                                 + ("" if len(setting.baseline) else " (no ok baseline run)"))
        row = {"_accuracy_d": d, "delta_images": float(d.mean()) / 100 * context.n_test if len(d) else float("nan")}
        base_acc = column(setting.baseline, "test_acc").dropna().to_numpy()
        row.update(stats.welch(column(setting.ok, "test_acc"), base_acc))
        boot = bootstrap_row(setting.ok, setting.baseline, context.predictions, context.labels, context.n_boot,
                             context.rng_seed)
        note = boot.pop("boot_note")
        if note:
            setting.notes.append(note)
        row.update(boot)
        return row

    def family(self, rows: list[dict], context: Context) -> None:
        tests = family_tests([row["_accuracy_d"] for row in rows], context.min_effect_pp)
        for row, (_, test) in zip(rows, tests.iterrows()):
            row.update(test.to_dict())
            if row["n_diverged"]:  # its survivors alone would hide the failures (declared rule)
                row["call"] = DIVERGED

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        return verdict_of(table, context.min_effect_pp)

    def context_extras(self, table: pd.DataFrame, rows: list[dict], context: Context) -> dict:
        return {"sensitivity": sensitivity_table(table, [row["_accuracy_d"] for row in rows], self.sensitivity_margins)}

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        return text.markdown_table(pd.DataFrame({
            "setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()],
            "n": rows["n"].map(lambda v: cell(int(v)) if v == v else "-"),
            "failed": rows["n_not_ok"].map(lambda v: cell(int(v)) if v == v else "-"),
            "mean acc %": rows["mean_acc"].map(cell), "sd": rows["std_acc"].map(cell),
            "delta pp (paired)": rows["delta_pp"].map(lambda v: cell(v, signed=True)),
            "95 % CI (paired t)": [text.interval(lo, hi) for lo, hi in zip(rows["paired_ci_low_pp"],
                                                                           rows["paired_ci_high_pp"])],
            "95 % CI (bootstrap)": [text.interval(lo, hi) for lo, hi in zip(rows["boot_ci_low_pp"],
                                                                            rows["boot_ci_high_pp"])],
            "images differing": rows["disagreements"].map(lambda v: cell(v, 0)),
            "p > m (Holm)": rows["p_superior_holm"].map(text.p_cell),
            "p within +-m (Holm)": rows["p_equivalent_holm"].map(text.p_cell),
            "p < m": rows["p_inferior"].map(text.p_cell), "call": rows["call"],
        }))

    def section(self, view: SectionView) -> list[str]:
        verdict, m, sens = view.verdict, view.min_effect_pp, view.extras["sensitivity"]
        return [
            f"{view.heading} Accuracy: {verdict['verdict']}", "", *[f"- {r}." for r in verdict["reasons"]], "",
            f"Paired by seed: delta = setting minus baseline, same seed (init, data order, dropout masks); "
            f"m = {m:g} pp. Calls: better (p > m, Holm), equivalent (TOST within +-m, Holm), worse (below 0, Holm), "
            "above zero (not shown above m): above 0 (Holm), whether above m is open, undecided. The bootstrap "
            "CI resamples seeds and test images (reported alongside, not decisive).", "",
            self.table(view), "",
            f"{view.heading} Sensitivity to the margin", "",
            text.markdown_table(pd.DataFrame({"m (pp)": [f"{r['min_effect_pp']:g}" for r in sens],
                                              "accuracy verdict": [r["verdict"] for r in sens],
                                              "better": [str(r["better"]) for r in sens],
                                              "equivalent": [str(r["equivalent"]) for r in sens],
                                              "worse": [str(r["worse"]) for r in sens]})), "",
        ]

    def heat_call(self, row) -> HeatCall:
        """better: supports; worse (shown below 0, Holm): against; another tested setting with
        p_inferior < 0.05 (its gain shown below m, the per-setting part of "not supported"): shown
        not to ("equivalent" or "below m"); else undecided ("above 0" when only that is shown).
        The text: that call and the paired gain in pp."""
        verdict, gain = row.get("call"), row.get("delta_pp", float("nan"))
        signed = f"{gain:+.2f}" if gain == gain else ""
        if verdict == DIVERGED:
            return HeatCall(HEAT_DIVERGED)
        if not row.get("paired_n", 0) >= 2 or verdict == NOT_TESTED:
            return HeatCall(HEAT_NOT_TESTED)
        if verdict == BETTER:
            return HeatCall(HEAT_SUPPORTS, f"better {signed}")
        if verdict == WORSE:
            return HeatCall(HEAT_AGAINST, f"worse {signed}")
        if row.get("p_inferior", float("nan")) < stats.SIGNIFICANCE:
            return HeatCall(HEAT_SHOWN_NOT, f"{'equivalent' if verdict == EQUIVALENT else 'below m'} {signed}")
        return HeatCall(HEAT_UNDECIDED, f"{'above 0 ' if verdict == ABOVE_ZERO_ONLY else ''}{signed}")

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        best = live.loc[live["delta_pp"].idxmax()] if live["delta_pp"].notna().any() else None
        calls = ", ".join(f"{n} {c}" for c, n in everything["call"].value_counts().items())
        return {"accuracy gain pp, mean": text.cell(live["delta_pp"].mean(), 3, True),
                "best (setting)": "-" if best is None else text.cell(best["delta_pp"], 3, True)
                + (f" ({text.setting_name(best, others)})" if others else ""),
                "accuracy calls": calls}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        return {"calls": live["call"].value_counts().to_dict(), "mean_gain_pp": float(live["delta_pp"].mean())}

    def axis_clause(self, findings: dict) -> str | None:
        calls = findings["calls"]
        counted = [f"{calls.get(BETTER, 0)} better"] + [
            f"{calls[c]} {c}" for c in (ABOVE_ZERO_ONLY, EQUIVALENT, WORSE, UNDECIDED, NOT_TESTED) if calls.get(c)]
        return f"accuracy {', '.join(counted)}"  # always a clause: "0 better" is a finding


CLAIM = Accuracy()
