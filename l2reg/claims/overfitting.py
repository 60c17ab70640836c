"""The overfitting claim: L2 regularization "reduces overfitting".

Paired by seed over the seeds with train and test accuracy: gap = train_acc - test_acc, d =
gap(setting) - gap(baseline), a = test_acc(setting) - test_acc(baseline). A setting supports the
claim when its gap shrinks by more than m AND its test accuracy is held (a gap closed by lower test
accuracy would be underfitting): both one-sided t-tests joined as the larger p (intersection-union),
Holm over the settings. Test loss and train accuracy are reported alongside.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from l2reg import stats, text
from l2reg.claims.base import (
    ABOVE_ZERO_ONLY,
    BETTER,
    HEAT_DIVERGED,
    HEAT_NOT_TESTED,
    HEAT_SHOWN_NOT,
    HEAT_SUPPORTS,
    HEAT_UNDECIDED,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    WORSE,
    Claim,
    Context,
    HeatCall,
    SectionView,
    Setting,
    column,
    count,
    holm_into,
    names_of,
    paired_differences,
    split_diverged,
    verdict_dict,
    with_spread,
)

COLUMNS = (
    "train_acc_delta_pp", "train_acc_p", "gap_n", "gap_delta_pp", "gap_sd_pp", "gap_ci_low_pp", "gap_ci_high_pp",
    "gap_p", "gap_p_holm", "gap_p_above_margin", "acc_held_p", "acc_below_p", "support_p", "support_p_holm",
    "test_loss_delta", "test_loss_p", "test_loss_p_holm",
)

TESTS = ("paired by seed over the seeds with train and test accuracy, gap = train_acc - test_acc, d = "
                     "gap(setting) - gap(baseline), a = test_acc(setting) - test_acc(baseline); a setting supports the "
                     "claim if its gap shrinks by more than m (H0 mean d >= -m) AND its test accuracy is held (H0 mean "
                     "a <= -m): both one-sided t-tests, joined as p = max of the two (intersection-union), Holm 0.05 "
                     "over the settings; supported = some setting supports it; not supported = every setting shown "
                     "not to: its gap change shown above -m (H0 mean d <= -m) or its test accuracy shown below -m (H0 "
                     "mean a >= -m), each at 0.025; test loss (H0 mean change >= 0, Holm) and train accuracy reported "
                     "alongside")


def gap_line(row) -> str:
    """One setting's gap evidence in a sentence."""
    f, p = text.number, text.p_value
    return (f"{row['name']}: train-test gap {f(row['gap_delta_pp'])} pp (95 % CI {f(row['gap_ci_low_pp'])} to "
            f"{f(row['gap_ci_high_pp'])}, n = {int(row['gap_n'])} seeds, Holm p = {p(row['gap_p_holm'])}), "
            f"train accuracy {f(row['train_acc_delta_pp'])} pp, test accuracy {f(row['delta_pp'])} pp")


def how_it_shrank(row, margin: float) -> str:
    """Whether a supporting setting's test accuracy rose or its smaller gap was bought by lower
    train accuracy, from its accuracy call and train-accuracy test."""
    call, p = row["call"], text.p_value
    if call == BETTER:
        return f"and test accuracy rose by more than {margin:g} pp (accuracy call: better)"
    if call == ABOVE_ZERO_ONLY:
        return (f"and test accuracy rose, shown above 0 but not above {margin:g} pp "
                "(accuracy call: above zero (not shown above m))")
    if call == WORSE:
        return f"but test accuracy fell, by less than {margin:g} pp (accuracy call: {call})"
    if row["train_acc_delta_pp"] < 0 and row.get("train_acc_p", float("nan")) < stats.SIGNIFICANCE:
        return (f"the smaller gap was bought by lower train accuracy (paired two-sided p = "
                f"{p(row['train_acc_p'])}) with no test gain (accuracy call: {call})")
    return (f"with no test gain shown (accuracy call: {call}); the train accuracy change of "
            f"{text.number(row['train_acc_delta_pp'])} pp is not significant (p = {p(row.get('train_acc_p'))})")


def verdict_of(table: pd.DataFrame, margin: float) -> dict:
    """Overfitting claim for one context (columns gap_*, support_p_holm, acc_*_p, test_loss_*,
    train_acc_delta_pp, delta_pp, paired_sd_pp, call, name). A smaller gap counts only with the test
    accuracy held.

    supported: some setting has support_p_holm < 0.05 (support_p = max(gap_p, acc_held_p): the gap
    shrinks by more than m and the test accuracy change is shown above -m); the reasons say whether
    test accuracy rose or the smaller gap was bought by lower train accuracy; settings whose gap
    shrinks (gap_p_holm < 0.05) without that are named and do not count. not supported: every
    setting has gap_p_above_margin < 0.025 or acc_below_p < 0.025 (shown not to support it). Else
    inconclusive, with seeds_needed (seeds_to_decide)."""
    level, p = stats.SIGNIFICANCE, text.p_value
    live, diverged, diverged_reason = split_diverged(table)
    tested = live[live["gap_n"] >= 2]
    k = len(tested)
    half = level / 2  # two ways of not supporting it, Bonferroni within the setting
    if k == 0:
        if len(diverged):
            untested_live = live[live["gap_n"] < 2]
            return verdict_dict(INCONCLUSIVE if len(untested_live) else NOT_SUPPORTED, diverged_reason, margin, None,
                                TESTS)
        why = "no regularized setting in this context" if len(table) == 0 else (
            f"none of the {len(table)} settings has 2 seeds with train and test accuracy paired with the baseline")
        return verdict_dict(NOT_TESTED, [why], margin, None, TESTS)
    untested = live[live["gap_n"] < 2]
    k_holm = int((table["gap_n"] >= 2).sum())  # Holm's family: every setting with 2 pairs, diverged ones too
    shrunk = tested[tested["support_p_holm"] < level].sort_values("gap_delta_pp")
    not_held = tested[(tested["gap_p_holm"] < level) & ~(tested["support_p_holm"] < level)]
    shown_not = (tested["gap_p_above_margin"] < half) | (tested["acc_below_p"] < half)
    reasons = []
    if len(shrunk):
        verdict, seeds = SUPPORTED, None
        reasons.append(f"{len(shrunk)} of {k} settings shrink the train-test accuracy gap by more than {margin:g} pp "
                       f"with test accuracy held within -{margin:g} pp (both one-sided paired t-tests, joined as the "
                       f"larger p, Holm over {k_holm} settings, p < {level})")
        reasons += [gap_line(row) + f" (joint Holm p = {p(row['support_p_holm'])}): " + how_it_shrank(row, margin)
                    for _, row in shrunk.iterrows()]
    elif len(untested) == 0 and shown_not.all():
        verdict, seeds = NOT_SUPPORTED, None
        below = tested[tested["acc_below_p"] < half]
        reasons.append(f"every one of the {k} settings is shown not to shrink the gap by more than {margin:g} pp with "
                       f"test accuracy held (intersection-union test): its gap change shown above -{margin:g} pp or "
                       f"its test accuracy shown below -{margin:g} pp, each one-sided p < {half:g}")
        if len(below):
            reasons.append(f"test accuracy shown below -{margin:g} pp (what closes their gap is lower test "
                           f"accuracy, not less overfitting): {names_of(below)}")
        reasons.append("largest observed reduction: " + gap_line(tested.sort_values("gap_delta_pp").iloc[0]))
    else:
        verdict = INCONCLUSIVE
        reasons.append(f"no setting is shown to shrink the train-test gap by more than {margin:g} pp with test "
                       f"accuracy held (Holm over {k_holm} settings), and not every setting is shown not to")
        reasons.append("largest observed reduction: " + gap_line(tested.sort_values("gap_delta_pp").iloc[0]))
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) could not be tested: {names_of(untested)}")
        seeds, why = seeds_to_decide(tested[~shown_not], margin, k_holm)
        reasons.append(why)
    if len(not_held):
        reasons.append(f"{len(not_held)} setting(s) shrink the gap by more than {margin:g} pp (Holm) without their "
                       f"test accuracy shown held within -{margin:g} pp, so they do not count (a gap closed by "
                       "lower test accuracy would be underfitting): " + "; ".join(
                           gap_line(row) + f" (one-sided p of test accuracy held {p(row['acc_held_p'])})"
                           for _, row in not_held.iterrows()))
    reasons += diverged_reason
    lower_loss = tested[tested["test_loss_p_holm"] < level]
    reasons.append(f"test loss is significantly lower than the baseline's (one-sided paired t-test, Holm) for "
                   f"{len(lower_loss)} of {k} settings: {names_of(lower_loss)} (reported, not part of the rule)")
    return verdict_dict(verdict, reasons, margin, seeds, TESTS)


def seeds_to_decide(open_rows: pd.DataFrame, margin: float, k_holm: int) -> tuple[int | None, str]:
    """seeds_needed and its sentence for an inconclusive overfitting verdict (`open_rows`: the tested
    settings not shown not to support it). Each need assumes the observed means and sds are true."""
    # both tests need paired changes with spread (the tie rule of base.with_spread)
    planned = with_spread(with_spread(open_rows, "gap_delta_pp", "gap_sd_pp"), "delta_pp", "paired_sd_pp")
    if planned.empty:
        return None, "no open setting has paired changes with spread yet (ties): no sd to plan the seeds with"
    candidates = planned[(planned["gap_delta_pp"] < -margin) & (planned["delta_pp"] > -margin)]
    if len(candidates):
        best = candidates.sort_values("gap_delta_pp").iloc[0]
        level = stats.SIGNIFICANCE / k_holm
        needs = (stats.seeds_needed(-best["gap_delta_pp"] - margin, best["gap_sd_pp"], level),
                 stats.seeds_needed(best["delta_pp"] + margin, best["paired_sd_pp"], level))
        if any(n is None for n in needs):
            return None, f"no finite number of seeds shows {best['name']}'s gap reduction with its accuracy held"
        return max(needs), (f"about {max(needs)} seeds per setting would show {best['name']}'s gap reduction beyond "
                            f"-{margin:g} pp ({needs[0]} seeds) and its test accuracy held within -{margin:g} pp "
                            f"({needs[1]} seeds), each with 80 % power at Holm's first-step level "
                            f"{stats.SIGNIFICANCE}/{k_holm} (joint power lower), if the observed means and sds were "
                            "the truth")
    needs = []
    for _, row in planned.iterrows():  # the cheaper of its two ways of being shown not to support it
        half = stats.SIGNIFICANCE / 2
        ways = [n for n in (stats.seeds_needed(row["gap_delta_pp"] + margin, row["gap_sd_pp"], half),
                            stats.seeds_needed(-margin - row["delta_pp"], row["paired_sd_pp"], half)) if n]
        needs.append(min(ways) if ways else None)
    if any(n is None for n in needs):
        return None, "no finite number of seeds decides it under the observed means and sds"
    return max(needs), (f"about {max(needs)} seeds per setting would show every open setting not to support it (its "
                        f"gap change above -{margin:g} pp or its test accuracy below -{margin:g} pp) with 80 % power "
                        f"each at {stats.SIGNIFICANCE / 2:g}, if the observed means and sds were the truth")


def _with_gap(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["_gap"] = column(frame, "train_acc") - column(frame, "test_acc")
    return frame


class Overfitting(Claim):
    name = "overfitting"
    words = "reduces overfitting (有效地减少过拟合现象)"
    metrics = ("train_acc", "test_acc", "test_loss")
    columns = COLUMNS
    tests = TESTS
    caption = ("Negative gap change = less overfitting; it counts only with the test accuracy held: the joint test "
               "(the larger of the two one-sided p, Holm) decides.", "")

    def setting_row(self, setting: Setting, context: Context) -> dict:
        margin, p = context.min_effect_pp, stats.one_sample_p
        ok, base = _with_gap(setting.ok), _with_gap(setting.baseline)
        train_d = setting.paired("train_acc")
        gap_d = paired_differences(ok, base, "_gap")[1]
        # the test-accuracy change over the gap's own seeds (those with train accuracy too)
        held_d = paired_differences(ok[ok["_gap"].notna()], base[base["_gap"].notna()], "test_acc")[1]
        loss_d = setting.paired("test_loss")
        gap_low, gap_high = stats.t_interval(gap_d)
        row = {"train_acc_delta_pp": float(train_d.mean()) if len(train_d) else float("nan"),
               "train_acc_p": p(train_d, 0.0, "two-sided"),
               "gap_n": len(gap_d), "gap_delta_pp": float(gap_d.mean()) if len(gap_d) else float("nan"),
               "gap_sd_pp": float(gap_d.std(ddof=1)) if len(gap_d) > 1 else float("nan"),
               "gap_ci_low_pp": gap_low, "gap_ci_high_pp": gap_high,
               "gap_p": p(gap_d, -margin, "less"), "gap_p_above_margin": p(gap_d, -margin, "greater"),
               # a smaller gap counts only with the test accuracy held: H0 mean <= -m; shown below -m:
               # H0 mean >= -m; joint support = the larger of gap_p and acc_held_p
               "acc_held_p": p(held_d, -margin, "greater"), "acc_below_p": p(held_d, -margin, "less"),
               "test_loss_delta": float(loss_d.mean()) if len(loss_d) else float("nan"),
               "test_loss_p": p(loss_d, 0.0, "less")}
        # intersection-union of the two one-sided tests (NaN if either is no test)
        row["support_p"] = (max(row["gap_p"], row["acc_held_p"])
                            if np.isfinite(row["gap_p"]) and np.isfinite(row["acc_held_p"]) else float("nan"))
        return row

    def family(self, rows: list[dict], context: Context) -> None:
        for name in ("gap_p", "test_loss_p", "support_p"):  # paired over the same seeds as the gap
            holm_into(rows, name, "gap_n")

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        return verdict_of(table, context.min_effect_pp)

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        return text.markdown_table(pd.DataFrame({
            "setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()],
            "gap change pp": rows["gap_delta_pp"].map(lambda v: cell(v, signed=True)),
            "95 % CI": [text.interval(lo, hi) for lo, hi in zip(rows["gap_ci_low_pp"], rows["gap_ci_high_pp"])],
            "p gap < -m (Holm)": rows["gap_p_holm"].map(text.p_cell),
            "train acc change pp": rows["train_acc_delta_pp"].map(lambda v: cell(v, signed=True)),
            "test acc change pp": rows["delta_pp"].map(lambda v: cell(v, signed=True)),
            "p test acc held > -m": rows["acc_held_p"].map(text.p_cell),
            "p gap shrinks and acc held (Holm)": rows["support_p_holm"].map(text.p_cell),
            "test loss change": rows["test_loss_delta"].map(lambda v: cell(v, 4, signed=True)),
            "p lower loss (Holm)": rows["test_loss_p_holm"].map(text.p_cell),
        }))

    def heat_call(self, row) -> HeatCall:
        """support_p_holm < 0.05 (gap shrunk by more than m, test accuracy held): supports; gap
        change shown above -m or test accuracy shown below -m (each one-sided p < 0.025, the rule's
        "shown not to"): shown not to; else undecided. The rule has no "more overfitting" call, so
        nothing here is "against". The text: the paired gap change in pp (or "acc < -m")."""
        if row.get("n_diverged", 0) > 0:
            return HeatCall(HEAT_DIVERGED)
        if not row.get("gap_n", 0) >= 2:
            return HeatCall(HEAT_NOT_TESTED)
        gap, half = row.get("gap_delta_pp", float("nan")), stats.SIGNIFICANCE / 2
        text_ = f"gap {gap:+.2f}" if gap == gap else ""
        if row.get("support_p_holm", float("nan")) < stats.SIGNIFICANCE:
            return HeatCall(HEAT_SUPPORTS, text_)
        if row.get("acc_below_p", float("nan")) < half:
            return HeatCall(HEAT_SHOWN_NOT, "acc < -m")
        if row.get("gap_p_above_margin", float("nan")) < half:
            return HeatCall(HEAT_SHOWN_NOT, text_)
        return HeatCall(HEAT_UNDECIDED, text_)

    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        return {"gap change pp, mean": text.cell(live["gap_delta_pp"].mean(), 3, True)}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        level = stats.SIGNIFICANCE
        support = (live["support_p_holm"] < level).to_numpy()
        shrunk = (live["gap_p_holm"] < level).to_numpy()
        return {"gap_support": count(support), "gap_shrunk_not_held": count(shrunk & ~support)}

    def axis_clause(self, findings: dict) -> str | None:
        gap = ([f"{findings['gap_support']} shrunk with test accuracy held"] if findings["gap_support"] else []) + (
            [f"{findings['gap_shrunk_not_held']} shrunk without test accuracy shown held (does not count)"]
            if findings["gap_shrunk_not_held"] else [])
        return "gap " + ", ".join(gap) if gap else None


CLAIM = Overfitting()
