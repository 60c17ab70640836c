"""l2reg.sequential and the confirmation design: boundaries against published values, crossing
probabilities against simulation, the graphical procedure against its definition, family-wise
error and power by simulation, the stopping logic on planted data, and the stage-wise estimates'
coverage."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from l2reg import sequential as S
from l2reg.confirm import design as D

LOOKS4 = [0.25, 0.5, 0.75, 1.0]


def test_obrien_fleming_spending_spends_alpha_by_the_last_look_and_little_early():
    assert S.obrien_fleming_spending(1.0, 0.025) == pytest.approx(0.025, abs=1e-12)
    assert S.obrien_fleming_spending(0.25, 0.025) == pytest.approx(2 - 2 * sps.norm.cdf(sps.norm.ppf(0.9875) / 0.5))
    assert S.obrien_fleming_spending(0.0, 0.025) == 0.0
    spent = [S.obrien_fleming_spending(t, 0.025) for t in np.linspace(0.05, 1, 20)]
    assert np.all(np.diff(spent) > 0)


def test_boundaries_match_gsdesign_for_four_and_five_equally_spaced_looks():
    # gsDesign(k = 4, test.type = 1, alpha = 0.025, sfu = sfLDOF)$upper$bound, and k = 5
    assert S.spending_boundaries(LOOKS4, 0.025) == pytest.approx([4.3326, 2.9631, 2.3590, 2.0141], abs=1e-4)
    assert S.spending_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.025) == pytest.approx(
        [4.8769, 3.3570, 2.6803, 2.2898, 2.0310], abs=1e-4)


def test_crossing_probabilities_match_published_repeated_testing_and_obrien_fleming_values():
    # gsDesign's unit tests (Anderson 2008): one-sided 0.025 nominal at every look, binding lower
    # bound at -1.96, total upper crossing 0.042 (2 looks), 0.063 (4), 0.097 (10), 0.124 (20)
    z = sps.norm.ppf(0.975)
    for looks, published in ((2, 0.042), (4, 0.063), (10, 0.097), (20, 0.124)):
        crossing = S.crossing_probabilities(range(1, looks + 1), [z] * looks, [-z] * looks)
        assert round(crossing.upper.sum(), 3) == published
    # the classic O'Brien-Fleming design (K = 4, one-sided 0.025): c sqrt(K / k), c = 2.0243
    bounds = [2.0243 * math.sqrt(4 / k) for k in range(1, 5)]
    assert S.crossing_probabilities([1, 2, 3, 4], bounds).upper.sum() == pytest.approx(0.025, abs=2e-5)


def test_crossing_probabilities_under_a_drift_agree_with_a_brownian_motion_simulation():
    bounds = S.spending_boundaries(LOOKS4, 0.025)
    theta = 2.0  # drift per unit of information (information 0.25 .. 1)
    exact = S.crossing_probabilities(LOOKS4, bounds, theta=theta)
    rng = np.random.default_rng(1)
    increments = rng.normal(theta * 0.25, math.sqrt(0.25), size=(200_000, 4))
    z = increments.cumsum(axis=1) / np.sqrt(LOOKS4)
    crossed = z >= bounds
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    simulated = np.array([(first == k).mean() for k in range(4)])
    assert simulated == pytest.approx(exact.upper, abs=4 * math.sqrt(0.25 / 200_000) + 1e-3)
    assert exact.reach[0] == 1.0 and exact.reach[1] == pytest.approx(1 - exact.upper[0], abs=1e-6)


def test_t_boundary_has_the_z_boundarys_nominal_p():
    assert S.t_boundary(2.0141, 40) == pytest.approx(sps.t.isf(sps.norm.sf(2.0141), 39))
    assert S.t_boundary(2.0, 10) > 2.0  # fewer degrees of freedom, a wider boundary
    assert S.t_boundary(math.inf, 10) == math.inf


def test_holm_graph_and_its_update_follow_bretz_et_al():
    w, g = S.holm_graph(3)
    assert w.tolist() == pytest.approx([1 / 3] * 3) and g[0].tolist() == [0.0, 0.5, 0.5]
    w2, g2 = S.reject_in_graph(w, g, 0)
    assert w2.tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert g2[1].tolist() == pytest.approx([0.0, 0.0, 1.0]) and g2[2].tolist() == pytest.approx([0.0, 1.0, 0.0])
    w3, _ = S.reject_in_graph(w2, g2, 2)
    assert w3.tolist() == pytest.approx([0.0, 1.0, 0.0])  # the last one gets the whole alpha: Holm


def test_a_fixed_sample_graphical_holm_is_holm():
    fractions = [1.0]  # one look: the procedure is the ordinary weighted Bonferroni-Holm
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.06, size=3)
        w, g = S.holm_graph(3)
        decision = S.test_look(p, 0, fractions, 0.05, w, g, [True] * 3)
        adjusted = np.maximum.accumulate(np.sort(p) * np.array([3, 2, 1]))
        holm_rejects = {int(i) for i, a in zip(np.argsort(p), adjusted) if a <= 0.05}
        assert set(decision.rejected) == holm_rejects


def _design(**changes):
    values = dict(looks=(10, 20, 30, 40), alpha=0.025, futility_alpha=0.025, margin=0.1, hypotheses=3)
    return D.Design(**{**values, **changes})


@pytest.mark.parametrize("means", [(0.1, 0.1, 0.1), (0.6, 0.1, 0.1), (0.6, 0.6, 0.1)])
def test_familywise_error_at_the_least_favourable_nulls_is_within_monte_carlo_error_of_alpha(means):
    """Every null at the margin, and the configurations where some hypotheses are false (their
    rejections pass alpha to the true nulls: Holm's worst cases)."""
    result = D.simulate(_design(), list(means), 0.09, 0.09, replicates=3000, rng_seed=11)
    se = math.sqrt(0.025 * 0.975 / 3000)
    assert result["familywise_error"] <= 0.025 + 3 * se
    assert result["familywise_error"] >= 0.005  # not a procedure that never rejects


def test_power_with_the_screens_estimates_and_the_runs_a_study_costs():
    result = D.simulate(_design(), [0.213, 0.174, 0.128], 0.09, 0.09, replicates=600, rng_seed=12)
    assert result["rejection_rate"][0] > 0.95 and result["rejection_rate"][1] > 0.8
    assert result["rejection_rate"][2] < result["rejection_rate"][1]
    assert 90 <= result["runs_mean"] <= 150 and result["runs_max"] <= 160
    assert result["familywise_error"] == 0.0  # every hypothesis is false here: nothing to err on


def test_stopping_logic_on_planted_data():
    design = _design(hypotheses=3)
    state = D.start(design)
    big = np.full(10, 1.0) + np.linspace(-0.01, 0.01, 10)  # a huge, steady gain: rejected at the first look
    none = np.full(10, -1.0) + np.linspace(-0.01, 0.01, 10)  # far below the margin: futility at look 1
    noisy = np.array([0.5, -0.3, 0.2, 0.0, 0.4, -0.2, 0.1, 0.3, -0.1, 0.2])  # stays open
    state = D.look(design, state, [big, none, noisy])
    decisions = [h.decision for h in state.hypotheses]
    assert decisions == [D.CONFIRMED, D.FUTILE, D.OPEN] and state.looks_done == 1
    assert state.weights.tolist() == pytest.approx([0.0, 0.5, 0.5])  # H1's weight passed on
    state = D.look(design, state, [None, None, np.tile(noisy, 2)])
    assert state.hypotheses[2].tests[-1]["level"] == pytest.approx(0.0125)  # H2 futile keeps its weight
    state = D.look(design, state, [None, None, np.tile(noisy, 3)])
    state = D.look(design, state, [None, None, np.tile(noisy, 4)])
    assert state.stopped(design) and state.hypotheses[2].decision in (D.CONFIRMED, D.FUTILE, D.UNDECIDED)
    diverged = D.look(design, D.start(design), [big, big, big], diverged=[False, True, False])
    assert diverged.hypotheses[1].decision == D.DIVERGED


def test_a_rejection_passes_alpha_that_rejects_another_at_the_same_look():
    design = _design(looks=(10,), hypotheses=2)
    n = 10
    # H1 clearly better; H2's p lies between the nominal p of alpha/2 and of alpha
    level_half, level_full = design.alpha / 2, design.alpha
    target_p = (sps.norm.sf(D.z_boundaries((1.0,), level_half)[0]) + sps.norm.sf(D.z_boundaries((1.0,), level_full)[0]))
    target_p /= 2
    t = sps.t.isf(target_p, n - 1)
    d2 = np.array([-1.0, 1.0] * 5)
    d2 = 0.1 + (d2 - d2.mean()) / d2.std(ddof=1) * 1.0 + t * 1.0 / math.sqrt(n)
    state = D.look(design, D.start(design), [np.full(10, 2.0) + np.linspace(0, 0.01, 10), d2])
    assert [h.decision for h in state.hypotheses] == [D.CONFIRMED, D.CONFIRMED]
    alone = D.look(design, D.start(design), [np.zeros(10) + np.linspace(0, 0.01, 10), d2])
    assert alone.hypotheses[1].decision != D.CONFIRMED  # at alpha / 2 it would not have been


@pytest.mark.parametrize("truth", [0.15, 0.25, 0.35])
def test_stagewise_estimates_cover_the_truth_and_are_median_unbiased_after_early_stops(truth):
    """Each tail of the 95 % CI misses about 2.5 % and the estimate is below the truth about half
    the time, whether the study stops late (0.15 pp: mostly at the last looks) or early (0.25 and
    0.35 pp: mostly at look 2). Converting the observed t to z by equal p instead missed high in 16 %
    (0.25) and 96 % (0.35) of the replicates."""
    design = _design(hypotheses=1)
    rng = np.random.default_rng(5)
    sd, replicates = 0.13, 300
    miss_low = miss_high = below = 0
    stops = []
    for _ in range(replicates):
        d = rng.normal(truth, sd, 40)
        state = D.start(design)
        while not state.stopped(design):
            state = D.look(design, state, [d[:design.looks[state.looks_done]]])
        h = state.hypotheses[0]
        estimate = D.adjusted_estimate(design, h)
        miss_low += truth < estimate["low"]
        miss_high += truth > estimate["high"]
        below += estimate["median"] < truth
        stops.append(len(h.tests))
    se = math.sqrt(0.025 * 0.975 / replicates)
    assert miss_low / replicates <= 0.025 + 3 * se and miss_high / replicates <= 0.025 + 3 * se
    assert abs(below / replicates - 0.5) <= 3 * math.sqrt(0.25 / replicates)
    if truth >= 0.25:  # the case that matters: the study stops early
        assert np.mean(stops) < 2.5


