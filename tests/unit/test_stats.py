"""Statistics against scipy on fixed inputs, Holm by hand, and the verdict on synthetic sweeps."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg.stats import hedges_g, holm, seeds_for_power, summarize, verdict


def runs_frame(groups: dict, context="ctx", n_test=10000) -> pd.DataFrame:
    """groups: {(alpha, target): [acc per seed]} -> a runs table as report.runs_frame makes it."""
    rows = []
    for (alpha, target), accs in groups.items():
        for seed, acc in enumerate(accs):
            rows.append({"run_id": f"{alpha}-{target}-{seed}", "context": context, "alpha": alpha,
                         "target": target, "norm": "none" if target == "none" else "l2",
                         "schedule": "none" if target == "none" else "constant", "seed": seed, "status": "ok",
                         "test_acc": acc, "n_test": n_test})
    return pd.DataFrame(rows)


BASE = [99.00, 99.10, 98.95, 99.05, 99.02]


def test_holm_on_a_hand_worked_example():
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, monotone), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.5, 0.01, 0.02]).tolist() == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, 0.8]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    adjusted = holm([np.nan, 0.01, 0.04])
    assert np.isnan(adjusted[0]) and adjusted[1:].tolist() == pytest.approx([0.02, 0.04])


def test_summary_numbers_match_scipy():
    better = [99.30, 99.41, 99.25, 99.38, 99.33]
    summary = summarize(runs_frame({(0.0, "none"): BASE, (1e-3, "both"): better, (1e-4, "both"): BASE[::-1]}))
    row = summary[summary["alpha"] == 1e-3].iloc[0]
    welch = sps.ttest_ind(better, BASE, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert row["n"] == 5 and row["mean_acc"] == pytest.approx(np.mean(better))
    assert row["std_acc"] == pytest.approx(np.std(better, ddof=1))
    assert row["delta_pp"] == pytest.approx(np.mean(better) - np.mean(BASE))
    assert row["delta_images"] == pytest.approx(row["delta_pp"] / 100 * 10000)
    assert (row["ci_low_pp"], row["ci_high_pp"]) == pytest.approx((ci.low, ci.high))
    assert row["p_value"] == pytest.approx(welch.pvalue)
    assert row["paired_p"] == pytest.approx(sps.ttest_rel(better, BASE).pvalue)
    assert row["paired_delta_pp"] == pytest.approx(np.mean(np.subtract(better, BASE)))
    other = summary[summary["alpha"] == 1e-4].iloc[0]
    assert row["p_holm"] == pytest.approx(min(1, 2 * welch.pvalue))  # the smaller of two p's, times 2
    assert other["p_holm"] == pytest.approx(max(row["p_holm"], other["p_value"]))
    assert row["call"] == "better" and other["call"] == "no detectable difference"
    assert summary.iloc[0]["target"] == "none" and summary.iloc[0]["call"] == "baseline"


def test_hedges_g_against_the_textbook_formula():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.5]
    pooled = np.sqrt((3 * np.var(x, ddof=1) + 3 * np.var(y, ddof=1)) / 6)
    assert hedges_g(x, y) == pytest.approx((np.mean(x) - np.mean(y)) / pooled * (1 - 3 / (4 * 8 - 9)))


def test_not_ok_runs_are_counted_and_left_out():
    frame = runs_frame({(0.0, "none"): BASE, (1e-3, "both"): [99.3, 99.4, 99.2]})
    frame.loc[frame.index[-1], ["status", "test_acc"]] = ["diverged", np.nan]
    row = summarize(frame).iloc[1]
    assert row["n"] == 2 and row["n_not_ok"] == 1 and row["mean_acc"] == pytest.approx(99.35)


def test_verdict_clearly_better_is_supported():
    runs = runs_frame({(0.0, "none"): BASE, (1e-3, "both"): [b + 0.4 for b in BASE]})
    result = verdict(summarize(runs), runs, 0.1)
    assert result.verdict == "supported" and "+0.400 pp" in result.reasons[0]


def test_verdict_clearly_worse_is_not_supported():
    runs = runs_frame({(0.0, "none"): BASE, (1e-3, "both"): [b - 0.5 for b in BASE],
                       (1e-2, "both"): [b - 0.9 for b in BASE[::-1]]})
    summary = summarize(runs)
    assert set(summary["call"][1:]) == {"worse"}
    assert verdict(summary, runs, 0.1).verdict == "not supported"


def test_verdict_equal_with_tight_spread_is_not_supported():
    noise = [0.01, -0.02, 0.0, 0.015, -0.005]
    runs = runs_frame({(0.0, "none"): BASE, (1e-3, "both"): [b + e for b, e in zip(BASE, noise)]})
    summary = summarize(runs)
    assert summary.iloc[1]["ci_high_pp"] < 0.1
    result = verdict(summary, runs, 0.1)
    assert result.verdict == "not supported" and "every upper 95 % CI bound" in result.reasons[0]


def test_verdict_too_noisy_is_inconclusive_with_a_seed_count():
    runs = runs_frame({(0.0, "none"): [99.0, 98.5, 99.4], (1e-3, "both"): [99.3, 98.6, 99.5]})
    result = verdict(summarize(runs), runs, 0.1)
    assert result.verdict == "inconclusive" and result.seeds_needed > 3
    assert f"about {result.seeds_needed} seeds" in result.reasons[-1]


def test_verdict_significant_but_possibly_smaller_than_the_effect_of_interest_is_inconclusive():
    runs = runs_frame({(0.0, "none"): BASE, (1e-3, "both"): [b + 0.12 + e for b, e in
                                                            zip(BASE, [0.05, -0.06, 0.04, -0.03, 0.0])]})
    summary = summarize(runs)
    row = summary.iloc[1]
    assert row["call"] == "better" and row["ci_low_pp"] < 0.1 <= row["delta_pp"]
    result = verdict(summary, runs, 0.1)
    assert result.verdict == "inconclusive"
    assert "significantly better" in result.reasons[1] and "may be smaller than 0.1 pp" in result.reasons[1]


def test_seeds_for_power_matches_the_noncentral_t():
    n = seeds_for_power(sd=0.1, effect=0.1, tests=1)
    def power(k):
        dof = 2 * k - 2
        crit = sps.t.ppf(0.975, dof)
        nc = 0.1 / (0.1 * np.sqrt(2 / k))
        return sps.nct.sf(crit, dof, nc) + sps.nct.cdf(-crit, dof, nc)
    assert power(n) >= 0.8 > power(n - 1)
    assert n == 17  # the textbook answer for d = 1 at 80 % power, two-sided 0.05
    assert seeds_for_power(0.1, 0.1, tests=10) > n  # stricter level, more seeds
