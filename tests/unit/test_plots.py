"""The pictures say what the rules say: the Holm-consistent bounds the forest plots draw cross the
margin exactly when the rule calls a setting better (planted families where Holm steps down and
where it stops; the committed screens), each claim's heat-map call on planted rows, and each figure
drawn with the expected panels, rows, bands and artists (matplotlib Figure objects, no pixels)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import axes, bounds, claims, stats
from l2reg.analysis import analyse
from l2reg.claims import accuracy, churn, features, overfitting, stability
from l2reg.claims.base import (
    HEAT_AGAINST,
    HEAT_CALLS,
    HEAT_DIVERGED,
    HEAT_NOT_TESTED,
    HEAT_SHOWN_NOT,
    HEAT_SUPPORTS,
    HEAT_UNDECIDED,
    Claim,
    HeatCall,
    verdict_dict,
)
from l2reg.forest import churn_figure, features_figure, forest_figure, gap_figure
from l2reg.heatmap import heatmap_figure
from l2reg.plots import PLOTS, RETIRED, write_plots

M = 0.1
RESULTS = Path(__file__).resolve().parents[2] / "results"
Z = np.array([-1.5, -1.0, -0.6, -0.3, 0.0, 0.2, 0.4, 0.7, 1.0, 1.1])
Z = (Z - Z.mean()) / Z.std(ddof=1)  # mean 0, sd 1: planted differences get exactly the t we ask for


def planted(p_superior: float, sd: float = 0.05) -> np.ndarray:
    """10 paired differences whose one-sided t-test of H0 mean <= M has exactly p = p_superior."""
    return M + sd * Z + sps.t.isf(p_superior, len(Z) - 1) * sd / np.sqrt(len(Z))


def family(p_values: list[float], extra: list[np.ndarray] = ()) -> pd.DataFrame:
    """accuracy.family_tests over planted settings (and `extra` differences), as summary rows."""
    diffs = [planted(p) for p in p_values] + list(extra)
    rows = accuracy.family_tests(diffs, M)
    assert np.allclose(rows["p_superior"][:len(p_values)], p_values)
    return rows


def test_holm_levels_step_down_then_stop_at_the_first_non_rejected_level():
    # k = 4: 0.001 * 4 rejected at 0.05/4; 0.02 * 3 = 0.06 is not: Holm stops, and every later member
    # keeps that step's level 0.05/3, even 0.022 < 0.05/2 that a naive next step would test at
    levels = bounds.holm_levels([0.02, 0.001, 0.5, 0.022], [10, 10, 10, 10])
    assert np.allclose(levels, [0.05 / 3, 0.05 / 4, 0.05 / 3, 0.05 / 3])
    # all rejected: 0.05/4, 0.05/3, 0.05/2, 0.05/1 in p order; non-members (< 2 pairs) get none;
    # a member without spread (p NaN, 2+ pairs) counts as p = 1, last
    levels = bounds.holm_levels([0.01, 0.0005, np.nan, 0.004, 0.012, np.nan], [10, 10, 10, 10, 10, 1])
    assert np.allclose(levels[:5], [0.05 / 3, 0.05 / 5, 0.05 / 1, 0.05 / 4, 0.05 / 2])
    assert np.isnan(levels[5])


# a family of 5 with the tie below: k = 5
@pytest.mark.parametrize("p_values, better, tie_level", [
    ([0.0005, 0.004, 0.012, 0.3], [True, True, True, False], 0.05 / 2),  # Holm steps down three times
    ([0.001, 0.013, 0.015, 0.3], [True, False, False, False], 0.05 / 4),  # it stops at the second step
    ([0.2, 0.3, 0.5, 0.9], [False] * 4, 0.05 / 5),  # and here at once
])
def test_the_holm_bound_is_above_m_exactly_when_the_setting_is_called_better(p_values, better, tie_level):
    tie = np.full(10, 0.2)  # no spread: counts as p = 1 in Holm's family, has no bound
    rows = family(p_values, [tie, np.array([0.5])])  # and one setting with 1 pair: not in the family
    levels, lower = bounds.accuracy_bounds(rows)
    assert list(rows["p_superior_holm"][:4] < 0.05) == better
    assert list(lower[:4] > M) == better
    assert np.isnan(lower[4]) and levels[4] == pytest.approx(tie_level)
    assert np.isnan(lower[5]) and np.isnan(levels[5])
    # the bound is the one-sided t bound at that level
    d = planted(p_values[0])
    assert lower[0] == pytest.approx(d.mean() - sps.t.ppf(1 - levels[0], 9) * d.std(ddof=1) / np.sqrt(10))
    if p_values[2] == 0.015:
        # p = 0.015 < 0.05/3, the level a naive next step would give the third setting: at that level
        # its bound is above m; at the level where Holm stopped (0.05/4) it is not, as its call
        assert bounds.bound_of(planted(p_values[2]), 0.05 / 3) > M > lower[2]


@pytest.mark.parametrize("folder", ["ablation", "controls-small-data", "controls-dropout"])
def test_the_equivalence_holds_on_the_committed_screens(folder):
    summary = pd.read_csv(RESULTS / folder / "summary.csv")  # read only
    called = 0
    for context, rows in summary[~axes.baseline_rows(summary)].groupby("context"):
        _, lower = bounds.accuracy_bounds(rows)
        assert list(lower > M) == list(rows["p_superior_holm"] < 0.05), context
        called += int((rows["p_superior_holm"] < 0.05).sum())
    assert called == {"ablation": 0, "controls-small-data": 4, "controls-dropout": 0}[folder]


def test_the_gap_bounds_decide_exactly_as_the_overfitting_rule_on_committed_runs():
    folder = RESULTS / "controls-small-data"
    summary, runs = pd.read_csv(folder / "summary.csv"), pd.read_csv(folder / "runs.csv")
    supported = 0
    for context, rows in summary[~axes.baseline_rows(summary)].groupby("context"):
        found = bounds.gap_bounds(runs, rows, M)
        shown = (found["gap_bound"] < -M) & (found["acc_bound"] > -M)
        assert list(shown) == list(rows["support_p_holm"] < 0.05), context
        supported += int(shown.sum())
        for (_, row), (_, f) in zip(rows.iterrows(), found.iterrows()):
            assert len(f["gap_d"]) == row["gap_n"] and np.mean(f["gap_d"]) == pytest.approx(row["gap_delta_pp"])
    assert supported == 3


# ------------------------------------------------------------------------------------------------
# heat-map calls per claim, on planted summary rows


@pytest.mark.parametrize("row, call, text", [
    ({"call": accuracy.BETTER, "paired_n": 10, "delta_pp": 0.3, "p_inferior": 0.9}, HEAT_SUPPORTS, "better +0.30"),
    ({"call": accuracy.WORSE, "paired_n": 10, "delta_pp": -0.4, "p_inferior": 1e-5}, HEAT_AGAINST, "worse -0.40"),
    ({"call": accuracy.EQUIVALENT, "paired_n": 10, "delta_pp": 0.0, "p_inferior": 1e-3}, HEAT_SHOWN_NOT,
     "equivalent +0.00"),
    ({"call": accuracy.UNDECIDED, "paired_n": 10, "delta_pp": -0.04, "p_inferior": 0.01}, HEAT_SHOWN_NOT,
     "below m -0.04"),
    ({"call": accuracy.ABOVE_ZERO_ONLY, "paired_n": 10, "delta_pp": 0.2, "p_inferior": 0.9}, HEAT_UNDECIDED,
     "above 0 +0.20"),
    ({"call": accuracy.UNDECIDED, "paired_n": 10, "delta_pp": 0.07, "p_inferior": 0.2}, HEAT_UNDECIDED, "+0.07"),
    ({"call": accuracy.NOT_TESTED, "paired_n": 1, "delta_pp": 0.1}, HEAT_NOT_TESTED, ""),
    ({"call": accuracy.DIVERGED, "paired_n": 10, "delta_pp": 0.5}, HEAT_DIVERGED, ""),
])
def test_accuracy_heat_calls(row, call, text):
    assert accuracy.CLAIM.heat_call(row) == HeatCall(call, text)


def test_overfitting_stability_features_and_default_heat_calls():
    gap = {"n_diverged": 0, "gap_n": 10, "gap_delta_pp": -0.3, "support_p_holm": 0.01, "acc_below_p": 0.9,
           "gap_p_above_margin": 0.9}
    assert overfitting.CLAIM.heat_call(gap) == HeatCall(HEAT_SUPPORTS, "gap -0.30")
    assert overfitting.CLAIM.heat_call({**gap, "support_p_holm": 0.2, "acc_below_p": 0.01}) == HeatCall(
        HEAT_SHOWN_NOT, "acc < -m")
    assert overfitting.CLAIM.heat_call({**gap, "support_p_holm": 0.2, "gap_p_above_margin": 0.02}).call == \
        HEAT_SHOWN_NOT
    # the two "shown not to" tests are at 0.025 each (the verdict's Bonferroni within the setting)
    assert overfitting.CLAIM.heat_call({**gap, "support_p_holm": 0.2, "gap_p_above_margin": 0.03}).call == \
        HEAT_UNDECIDED
    assert overfitting.CLAIM.heat_call({**gap, "gap_n": 1}).call == HEAT_NOT_TESTED
    assert overfitting.CLAIM.heat_call({**gap, "n_diverged": 2}).call == HEAT_DIVERGED

    spread = {"n_diverged": 0, "spread_p": 0.001, "spread_p_holm": 0.01, "spread_ratio": 0.5, "spread_power_1_5x": 0.3}
    assert stability.CLAIM.heat_call(spread) == HeatCall(HEAT_SUPPORTS, "sd x0.50")
    assert stability.CLAIM.heat_call({**spread, "spread_ratio": 2.0}) == HeatCall(HEAT_AGAINST, "sd x2.00")
    assert stability.CLAIM.heat_call({**spread, "spread_p_holm": 0.3}).call == HEAT_UNDECIDED
    assert stability.CLAIM.heat_call({**spread, "spread_p_holm": 0.3, "spread_power_1_5x": 0.85}).call == \
        HEAT_SHOWN_NOT
    assert stability.CLAIM.heat_call({**spread, "spread_p": float("nan")}).call == HEAT_NOT_TESTED

    expected = {features.SUPPORTS: HEAT_SUPPORTS, features.SHOWN_WORSE: HEAT_AGAINST, features.BELOW: HEAT_SHOWN_NOT,
                features.NOT_NONINFERIOR: HEAT_UNDECIDED, features.UNDECIDED: HEAT_UNDECIDED,
                features.DIVERGED: HEAT_DIVERGED, features.UNTESTED: HEAT_NOT_TESTED}
    for call, heat in expected.items():
        assert features.CLAIM.heat_call({features.CALL_COLUMN: call}).call == heat
    assert features.CLAIM.heat_call({}).call == HEAT_NOT_TESTED  # a table written without the claim's columns
    assert Claim().heat_call({"call": accuracy.BETTER}) == HeatCall(HEAT_NOT_TESTED)


def test_churn_heat_calls():
    row = {"churn_call": churn.LOWER, "churn_delta": -17.4, "churn_ci_low": -30.0, "churn_ci_high": -5.0}
    assert churn.CLAIM.heat_call(row) == HeatCall(HEAT_SUPPORTS, "-17 img")
    assert churn.CLAIM.heat_call({**row, "churn_call": churn.NOT_LOWER, "churn_delta": 3.0,
                                  "churn_ci_low": -4.0}) == HeatCall(HEAT_SHOWN_NOT, "+3 img")
    # more churn (its 95 % CI above 0, the verdict's descriptive "higher churn"): against
    assert churn.CLAIM.heat_call({**row, "churn_call": churn.NOT_LOWER, "churn_delta": 34.0,
                                  "churn_ci_low": 14.0}).call == HEAT_AGAINST
    assert churn.CLAIM.heat_call({**row, "churn_call": churn.UNDECIDED}).call == HEAT_UNDECIDED
    assert churn.CLAIM.heat_call({**row, "churn_call": churn.DIVERGED}).call == HEAT_DIVERGED
    assert churn.CLAIM.heat_call({"churn_call": churn.NOT_TESTED}).call == HEAT_NOT_TESTED
    assert churn.CLAIM.heat_call({}).call == HEAT_NOT_TESTED


# ------------------------------------------------------------------------------------------------
# the figures, from a planted sweep's analysis

N_TEST = 1000
LABELS = (np.arange(N_TEST) % 10).astype(np.uint8)
SETTINGS = [(1e-4, "weights", 0.02), (1e-4, "both", 0.3), (1e-3, "weights", -0.4), (1e-3, "both", 0.15)]
SEEDS = range(6)


def setting(alpha: float, target: str) -> dict:
    if alpha == 0:
        return {c: (0.0 if c == "alpha" else "none") for c in axes.SETTING_COLUMNS}
    return {"alpha": alpha, "target": target, "norm": "l2", "schedule": "constant", "form": "loss", "scope": "conv"}


def predicted(wrong: int, shift: int) -> np.ndarray:
    """`wrong` images wrong, starting at `shift`: two runs differ where their wrong ranges do not overlap."""
    out = LABELS.copy()
    at = (np.arange(wrong) + shift) % N_TEST
    out[at] = (LABELS[at] + 1) % 10
    return out


def sweep(contexts=("ctx-a",)) -> tuple[pd.DataFrame, dict, dict]:
    """A planted runs table (and predictions/labels): a baseline and SETTINGS, 6 seeds, per context."""
    rng = np.random.default_rng(3)
    rows, predictions = [], {}
    for context in contexts:
        for seed in SEEDS:
            base_acc = 98.9 + rng.normal(0, 0.08)
            for alpha, target, gain in [(0.0, "none", 0.0), *SETTINGS]:
                acc = base_acc + gain + rng.normal(0, 0.05)
                run_id = f"{context}-{target}-{alpha}-{seed}"
                rows.append({"run_id": run_id, "context": context, **setting(alpha, target), "seed": seed,
                             "status": "ok", "test_acc": acc, "train_acc": acc + 0.3 - gain / 2, "test_loss": 0.03,
                             "n_test": N_TEST,
                             **{m: 90 + gain * 3 + rng.normal(0, 0.4) for m in features.METRICS}})
                predictions[run_id] = predicted(int(round((100 - acc) * N_TEST / 100)), 37 * seed + int(alpha * 1e4))
    return pd.DataFrame(rows), predictions, {r: LABELS for r in predictions}


@pytest.fixture(scope="module")
def planted_analysis():
    runs, predictions, labels = sweep()
    return runs, analyse(runs, axes.SETTING_COLUMNS, M, predictions, labels, n_boot=20, n_spread_sim=20)


def yticks(ax) -> tuple[list[float], list[str]]:
    return list(ax.get_yticks()), [t.get_text() for t in ax.get_yticklabels()]


def by_gid(ax, gid: str) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def band_limits(ax) -> tuple[float, float]:
    (band,) = by_gid(ax, "margin band")  # axvspan: a Rectangle, x in data units
    return band.get_x(), band.get_x() + band.get_width()


def test_the_forest_rows_are_the_settings_sorted_by_gain_with_their_bounds(planted_analysis):
    runs, analysis = planted_analysis
    rows = analysis.summary[~axes.baseline_rows(analysis.summary)]
    fig = forest_figure(analysis.summary, runs, M)
    (ax,) = [a for a in fig.axes if a.get_yticklabels()]  # the panel (its right-hand axis has the levels)
    ordered = rows.sort_values("delta_pp", ascending=False)
    positions, names = yticks(ax)
    assert names == [f"alpha={a:g} target={t}" for a, t in zip(ordered["alpha"], ordered["target"])]
    assert positions == [3.0, 2.0, 1.0, 0.0]  # the largest gain on top
    assert band_limits(ax) == pytest.approx((-M, M))
    _, lower = bounds.accuracy_bounds(ordered)
    (tick,) = by_gid(ax, "bound")
    assert np.allclose(tick.get_xdata(), lower, equal_nan=True) and list(tick.get_ydata()) == positions
    assert len(by_gid(ax, "seeds")) == 4 and all(len(s.get_offsets()) == len(SEEDS) for s in by_gid(ax, "seeds"))
    calls = {a.get_gid()[5:]: len(a.get_offsets()) for a in ax.collections if str(a.get_gid()).startswith("call:")}
    assert calls == ordered["call"].value_counts().to_dict()
    assert "6 seeds, Holm over a family of 4 setting(s)" in ax.get_title()
    (right,) = ax.child_axes  # the level Holm spent on each row, on the right
    levels, _ = bounds.accuracy_bounds(ordered)
    assert [t.get_text() for t in right.get_yticklabels()] == [f"level {lv:.2g}" for lv in levels]
    assert levels.min() == pytest.approx(0.05 / 4)


def test_the_heat_map_has_a_column_per_claim_and_the_claims_calls(planted_analysis):
    runs, analysis = planted_analysis
    fig = heatmap_figure(analysis.summary, analysis.verdicts)
    (ax,) = fig.axes
    every = claims.all_claims()
    verdicts = analysis.verdicts["ctx-a"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{c.name}\n{verdicts[c.name]['verdict']}" for c in every]
    rows = analysis.summary[~axes.baseline_rows(analysis.summary)]
    codes = np.asarray(ax.images[0].get_array())
    expected = [[HEAT_CALLS.index(c.heat_call(row).call) for c in every] for _, row in rows.iterrows()]
    assert codes.tolist() == expected
    assert yticks(ax)[1] == [f"alpha={a:g} target={t}" for a, t in zip(rows["alpha"], rows["target"])]
    assert len(ax.texts) == len(rows) * len(every)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(HEAT_CALLS)


class Extra(Claim):
    name = "extra"
    words = "a claim registered by a test"
    metrics = ("test_acc",)

    def verdict(self, table, context):
        return verdict_dict("inconclusive", ["planted"], None, None, "none")

    def heat_call(self, row):
        return HeatCall(HEAT_SUPPORTS if row["alpha"] > 5e-4 else HEAT_AGAINST, "x")


def test_a_claim_registered_later_is_a_heat_map_column():
    runs, predictions, labels = sweep()
    claims.register(Extra())
    try:
        analysis = analyse(runs, axes.SETTING_COLUMNS, M, predictions, labels, n_boot=20, n_spread_sim=20)
        (ax,) = heatmap_figure(analysis.summary, analysis.verdicts).axes
    finally:
        claims.unregister("extra")
    assert ax.get_xticklabels()[-1].get_text() == "extra\ninconclusive"
    assert len(ax.get_xticklabels()) == len(claims.all_claims()) + 1
    column = np.asarray(ax.images[0].get_array())[:, -1].tolist()
    assert column == [HEAT_CALLS.index(HEAT_AGAINST)] * 2 + [HEAT_CALLS.index(HEAT_SUPPORTS)] * 2


def test_the_feature_gap_and_churn_figures(planted_analysis):
    runs, analysis = planted_analysis
    summary = analysis.summary
    base = summary[axes.baseline_rows(summary)].iloc[0]
    panels = [ax for ax in features_figure(summary).axes if ax.axison]
    margins = {m: base[f"{m}_margin_pp"] for m in features.METRICS}
    assert [ax.get_title() for ax in panels] == [f"{m}: m_j = {margins[m]:.3g} pp" for m in features.METRICS]
    for ax, metric in zip(panels, features.METRICS):
        assert band_limits(ax) == pytest.approx((-base[f"{metric}_margin_pp"], base[f"{metric}_margin_pp"]))
    gap = gap_figure(summary, runs, M).axes
    assert len([ax for ax in gap if ax.get_title()]) == 2  # the gap change and the accuracy change
    assert all(band_limits(ax) == pytest.approx((-M, M)) for ax in gap[:2])
    (ax,) = [a for a in churn_figure(summary, runs, M).axes if a.get_title()]
    m_c = M / 100 * N_TEST
    assert band_limits(ax) == pytest.approx((-m_c, m_c))
    rows = summary[~axes.baseline_rows(summary)].sort_values("churn_delta")
    (tick,) = by_gid(ax, "bound")
    assert np.allclose(tick.get_xdata(), rows["churn_lower_bound"])


def test_write_plots_writes_every_file_and_removes_the_retired_ones(planted_analysis, tmp_path):
    runs, analysis = planted_analysis
    histories = pd.DataFrame(columns=["run_id", "context", *axes.SETTING_COLUMNS, "seed", "epoch", "val_acc"])
    for name in RETIRED:
        (tmp_path / name).write_bytes(b"old")
    written = write_plots(runs, histories, tmp_path, analysis)
    assert [p.name for p in written] == list(PLOTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in written)


def test_two_contexts_get_a_panel_each(tmp_path):
    runs, predictions, labels = sweep(("ctx-a", "ctx-b"))
    analysis = analyse(runs, axes.SETTING_COLUMNS, M, predictions, labels, n_boot=20, n_spread_sim=20)
    forest = [ax for ax in forest_figure(analysis.summary, runs, M).axes if ax.get_title()]
    assert [ax.get_title().split("\n")[-1] for ax in forest] == ["[ctx-a]", "[ctx-b]"]
    assert len(heatmap_figure(analysis.summary, analysis.verdicts).axes) == 2
    assert len([ax for ax in features_figure(analysis.summary).axes if ax.axison]) == 2 * len(features.METRICS)
    assert stats.SIGNIFICANCE == 0.05  # the levels above assume it
