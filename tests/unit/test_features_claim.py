"""The feature claim's declared rule on planted data: the margins m_j = max(m_f, 0.5 sd_j) from the
baseline, every p (better, non-inferior, below the margin), the CI and Holm's adjustment against
scipy.stats.ttest_1samp and a Holm written out here, each per-setting call and each verdict (a
setting that supports, one better on a metric but failing non-inferiority on another, one failing
it for want of pairs, a diverged one), the seeds planning, the reasons, the report table and the
by-axis words."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import stats as S
from l2reg.analysis import analyse
from l2reg.claims import SectionView
from l2reg.claims.features import (
    CLAIM,
    METRICS,
    NOT_NONINFERIOR,
    SHOWN_WORSE,
    SUPPORTS,
    UNDECIDED,
)
from l2reg.text import p_cell

COLS = ["alpha", "target", "form"]
N = 8
BASE_SD = {"probe_acc_100": 2.0, "probe_acc_1000": 0.1, "probe_acc_100_cv": 1.6, "noise_acc_0.1": 0.4,
           "noise_acc_0.2": 0.8, "noise_acc_0.3": 3.0}


def holm_by_hand(p):
    """Holm's step-down adjusted p over the finite entries (NaN stays NaN), written out."""
    p = np.asarray(p, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    out, running = np.full(len(p), np.nan), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out


def planted(settings: dict, metrics=METRICS, n=N, seed=3, diverged=()):
    """A runs table: a baseline with sd BASE_SD[m] per metric, and per alpha in `settings`
    {metric: (mean gain, sd of the paired gain)} or {metric: the n paired gains} (a metric left out
    gains 0 with sd 0.05); a mean gain of None leaves that metric NaN in all but the first seed. `diverged`: alphas
    that diverge in one extra seed."""
    rng = np.random.default_rng(seed)
    base = {m: 80 + BASE_SD[m] * rng.standard_normal(n) for m in metrics}
    rows = []

    def add(alpha, s, values, status="ok"):
        rows.append({"run_id": f"c-{alpha}-{s}", "context": "c", "alpha": alpha,
                     "target": "none" if alpha == 0 else "both", "form": "none" if alpha == 0 else "loss",
                     "seed": s, "status": status, "n_test": 10000,
                     "test_acc": 99.0 + 0.02 * ((3 * s + len(rows)) % 7), **values})

    for s in range(n):
        add(0.0, s, {**{m: base[m][s] for m in metrics}, "zero_fraction": 0.5})
    for alpha, gains in settings.items():
        noise = {m: rng.standard_normal(n) for m in metrics}
        for s in range(n):
            values = {"zero_fraction": 0.55 + 0.01 * noise[metrics[0]][s]}
            for m in metrics:
                gain = gains.get(m, (0.0, 0.05))
                if isinstance(gain, np.ndarray):  # the paired gains themselves, seed by seed
                    values[m] = base[m][s] + gain[s]
                    continue
                mean, sd = gain
                values[m] = np.nan if mean is None and s > 0 else base[m][s] + (mean or 0.0) + sd * noise[m][s]
            add(alpha, s, values)
        if alpha in diverged:
            add(alpha, n, {m: np.nan for m in metrics}, status="diverged")
    return pd.DataFrame(rows)


def paired(runs, alpha, metric):
    ok = runs[runs["status"] == "ok"]
    left = ok[ok["alpha"] == alpha].set_index("seed")[metric]
    right = ok[ok["alpha"] == 0].set_index("seed")[metric]
    both = pd.concat([left, right], axis=1, keys=["x", "y"]).dropna().sort_index()
    return (both["x"] - both["y"]).to_numpy()


def margin_of(runs, metric, floor=0.5):
    base = runs[(runs["alpha"] == 0) & (runs["status"] == "ok")][metric].dropna().to_numpy()
    return max(floor, 0.5 * base.std(ddof=1)) if len(base) >= 2 else floor


def row_of(summary, alpha):
    return summary[summary["alpha"] == alpha].iloc[0]


SUPPORTING = {"probe_acc_100": (4.0, 0.4)}  # better on one metric, flat on the others
# better on the 100-label probe, but noise_acc_0.3 wanders (-0.25 pp, sd 2.2 pp): not shown above -m
WANDERING = {"probe_acc_100": (4.0, 0.4), "noise_acc_0.3": np.array([-3, 2, -2.5, 3, 1.5, -2, 0.5, -1.5])}
# better, but noise_acc_0.2 has 1 paired seed: it cannot be shown non-inferior
UNPAIRED = {"probe_acc_100": (4.0, 0.4), "noise_acc_0.2": (None, 0.05)}
ALL = {1e-4: SUPPORTING, 1e-3: WANDERING, 1e-2: UNPAIRED, 1e-5: SUPPORTING}


def test_margins_are_the_floor_or_half_the_baseline_sd():
    runs = planted(ALL, diverged=(1e-5,))
    result = analyse(runs, COLS)
    margins = {m: margin_of(runs, m) for m in METRICS}
    # the planted sds put some metrics above the floor and some on it
    assert margins["probe_acc_1000"] == 0.5 and margins["noise_acc_0.3"] > 1.0 and margins["probe_acc_100"] > 0.5
    for _, row in result.summary.iterrows():  # every row, the baseline's included
        assert [row[f"{m}_margin_pp"] for m in METRICS] == pytest.approx([margins[m] for m in METRICS])
    claim = result.verdicts["c"]["features"]
    assert claim["margins_pp"] == pytest.approx(margins) and claim["min_effect_pp"] == 0.5
    assert any(r.startswith("margins per metric, m_j = max(0.5 pp, 0.5 x the baseline's seed-to-seed sd)")
               for r in claim["reasons"])
    # a larger declared floor wins where the sd is small; one baseline run: the floor alone
    high = analyse(runs, COLS, min_feature_effect_pp=0.9).summary.iloc[0]
    assert high["probe_acc_1000_margin_pp"] == 0.9
    assert high["noise_acc_0.3_margin_pp"] == pytest.approx(margin_of(runs, "noise_acc_0.3", 0.9))
    lone = runs[(runs["alpha"] != 0) | (runs["seed"] == 0)]
    assert analyse(lone, COLS).summary.iloc[0]["noise_acc_0.3_margin_pp"] == 0.5


def test_every_p_and_holm_value_matches_scipy():
    runs = planted(ALL, diverged=(1e-5,))
    summary = analyse(runs, COLS).summary
    alphas = [a for a in summary["alpha"] if a != 0]
    raw, where = [], []
    for alpha in alphas:
        row = row_of(summary, alpha)
        for metric in METRICS:
            d, m = paired(runs, alpha, metric), margin_of(runs, metric)
            assert row[f"{metric}_n"] == len(d)
            if len(d) < 2:
                assert np.isnan(row[f"{metric}_p_superior"]) and np.isnan(row[f"{metric}_p_noninferior"])
                raw.append(np.nan)
                where.append((alpha, metric))
                continue
            assert row[f"{metric}_delta_pp"] == pytest.approx(d.mean())
            assert row[f"{metric}_sd_pp"] == pytest.approx(d.std(ddof=1))
            ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
            assert (row[f"{metric}_ci_low_pp"], row[f"{metric}_ci_high_pp"]) == pytest.approx((ci.low, ci.high))
            sup = sps.ttest_1samp(d, m, alternative="greater").pvalue
            assert row[f"{metric}_p_superior"] == pytest.approx(sup)
            assert row[f"{metric}_p_noninferior"] == pytest.approx(
                sps.ttest_1samp(d, -m, alternative="greater").pvalue)
            assert row[f"{metric}_p_inferior"] == pytest.approx(sps.ttest_1samp(d, m, alternative="less").pvalue)
            raw.append(sup)
            where.append((alpha, metric))
    # Holm over ALL setting x metric cells of the context (the diverged setting's too): 4 x 6 - 1
    assert sum(np.isfinite(raw)) == 4 * len(METRICS) - 1
    for (alpha, metric), adjusted in zip(where, holm_by_hand(raw)):
        got = row_of(summary, alpha)[f"{metric}_p_superior_holm"]
        assert (np.isnan(got) and np.isnan(adjusted)) or got == pytest.approx(adjusted)
    # the veto: H0 gain >= 0, Holm over each setting's own measured metrics
    for alpha in alphas:
        row = row_of(summary, alpha)
        worse = [sps.ttest_1samp(paired(runs, alpha, m), 0, alternative="less").pvalue
                 if len(paired(runs, alpha, m)) >= 2 else np.nan for m in METRICS]
        # the family: the setting's metrics with 2 or more pairs (here each of those has spread)
        for metric, raw_p, adjusted in zip(METRICS, worse, holm_by_hand(worse)):
            if np.isnan(raw_p):
                assert np.isnan(row[f"{metric}_p_worse_holm"])
            else:
                assert row[f"{metric}_p_worse"] == pytest.approx(raw_p)
                assert row[f"{metric}_p_worse_holm"] == pytest.approx(adjusted)


def test_a_setting_shown_worse_on_a_metric_never_supports():
    """Better on one metric and non-inferior on every other, but significantly below zero on one
    (within its margin): the earlier rule's veto holds, so the new rule only ever removes support."""
    worse = {"probe_acc_100": (6.0, 0.5), "noise_acc_0.3": (-0.6, 0.05)}  # -0.6 pp: inside m = 1.5, yet < 0
    runs = planted({1e-3: worse})
    result = analyse(runs, COLS)
    row = row_of(result.summary, 1e-3)
    assert row["probe_acc_100_p_superior_holm"] < 0.05 and row["noise_acc_0.3_p_noninferior"] < 0.05
    assert row["noise_acc_0.3_p_worse_holm"] < 0.05
    assert row["features_call"] == SHOWN_WORSE
    verdict = result.verdicts["c"]["features"]
    assert verdict["verdict"] != "supported"
    assert any("shown worse on a feature metric" in r and "noise_acc_0.3" in r for r in verdict["reasons"])


def test_calls_and_supported_name_the_carrying_metric_and_every_ni_p():
    runs = planted(ALL, diverged=(1e-5,))
    result = analyse(runs, COLS)
    summary, claim = result.summary, result.verdicts["c"]["features"]
    calls = {a: row_of(summary, a)["features_call"] for a in (1e-5, 1e-4, 1e-3, 1e-2)}
    assert calls == {1e-5: "diverged", 1e-4: SUPPORTS, 1e-3: NOT_NONINFERIOR, 1e-2: NOT_NONINFERIOR}
    # the diverged setting's survivors are as good as the supporting one's: they never count
    assert row_of(summary, 1e-5)["probe_acc_100_p_superior_holm"] < 0.05
    for alpha in (1e-4, 1e-3, 1e-2):
        assert row_of(summary, alpha)["probe_acc_100_p_superior_holm"] < 0.05
    wandering = row_of(summary, 1e-3)
    assert wandering["noise_acc_0.3_p_noninferior"] >= 0.05
    assert row_of(summary, 1e-2)["noise_acc_0.2_n"] == 1
    assert claim["verdict"] == "supported" and claim["reasons"][0].startswith("1 setting(s) support it")
    supporting = [r for r in claim["reasons"] if r.startswith("alpha=0.0001: carried by probe_acc_100 ")]
    assert len(supporting) == 1
    row = row_of(summary, 1e-4)
    for metric in METRICS[1:]:  # every other metric's NI p, in the reasons
        assert f"{metric} " in supporting[0].split("non-inferior on every other metric: ")[1]
        assert S.one_sample_p(paired(runs, 1e-4, metric), -margin_of(runs, metric), "greater") == pytest.approx(
            row[f"{metric}_p_noninferior"])
    assert "the metric(s) that carry it: probe_acc_100 (of 6 measured)" in claim["reasons"]
    failing = next(r for r in claim["reasons"] if "do not count, not being shown non-inferior" in r)
    low, high = sps.ttest_1samp(paired(runs, 1e-3, "noise_acc_0.3"), 0).confidence_interval(0.95)
    assert ("alpha=0.001: better on probe_acc_100" in failing and "not shown non-inferior on noise_acc_0.3 "
            f"{wandering['noise_acc_0.3_delta_pp']:+.3f} pp (95 % CI {low:+.3f} to {high:+.3f}" in failing)
    assert "alpha=0.01: better on probe_acc_100" in failing and "noise_acc_0.2: 1 paired seed(s), no test" in failing
    assert any("diverged in some seeds" in r and "alpha=1e-05" in r for r in claim["reasons"])


def test_without_the_supporting_setting_it_is_inconclusive_with_the_seeds_of_the_rule():
    runs = planted({1e-3: WANDERING, 1e-2: UNPAIRED})
    result = analyse(runs, COLS)
    claim = result.verdicts["c"]["features"]
    assert claim["verdict"] == "inconclusive"
    assert claim["reasons"][0].startswith("no setting is shown better on one feature metric and non-inferior")
    # the seeds: 1e-3's probe gain shown above its margin at Holm's first step, and each of its
    # other metrics shown non-inferior, 80 % power each; 1e-2 plans nothing (a metric without pairs)
    row, k = row_of(result.summary, 1e-3), 2 * len(METRICS) - 1
    needs = [S.seeds_needed(row["probe_acc_100_delta_pp"] - row["probe_acc_100_margin_pp"],
                            row["probe_acc_100_sd_pp"], 0.05 / k)]
    needs += [S.seeds_needed(row[f"{m}_delta_pp"] + row[f"{m}_margin_pp"], row[f"{m}_sd_pp"], 0.05)
              for m in METRICS[1:]]
    assert None not in needs and claim["seeds_needed"] == max(needs) > N
    assert any(r.startswith(f"about {max(needs)} seeds per setting are needed for alpha=0.001 / probe_acc_100")
               for r in claim["reasons"])
    alone = analyse(planted({1e-2: UNPAIRED}), COLS).verdicts["c"]["features"]
    assert alone["verdict"] == "inconclusive" and alone["seeds_needed"] is None
    # a setting better on one metric but observed below -m on another (so shown worse there too): no
    # number of seeds decides it
    blocked = analyse(planted({1e-3: {"probe_acc_100": (4.0, 0.4), "noise_acc_0.1": (-2.0, 0.5)}}), COLS)
    claim = blocked.verdicts["c"]["features"]
    assert row_of(blocked.summary, 1e-3)["features_call"] == SHOWN_WORSE
    assert claim["verdict"] == "inconclusive" and claim["seeds_needed"] is None
    assert any(r.startswith("no finite number of seeds decides it under this rule") for r in claim["reasons"])


def test_not_supported_when_every_cell_is_shown_below_its_margin():
    runs = planted({1e-4: {}, 1e-3: {"noise_acc_0.3": (0.4, 0.3)}})  # 0.4 pp: under noise_acc_0.3's margin
    result = analyse(runs, COLS)
    claim = result.verdicts["c"]["features"]
    assert claim["verdict"] == "not supported"
    for alpha in (1e-4, 1e-3):
        row = row_of(result.summary, alpha)
        assert row["features_call"] == "shown below every margin"
        for metric in METRICS:
            d = paired(runs, alpha, metric)
            assert row[f"{metric}_p_inferior"] == pytest.approx(
                sps.ttest_1samp(d, margin_of(runs, metric), alternative="less").pvalue) and \
                row[f"{metric}_p_inferior"] < 0.05
    assert margin_of(runs, "noise_acc_0.3") > 0.4


def test_a_metric_old_runs_lack_is_not_measured_and_blocks_nothing():
    old = [m for m in METRICS if m != "probe_acc_100_cv"]
    runs = planted({1e-4: SUPPORTING}, metrics=tuple(old))
    result = analyse(runs, COLS)
    claim, row = result.verdicts["c"]["features"], row_of(result.summary, 1e-4)
    assert claim["verdict"] == "supported" and row["features_call"] == SUPPORTS
    assert row["probe_acc_100_cv_n"] == 0 and np.isnan(row["probe_acc_100_cv_p_noninferior"])
    assert "not measured in this context: probe_acc_100_cv" in claim["reasons"]
    assert set(claim["margins_pp"]) == set(old)
    assert "the metric(s) that carry it: probe_acc_100 (of 5 measured)" in claim["reasons"]


def test_report_table_caption_margins_and_axis_words():
    runs = planted(ALL, diverged=(1e-5,))
    result = analyse(runs, COLS)
    summary = result.summary
    rows, base = summary[summary["alpha"] != 0], summary[summary["alpha"] == 0]
    view = SectionView(context="c", rows=rows, baseline=base, verdict=result.verdicts["c"]["features"], extras={},
                       heading="##", varying=["alpha"], min_effect_pp=0.1)
    lines = CLAIM.section(view)
    margins = next(line for line in lines if line.startswith("Margins per metric, m_j = max(0.5 pp"))
    assert f"noise_acc_0.3 {margin_of(runs, 'noise_acc_0.3'):.3f} pp" in margins
    assert lines.index(margins) < next(i for i, line in enumerate(lines) if line.startswith("| setting"))
    table = [[c.strip() for c in line.strip("|").split("|")] for line in CLAIM.table(view).splitlines()]
    header, body = table[0], {r[0]: dict(zip(table[0], r)) for r in table[2:]}
    assert header[1] == "probe_acc_100 pp" and "call" in header
    row = row_of(summary, 1e-3)
    cell = body["alpha=0.001"]["noise_acc_0.3 pp"]
    assert cell == (f"{row['noise_acc_0.3_delta_pp']:+.2f} ({p_cell(row['noise_acc_0.3_p_superior_holm'])}; "
                    f"{p_cell(row['noise_acc_0.3_p_noninferior'])})")
    assert body["alpha=0.0001"]["call"] == SUPPORTS
    live = rows[rows["n_diverged"] == 0]
    findings = CLAIM.axis_findings(live)
    assert findings == {"features_count": 1, "features_not_ni": 2, "features_worse": 0}
    assert CLAIM.axis_clause(findings) == ("features 1 better (on one metric, non-inferior on the others), "
                                           "2 better on a metric but not shown non-inferior on another")
    assert CLAIM.axis_findings(live[live["features_call"] == UNDECIDED]) == {
        "features_count": None, "features_not_ni": None, "features_worse": None}
