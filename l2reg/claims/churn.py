"""The stability claim by churn: L2 regularization "makes the model more stable", read as "two seeds
of the model disagree on fewer test images".

Declared after a reviewer had read the committed screens (issue 23, point 4): on those screens this
claim is EXPLORATORY -- the rule was written knowing their churn figures; it is confirmatory only in a
confirmation study whose plan lists it before its first run.

Definitions (l2reg.stats' churn section computes them):
- d(r, s) = the number of test images on which runs r and s predict different labels; an arm's churn
  over a set of seeds = the mean of d over the distinct pairs of its ok runs on those seeds (images;
  also shown as % of the test images).
- Per setting, over the seeds both the setting and the context's baseline have with per-image
  predictions (>= stats.MIN_CHURN_PAIRS = 3, else not tested, with a note): churn(setting),
  churn(baseline), delta = churn(setting) - churn(baseline) (images).
- A one-sided permutation test (stats.churn_permutation_test) of the sharp null "within each seed the
  two arms' runs are exchangeable" against lower churn: arm labels swapped within a subset of seeds,
  exact over all 2^n subsets for n <= 12, else 10,000 random subsets with the observed one counted;
  p_lower. Holm over the tested settings of the context (stats.holm_family; diverged settings stay in
  the family). The jackknife-t interval of delta over seeds (stats.churn_interval: leave-one-seed-out
  pseudo-values, Student's t with n - 1 degrees of freedom): its 95 % interval, and delta - t_(n-1,
  0.95) * se as the one-sided 95 % lower bound (stats.churn_lower_bound). It replaced a percentile
  bootstrap over seeds that covered about 0.89 (two-sided) and 0.90 (one-sided) for the nominal 0.95
  at 10 seeds in simulation; the jackknife-t covered about 0.95 both ways (tests/unit/test_churn.py).
- Margin m_c = the accuracy margin in images: min_effect_pp / 100 * n_test (10 images at 0.1 pp of
  10,000).

Verdict per context: supported = some setting without a diverged run has p_lower_holm < 0.05; not
supported = every setting tested and every one's one-sided 95 % lower bound of delta above -m_c
(shown not to lower churn by m_c; intersection-union, diverged settings count as shown); not tested =
no setting has 3 paired seeds with predictions; else inconclusive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from l2reg import stats, text
from l2reg.claims.base import (
    BASELINE,
    DIVERGED,
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
    Claim,
    Context,
    HeatCall,
    SectionView,
    Setting,
    count,
    names_of,
    split_diverged,
    verdict_dict,
)

MIN_PAIRS = stats.MIN_CHURN_PAIRS
ONE_SIDED_CONFIDENCE = 1 - stats.SIGNIFICANCE  # the lower bound: delta - t_(n-1, 0.95) * jackknife se
LOWER = "lower churn"
NOT_LOWER = "not lower by m"  # one-sided 95 % lower bound of delta above -m_c
COLUMNS = ("churn_n", "churn", "churn_pct", "churn_baseline", "churn_delta", "churn_delta_pct", "churn_ci_low",
           "churn_ci_high", "churn_lower_bound", "churn_p_lower", "churn_p_lower_holm", "churn_call")
DECLARED = ("declared after the committed screens were read: exploratory there; confirmatory only in a "
            "confirmation study whose plan lists it")
TESTS = ("churn = mean over the distinct pairs of an arm's seeds of the test images two runs predict "
         f"differently, over the seeds both arms have with predictions (>= {MIN_PAIRS}); delta = churn(setting) - "
         "churn(baseline), images; one-sided permutation test of the sharp null that within each seed the two "
         "arms' runs are exchangeable (arm labels swapped within seeds: all 2^n subsets for n <= "
         f"{stats.CHURN_EXACT_UP_TO}, else {stats.N_CHURN_PERMUTATIONS:,} random ones), Holm over the settings; "
         "supported = some setting with Holm p < 0.05 (lower churn); not supported = every setting's one-sided "
         "95 % lower bound of delta (jackknife-t over seeds: delta - t_(n-1) * the leave-one-seed-out se) above "
         "-m_c, m_c = the accuracy margin in images (intersection-union)")


def n_test_images(context: Context) -> float:
    """N, the context's number of test images (its runs' n_test; else the predictions' length)."""
    n_test = context.n_test
    if np.isfinite(n_test):
        return float(n_test)
    lengths = [len(p) for p in context.predictions.values()]
    return float(np.median(lengths)) if lengths else float("nan")


def margin_images(context: Context) -> float:
    """m_c = min_effect_pp / 100 * N: the accuracy margin as a count of test images."""
    return context.min_effect_pp / 100 * n_test_images(context)


def _stack(run_ids, context: Context) -> np.ndarray:
    """The runs' predictions, (runs, N), checked to share one set of test labels where labels exist."""
    labelled = [(r, np.asarray(context.labels[r])) for r in run_ids if r in context.labels]
    for run_id, other in labelled[1:]:
        if not np.array_equal(other, labelled[0][1]):
            raise ValueError(f"run {run_id} has other test labels than run {labelled[0][0]}: churn compares runs "
                             "on one test set")
    arrays = [np.asarray(context.predictions[r]) for r in run_ids]
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"runs {', '.join(run_ids)} have predictions of different lengths")
    return np.stack(arrays)


def arm_churn(runs: pd.DataFrame, context: Context) -> tuple[int, float]:
    """(number of runs with predictions, the churn over them in images; NaN below 2 runs)."""
    ids = [r for r in runs.sort_values("seed", kind="stable")["run_id"] if r in context.predictions]
    if len(ids) < 2:
        return len(ids), float("nan")
    counts = stats.disagreement_counts(_stack(ids, context))
    return len(ids), float(stats.churn(counts, np.arange(len(ids)))[0])


def paired_predictions(setting: pd.DataFrame, baseline: pd.DataFrame, context: Context) -> tuple[np.ndarray, ...]:
    """(seeds, setting predictions (n, N), baseline predictions (n, N)) over the seeds both arms have
    with predictions, in seed order."""
    pairs = setting[["seed", "run_id"]].merge(baseline[["seed", "run_id"]], on="seed", suffixes=("", "_base"))
    pairs = pairs.sort_values("seed", kind="stable")
    known = list(context.predictions)
    pairs = pairs[pairs["run_id"].isin(known) & pairs["run_id_base"].isin(known)]
    if not len(pairs):
        return np.array([]), np.empty((0, 0)), np.empty((0, 0))
    both = _stack([*pairs["run_id"], *pairs["run_id_base"]], context)
    n = len(pairs)
    return pairs["seed"].to_numpy(), both[:n], both[n:]


def call(row: dict, margin: float) -> str:
    """diverged; not tested (< 3 pairs); lower churn (p_lower_holm < 0.05); not lower by m (one-sided
    95 % lower bound of delta above -m_c); undecided."""
    if row.get("n_diverged", 0):
        return DIVERGED
    if not row["churn_n"] >= MIN_PAIRS:
        return NOT_TESTED
    if row["churn_p_lower_holm"] < stats.SIGNIFICANCE:
        return LOWER
    if row["churn_lower_bound"] > -margin:
        return NOT_LOWER
    return UNDECIDED


def line(row, n_test: float) -> str:
    """One setting's decisive numbers in a sentence."""
    f, p = text.number, text.p_value
    pct = 100 / n_test if n_test else float("nan")
    return (f"{row['name']}: churn {f(row['churn'], 1, False)} images vs the baseline's "
            f"{f(row['churn_baseline'], 1, False)} on the same {int(row['churn_n'])} seeds, delta "
            f"{f(row['churn_delta'], 1)} images ({f(row['churn_delta'] * pct, 2)} % of the test images), "
            f"jackknife-t 95 % CI {f(row['churn_ci_low'], 1)} to {f(row['churn_ci_high'], 1)}, one-sided 95 % lower "
            f"bound {f(row['churn_lower_bound'], 1)}, permutation Holm p (lower churn) = "
            f"{p(row['churn_p_lower_holm'])}, n = {int(row['churn_n'])}")


def verdict_of(table: pd.DataFrame, margin: float, n_test: float, baseline: tuple[int, float] | None = None) -> dict:
    """Churn verdict for one context from its setting rows (COLUMNS, "name", "n_diverged"); `margin`
    m_c in images, `n_test` N, `baseline` (runs, churn) of the baseline arm for the reasons."""
    f, level = text.number, stats.SIGNIFICANCE
    pct = 100 / n_test if n_test else float("nan")
    extra = {"margin_images": margin, "n_test": n_test, "declared": DECLARED}
    margin_pp = margin * pct  # the accuracy margin it was derived from
    live, diverged, diverged_reason = split_diverged(table)
    has_pairs = table["churn_n"].fillna(0) >= MIN_PAIRS
    k_holm = count(has_pairs)
    tested = live[live["churn_n"].fillna(0) >= MIN_PAIRS]
    untested = live[~(live["churn_n"].fillna(0) >= MIN_PAIRS)]
    base_reason = ([] if baseline is None or not np.isfinite(baseline[1]) else
                   [f"baseline churn {f(baseline[1], 1, False)} images ({f(baseline[1] * pct, 2, False)} % of "
                    f"{int(n_test)} test images) over its {baseline[0]} runs with predictions"])
    if k_holm == 0:
        why = "no regularized setting in this context" if not len(table) else (
            f"none of the {len(table)} settings has {MIN_PAIRS} seeds paired with an ok baseline run, both with "
            f"per-image predictions ({NO_PREDICTIONS}, or too few seeds)")
        return verdict_dict(NOT_TESTED, [why], margin_pp, None, TESTS, **extra)
    lower = tested[tested["churn_call"] == LOWER].sort_values("churn_delta")
    reasons: list[str] = []
    none_lower = "no setting" + (" without a diverged run" if len(diverged) else "") + " has significantly lower churn"
    if not len(tested):  # every setting with enough pairs diverged: none supports, the untested keep it open
        verdict = INCONCLUSIVE if len(untested) else NOT_SUPPORTED
        reasons += [r.replace("not supporting the claim", "not supporting the claim (never lower churn)")
                    for r in diverged_reason]
        diverged_reason = []
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) not tested (fewer than {MIN_PAIRS} seeds paired with the "
                           f"baseline with predictions): {names_of(untested)}")
    elif len(lower):
        verdict = SUPPORTED
        reasons.append(f"{len(lower)} of {len(tested)} settings have lower churn than the baseline (one-sided "
                       f"permutation test, Holm over {k_holm} setting(s), p < {level})")
        reasons += [line(row, n_test) for _, row in lower.iterrows()]
    elif not len(untested) and (tested["churn_lower_bound"] > -margin).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"{none_lower}, and each of the {len(tested)} tested setting(s) is "
                       f"shown not to lower it by m_c = {margin:g} images ({f(margin * pct, 2, False)} % of the "
                       f"test images): every one-sided 95 % jackknife-t lower bound of delta is above -{margin:g} "
                       f"(intersection-union); the lowest {f(tested['churn_lower_bound'].min(), 1)} images")
    else:
        verdict = INCONCLUSIVE
        open_rows = tested[~(tested["churn_lower_bound"] > -margin)]
        open_part = (f", and {len(open_rows)} of {len(tested)} tested settings are not shown to stay above -m_c = "
                     f"-{margin:g} images: {names_of(open_rows)}" if len(open_rows) else "")
        reasons.append(f"{none_lower} (permutation test, Holm over {k_holm} setting(s)){open_part}")
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) not tested (fewer than {MIN_PAIRS} seeds paired with the "
                           f"baseline with predictions): {names_of(untested)}")
        if len(tested):
            n_min = int(tested["churn_n"].min())
            floor = min(1.0, k_holm * 2.0 ** -n_min) if n_min <= stats.CHURN_EXACT_UP_TO else None
            if floor is not None and floor >= level:
                reasons.append(f"with {n_min} seeds the exact permutation test cannot give p below 2^-{n_min}: "
                               f"Holm over {k_holm} settings cannot reach {level}")
    if len(tested) and verdict != SUPPORTED:
        reasons.append("lowest churn: " + line(tested.sort_values("churn_delta").iloc[0], n_test))
    higher = tested[tested["churn_ci_low"] > 0]
    if len(higher):
        reasons.append(f"{len(higher)} setting(s) have higher churn than the baseline (jackknife-t 95 % CI above 0, "
                       f"descriptive): " + "; ".join(f"{row['name']} {f(row['churn_delta'], 1)} images"
                                                     for _, row in higher.iterrows()))
    reasons += base_reason
    reasons += [r.replace("not supporting the claim", "not supporting the claim (never lower churn)")
                for r in diverged_reason]
    return verdict_dict(verdict, reasons, margin_pp, None, TESTS, **extra)


class Churn(Claim):
    name = "churn"
    words = "makes the model more stable (使得模型更加稳定), read as: two seeds disagree on fewer test images"
    metrics = ("test_acc",)
    columns = COLUMNS
    tests = TESTS
    caption = (f"This rule was {DECLARED}. Churn = the mean number of test images on which two seeds of an arm predict "
               "differently (delta = setting minus baseline over the seeds both have; negative = fewer "
               "disagreements). p: one-sided permutation test of within-seed exchangeability, Holm. CI: "
               "jackknife-t over seeds (leave one seed out of both arms, t with n - 1 df; test images fixed); "
               "its one-sided 95 % lower bound is the one the not-supported rule reads.", "")

    def baseline_row(self, context: Context) -> dict:
        runs, value = arm_churn(context.baseline, context)
        n_test = n_test_images(context)
        return {"churn_n": runs, "churn": value, "churn_pct": value / n_test * 100, "churn_call": BASELINE}

    def setting_row(self, setting: Setting, context: Context) -> dict:
        _, a, b = paired_predictions(setting.ok, setting.baseline, context)
        n = len(a)
        row = {"churn_n": n, **dict.fromkeys(COLUMNS[1:-1], float("nan"))}
        if n < MIN_PAIRS:
            n_paired = len(set(setting.ok["seed"]) & set(setting.baseline["seed"]))
            setting.notes.append(f"churn not tested: {n} paired seed(s) with predictions, needs {MIN_PAIRS}"
                                 + (f" ({NO_PREDICTIONS})" if n_paired >= MIN_PAIRS else ""))
            return row
        test = stats.churn_permutation_test(a, b, stats.N_CHURN_PERMUTATIONS, context.rng_seed)
        low, high = stats.churn_interval(a, b, stats.CONFIDENCE)
        bound = stats.churn_lower_bound(a, b, ONE_SIDED_CONFIDENCE)
        pct = 100 / a.shape[1]
        row.update(churn=test["churn_setting"], churn_pct=test["churn_setting"] * pct,
                   churn_baseline=test["churn_baseline"], churn_delta=test["delta"],
                   churn_delta_pct=test["delta"] * pct,
                   churn_ci_low=float(low), churn_ci_high=float(high), churn_lower_bound=float(bound),
                   churn_p_lower=test["p_lower"])
        return row

    def family(self, rows: list[dict], context: Context) -> None:
        # Holm's family: the settings with >= 3 pairs (diverged ones too); a permutation p always exists there
        tested = [row["churn_n"] if row["churn_n"] >= MIN_PAIRS else 0 for row in rows]
        adjusted = stats.holm_family([row["churn_p_lower"] for row in rows], tested) if rows else []
        margin = margin_images(context)
        for row, value in zip(rows, adjusted):
            row["churn_p_lower_holm"] = float(value)
            row["churn_call"] = call(row, margin)

    def verdict(self, table: pd.DataFrame, context: Context) -> dict:
        return verdict_of(table, margin_images(context), n_test_images(context), arm_churn(context.baseline, context))

    def table(self, view: SectionView) -> str:
        rows, cell = view.rows, text.cell
        base = view.baseline["churn"].iloc[0] if len(view.baseline) and "churn" in view.baseline else float("nan")
        return text.markdown_table(pd.DataFrame({
            "setting": [text.setting_name(r, view.varying) for _, r in rows.iterrows()],
            "seeds paired": rows["churn_n"].map(lambda v: cell(int(v)) if v == v else "-"),
            "churn (images)": rows["churn"].map(lambda v: cell(v, 1)),
            "churn %": rows["churn_pct"].map(lambda v: cell(v, 2)),
            "baseline, same seeds": rows["churn_baseline"].map(lambda v: cell(v, 1)),
            "delta (images)": rows["churn_delta"].map(lambda v: cell(v, 1, True)),
            "delta %": rows["churn_delta_pct"].map(lambda v: cell(v, 2, True)),
            "95 % CI (jackknife-t)": [text.interval(lo, hi, 1) for lo, hi in zip(rows["churn_ci_low"],
                                                                                 rows["churn_ci_high"])],
            "one-sided 95 % bound": rows["churn_lower_bound"].map(lambda v: cell(v, 1, True)),
            "p lower": rows["churn_p_lower"].map(text.p_cell),
            "p lower (Holm)": rows["churn_p_lower_holm"].map(text.p_cell),
            "call": rows["churn_call"],
        })) + (f"\n\nBaseline churn over all its runs: {cell(base, 1)} images." if base == base else "")

    def heat_call(self, row) -> HeatCall:
        """From churn_call: lower churn -> supports; not lower by m -> shown not to, or against when
        its 95 % jackknife-t CI lies above 0 (the verdict's "higher churn", descriptive); undecided;
        diverged; not tested (also for a table without the claim's columns). The text: delta in
        images."""
        verdict, delta = row.get("churn_call"), row.get("churn_delta", float("nan"))
        text_ = f"{delta:+.0f} img" if delta == delta else ""
        if verdict == DIVERGED:
            return HeatCall(HEAT_DIVERGED)
        if verdict == LOWER:
            return HeatCall(HEAT_SUPPORTS, text_)
        if verdict == NOT_LOWER:
            return HeatCall(HEAT_AGAINST if row.get("churn_ci_low", float("nan")) > 0 else HEAT_SHOWN_NOT, text_)
        if verdict == UNDECIDED:
            return HeatCall(HEAT_UNDECIDED, text_)
        return HeatCall(HEAT_NOT_TESTED)

    # the by-axis reading is a reading aid over summary rows: rows without the churn columns (a table
    # written for the other claims) read as no churn finding, not as an error
    def axis_columns(self, everything: pd.DataFrame, live: pd.DataFrame, others: list[str]) -> dict:
        delta = live["churn_delta"] if "churn_delta" in live else pd.Series(dtype=float)
        return {"churn delta images, median": text.cell(float(delta.median()), 1, True)}

    def axis_findings(self, live: pd.DataFrame) -> dict:
        calls = live["churn_call"] if "churn_call" in live else pd.Series(dtype=object)
        return {"churn_lower": count(calls == LOWER), "churn_not_lower": count(calls == NOT_LOWER)}

    def axis_clause(self, findings: dict) -> str | None:
        said = [f"{findings[k]} {w}" for k, w in (("churn_lower", "lower"), ("churn_not_lower", "not lower by m"))
                if findings[k]]
        return "churn " + ", ".join(said) if said else None


CLAIM = Churn()
