"""The churn claim (l2reg.claims.churn) on planted contexts: its per-setting numbers against
l2reg.stats, Holm against stats.holm_family, the margin in images, each verdict (supported, not
supported, inconclusive, not tested), diverged settings, its place in the registry and its section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import claims, stats
from l2reg.analysis import analyse
from l2reg.claims import churn as churn_claim
from l2reg.claims.base import Context

COLS = ["alpha", "target", "form"]
N = 2000  # test images: at 0.5 pp the margin is 10 images
M_PP = 0.5


def labels_of(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, N).astype(np.uint8)


LABELS = labels_of()


def noisy(rate: float, hard: int = 0):
    """A run maker: wrong on the first `hard` images for every seed (the same wrong label) and on a
    `rate` share of the others drawn per seed and arm."""
    def make(rng: np.random.Generator) -> np.ndarray:
        wrong = rng.random(N) < rate
        wrong[:hard] = True
        fixed = (LABELS + 1) % 10
        other = np.where(np.arange(N) < hard, fixed, (LABELS + 1 + rng.integers(0, 9, N)) % 10)
        return np.where(wrong, other, LABELS).astype(np.uint8)
    return make


def planted(arms: dict, seeds: int = 8, diverged: dict | None = None, context: str = "c",
            with_predictions: bool = True, start: int = 0):
    """arms: {alpha: run maker, or "baseline" = the baseline's own run of that seed}; alpha 0 is the
    baseline. -> (runs table, predictions, labels). diverged: {alpha: seeds whose run diverged}."""
    rows, predictions, labels = [], {}, {}
    by_seed = {}
    for alpha, maker in arms.items():
        for seed in range(start, start + seeds):
            rng = np.random.default_rng([seed, int(alpha * 1e6)])
            run_id = f"{context}-{alpha}-{seed}"
            status = "diverged" if seed in (diverged or {}).get(alpha, ()) else "ok"
            pred = by_seed[seed] if isinstance(maker, str) else maker(rng)
            if alpha == 0:
                by_seed[seed] = pred
            rows.append({"run_id": run_id, "context": context, "alpha": alpha,
                         "target": "none" if alpha == 0 else "both", "form": "none" if alpha == 0 else "loss",
                         "seed": seed, "status": status, "n_test": N,
                         "test_acc": 100 * float((pred == LABELS).mean()) if status == "ok" else np.nan})
            if status == "ok" and with_predictions:
                predictions[run_id], labels[run_id] = pred, LABELS
    return pd.DataFrame(rows), predictions, labels


def run(arms, **kwargs):
    frame, predictions, labels = planted(arms, **{k: v for k, v in kwargs.items() if k != "min_effect_pp"})
    return analyse(frame, COLS, kwargs.get("min_effect_pp", M_PP), predictions, labels, n_boot=1000,
                   n_spread_sim=50)


def setting_rows(result, context="c"):
    summary = result.summary[result.summary["context"] == context]
    return summary[summary["alpha"] != 0].set_index("alpha")


BASE = noisy(0.05)  # two baseline seeds disagree on about 190 of 2,000 images


def test_registered_after_stability_and_before_features():
    assert claims.names() == ("accuracy", "overfitting", "stability", "churn", "features")
    assert claims.get("churn") is churn_claim.CLAIM and churn_claim.CLAIM.metrics == ("test_acc",)


def test_margin_is_the_accuracy_margin_in_images():
    frame, _, _ = planted({0.0: BASE}, seeds=3)
    context = Context(name="c", runs=frame.assign(n_test=10_000), baseline=frame, min_effect_pp=0.1,
                      min_feature_effect_pp=0.5)
    assert churn_claim.margin_images(context) == pytest.approx(10.0)  # 0.1 pp of 10,000
    context.min_effect_pp = M_PP
    context.runs = frame
    assert churn_claim.margin_images(context) == pytest.approx(10.0)  # 0.5 pp of 2,000
    # without an n_test column: the predictions' length
    context = Context(name="c", runs=frame.drop(columns="n_test"), baseline=frame, min_effect_pp=M_PP,
                      min_feature_effect_pp=0.5, predictions={"x": LABELS})
    assert churn_claim.margin_images(context) == pytest.approx(10.0)


def test_supported_numbers_match_stats_and_holm_matches_holm_family():
    # 1e-3: wrong on the same 60 hard images every seed + 0.5 % drawn per seed: churn about 20 images;
    # 1e-4: like the baseline; 1e-2: churns more
    result = run({0.0: BASE, 1e-3: noisy(0.005, hard=60), 1e-4: noisy(0.05), 1e-2: noisy(0.08)}, seeds=8)
    rows = setting_rows(result)
    frame, predictions, _ = planted({0.0: BASE, 1e-3: noisy(0.005, hard=60), 1e-4: noisy(0.05),
                                     1e-2: noisy(0.08)}, seeds=8)
    base = np.stack([predictions[f"c-0.0-{s}"] for s in range(8)])
    for alpha in (1e-3, 1e-4, 1e-2):
        arm = np.stack([predictions[f"c-{alpha}-{s}"] for s in range(8)])
        test = stats.churn_permutation_test(arm, base, rng_seed=stats.RNG_SEED)
        row = rows.loc[alpha]
        assert row["churn_n"] == 8
        assert (row["churn"], row["churn_baseline"], row["churn_delta"], row["churn_p_lower"]) == pytest.approx(
            (test["churn_setting"], test["churn_baseline"], test["delta"], test["p_lower"]))
        assert row["churn_pct"] == pytest.approx(test["churn_setting"] / N * 100)
        assert row["churn_delta_pct"] == pytest.approx(test["delta"] / N * 100)
        jack = stats.churn_jackknife(arm, base)  # jackknife-t: delta +- t_(n-1) * se
        t2, t1 = sps.t.ppf([0.975, 0.95], 7)
        assert (row["churn_ci_low"], row["churn_ci_high"], row["churn_lower_bound"]) == pytest.approx(
            (test["delta"] - t2 * jack["se"], test["delta"] + t2 * jack["se"], test["delta"] - t1 * jack["se"]))
        assert (row["churn_ci_low"], row["churn_ci_high"]) == pytest.approx(stats.churn_interval(arm, base))
        assert row["churn_lower_bound"] == pytest.approx(stats.churn_lower_bound(arm, base))
    holm = stats.holm_family(rows["churn_p_lower"], rows["churn_n"])
    assert rows["churn_p_lower_holm"].to_numpy() == pytest.approx(holm)
    assert rows.loc[1e-3, "churn_p_lower"] == 2.0 ** -8 and rows.loc[1e-3, "churn_p_lower_holm"] == 3 * 2.0 ** -8
    assert rows.loc[1e-3, "churn"] < 40 < 150 < rows.loc[1e-3, "churn_baseline"]
    assert rows.loc[1e-3, "churn_call"] == "lower churn" and rows.loc[1e-2, "churn_call"] == "not lower by m"
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "supported"
    assert verdict["margin_images"] == pytest.approx(10.0) and verdict["n_test"] == N
    assert verdict["min_effect_pp"] == pytest.approx(M_PP)
    assert "exploratory" in verdict["declared"]
    assert verdict["reasons"][0].startswith("1 of 3 settings have lower churn than the baseline")
    assert "Holm over 3 setting(s)" in verdict["reasons"][0]
    assert verdict["reasons"][1].startswith("alpha=0.001: churn ")
    assert "n = 8" in verdict["reasons"][1] and "% of the test images" in verdict["reasons"][1]
    assert "jackknife-t 95 % CI" in verdict["reasons"][1]
    assert any(r.startswith("1 setting(s) have higher churn") and "alpha=0.01" in r for r in verdict["reasons"])
    baseline_row = result.summary[result.summary["alpha"] == 0].iloc[0]
    assert baseline_row["churn_call"] == "baseline" and baseline_row["churn_n"] == 8
    assert baseline_row["churn"] == pytest.approx(stats.churn(stats.disagreement_counts(base), np.arange(8))[0])


def test_not_supported_when_every_setting_is_shown_not_to_lower_churn_by_the_margin():
    # 1e-3 reproduces the baseline's runs exactly (delta 0, every pseudo-value 0: the bound 0 > -10);
    # 1e-2 churns more than the baseline
    result = run({0.0: BASE, 1e-3: "baseline", 1e-2: noisy(0.08)}, seeds=8)
    rows = setting_rows(result)
    assert rows.loc[1e-3, "churn_delta"] == 0 and rows.loc[1e-3, "churn_lower_bound"] == 0
    assert rows.loc[1e-3, "churn_p_lower"] == 1.0 and rows.loc[1e-2, "churn_lower_bound"] > -10
    assert (rows["churn_call"] == "not lower by m").all()
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "not supported"
    assert "shown not to lower it by m_c = 10 images (0.50 % of the test images)" in verdict["reasons"][0]
    assert "every one-sided 95 % jackknife-t lower bound of delta is above -10" in verdict["reasons"][0]


def test_the_margin_decides_between_not_supported_and_inconclusive():
    # a setting about 15 images below the baseline over 8 seeds, not significant (Holm p 0.12), its
    # one-sided 95 % jackknife-t lower bound -36.5 images: with a margin of 100 images it is shown not to
    # lower churn by m, with one of 0.2 images it is not
    arms = {0.0: BASE, 1e-3: noisy(0.0485)}
    wide = run(arms, seeds=8, min_effect_pp=5.0).verdicts["c"]["churn"]  # m_c = 100 images
    narrow = run(arms, seeds=8, min_effect_pp=0.01).verdicts["c"]["churn"]  # m_c = 0.2 images
    assert wide["verdict"] == "not supported" and wide["margin_images"] == pytest.approx(100)
    assert narrow["verdict"] == "inconclusive" and narrow["margin_images"] == pytest.approx(0.2)
    assert "not shown to stay above -m_c = -0.2 images: alpha=0.001" in narrow["reasons"][0]
    assert any(r.startswith("lowest churn: alpha=0.001") for r in narrow["reasons"])
    # m_c = 35 images: the jackknife-t bound (-36.5) keeps it open; the percentile bootstrap it replaced
    # (5th percentile -31.6 with 1,000 replicates, too narrow at 8 seeds) would have said "not supported"
    between = run(arms, seeds=8, min_effect_pp=1.75)
    row = setting_rows(between).loc[1e-3]
    assert row["churn_lower_bound"] == pytest.approx(-36.53, abs=0.01) and row["churn_call"] == "undecided"
    assert between.verdicts["c"]["churn"]["verdict"] == "inconclusive"


def test_inconclusive_with_four_seeds_the_permutation_test_cannot_reach_the_level():
    result = run({0.0: BASE, 1e-3: noisy(0.005, hard=60), 1e-2: noisy(0.05)}, seeds=4)
    rows = setting_rows(result)
    assert rows.loc[1e-3, "churn_p_lower"] == 1 / 16 and rows.loc[1e-3, "churn_delta"] < -100
    assert rows.loc[1e-3, "churn_call"] == "undecided"
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "inconclusive"
    assert any("cannot give p below 2^-4" in r for r in verdict["reasons"])


def test_not_tested_without_predictions_or_with_two_seeds_and_untested_settings_keep_it_open():
    frame, _, _ = planted({0.0: BASE, 1e-3: noisy(0.01)}, seeds=5)
    result = analyse(frame, COLS, M_PP, {}, {}, n_boot=200, n_spread_sim=50)
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "not tested" and "runs lack per-image predictions" in verdict["reasons"][0]
    row = setting_rows(result).loc[1e-3]
    assert row["churn_n"] == 0 and np.isnan(row["churn_p_lower_holm"]) and row["churn_call"] == "not tested"
    assert "churn not tested: 0 paired seed(s) with predictions, needs 3 (runs lack" in row["note"]
    two = run({0.0: BASE, 1e-3: noisy(0.005, hard=60)}, seeds=2)
    assert two.verdicts["c"]["churn"]["verdict"] == "not tested"
    # one setting tested and shown not lower, another with only 2 seeds paired: inconclusive, not "not supported"
    frame, predictions, labels = planted({0.0: BASE, 1e-3: "baseline", 1e-2: noisy(0.05)}, seeds=6)
    keep = [k for k in predictions if not (k.startswith("c-0.01-") and int(k.rsplit("-", 1)[1]) >= 2)]
    result = analyse(frame, COLS, M_PP, {k: predictions[k] for k in keep}, labels, n_boot=200, n_spread_sim=50)
    rows = setting_rows(result)
    assert rows.loc[1e-2, "churn_n"] == 2 and rows.loc[1e-3, "churn_call"] == "not lower by m"
    # Holm's family is the tested settings: the untested one does not count, not even as p = 1
    assert rows.loc[1e-3, "churn_p_lower_holm"] == rows.loc[1e-3, "churn_p_lower"] == 1.0
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "inconclusive"
    assert any("1 setting(s) not tested" in r and "alpha=0.01" in r for r in verdict["reasons"])


def test_a_diverged_setting_never_supports_but_stays_in_holms_family():
    arms = {0.0: BASE, 1e-3: noisy(0.005, hard=60), 1e-2: "baseline"}
    result = run(arms, seeds=9, diverged={1e-3: (8,)})
    rows = setting_rows(result)
    assert rows.loc[1e-3, "churn_n"] == 8 and rows.loc[1e-3, "churn_p_lower"] == 2.0 ** -8
    assert rows.loc[1e-3, "churn_call"] == "diverged"
    assert rows["churn_p_lower_holm"].to_numpy() == pytest.approx(
        stats.holm_family(rows["churn_p_lower"], rows["churn_n"]))
    assert rows.loc[1e-3, "churn_p_lower_holm"] == 2 * 2.0 ** -8  # k = 2: the diverged setting counts
    verdict = result.verdicts["c"]["churn"]
    assert verdict["verdict"] == "not supported"  # the live setting is shown not lower; the diverged counts as shown
    assert any("diverged in some seeds" in r and "never lower churn" in r for r in verdict["reasons"])
    only = run({0.0: BASE, 1e-3: noisy(0.005, hard=60)}, seeds=9, diverged={1e-3: (8,)}).verdicts["c"]["churn"]
    assert only["verdict"] == "not supported" and "diverged in some seeds" in only["reasons"][0]


def test_contexts_are_separate_families():
    first, p1, l1 = planted({0.0: BASE, 1e-3: noisy(0.005, hard=60)}, seeds=8, context="a")
    second, p2, l2 = planted({0.0: BASE, 1e-3: "baseline", 1e-2: noisy(0.05)}, seeds=8, context="b")
    result = analyse(pd.concat([first, second]), COLS, M_PP, {**p1, **p2}, {**l1, **l2}, n_boot=200,
                     n_spread_sim=50)
    assert result.verdicts["a"]["churn"]["verdict"] == "supported"
    assert result.verdicts["b"]["churn"]["verdict"] != "supported"
    assert setting_rows(result, "a").loc[1e-3, "churn_p_lower_holm"] == 2.0 ** -8  # k = 1 in context a


def test_runs_with_other_test_labels_are_refused():
    frame, predictions, labels = planted({0.0: BASE, 1e-3: noisy(0.01)}, seeds=4)
    labels["c-0.001-2"] = labels_of(1)
    with pytest.raises(ValueError, match="other test labels|different test labels"):
        analyse(frame, COLS, M_PP, predictions, labels, n_boot=100, n_spread_sim=50)
    setting = frame[frame["alpha"] == 1e-3]
    context = Context(name="c", runs=frame, baseline=frame[frame["alpha"] == 0], min_effect_pp=M_PP,
                      min_feature_effect_pp=0.5, predictions=predictions, labels=labels)
    with pytest.raises(ValueError, match="run c-0.001-2 has other test labels than run c-0.001-0"):
        churn_claim.arm_churn(setting, context)


def test_section_says_the_rule_is_exploratory_on_the_screens_and_shows_the_table():
    result = run({0.0: BASE, 1e-3: noisy(0.005, hard=60), 1e-2: "baseline"}, seeds=8)
    summary = result.summary
    view = claims.SectionView(context="c", rows=summary[summary["alpha"] != 0], baseline=summary[summary["alpha"] == 0],
                              verdict=result.verdicts["c"]["churn"], extras=result.extras["c"], heading="##",
                              varying=["alpha"], min_effect_pp=M_PP)
    text = "\n".join(churn_claim.CLAIM.section(view))
    assert text.startswith("## Churn: supported")
    assert ("declared after the committed screens were read: exploratory there; confirmatory only in a "
            "confirmation study whose plan lists it") in text
    assert "| alpha=0.001 |" in text and "lower churn" in text and "one-sided 95 % bound" in text
    assert "95 % CI (jackknife-t)" in text and "jackknife-t over seeds" in text and "bootstrap" not in text
    assert "Baseline churn over all its runs:" in text
    live = summary[summary["alpha"] != 0]
    assert churn_claim.CLAIM.axis_findings(live) == {"churn_lower": 1, "churn_not_lower": 1}
    assert churn_claim.CLAIM.axis_clause({"churn_lower": 1, "churn_not_lower": 1}) == "churn 1 lower, 1 not lower by m"
    assert churn_claim.CLAIM.axis_clause({"churn_lower": 0, "churn_not_lower": 0}) is None
    bare = live.drop(columns=[c for c in churn_claim.COLUMNS if c in live])  # rows without churn columns
    assert churn_claim.CLAIM.axis_findings(bare) == {"churn_lower": 0, "churn_not_lower": 0}
    assert churn_claim.CLAIM.axis_columns(bare, bare, []) == {"churn delta images, median": "-"}
