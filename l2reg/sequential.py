"""Group-sequential tests: alpha spending, boundaries, crossing probabilities, the graphical Holm
procedure across looks, and estimates adjusted for the sequential design.

The standardised statistics Z_1..Z_K of one hypothesis at looks with information I_1 < ... < I_K
form a Brownian motion on the information scale: Z_k ~ N(theta sqrt(I_k), 1), corr(Z_j, Z_k) =
sqrt(I_j / I_k). Crossing probabilities come from the numerical integration of Jennison & Turnbull
(2000, ch. 19; the grid gsDesign uses, r = 18): exact up to ~1e-8 here, no Monte Carlo.

- Spending: Lan-DeMets O'Brien-Fleming type, alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), t the
  information fraction (one-sided alpha).
- Boundaries: b_k with P_0(Z_j < b_j for j < k, Z_k >= b_k) = alpha(t_k) - alpha(t_{k-1}).
- t-tests: the z boundary becomes a t boundary of equal nominal one-sided p at the look's degrees
  of freedom (n_k - 1): t_k = t^{-1}_{n_k-1}(Phi(b_k)).
- Several hypotheses: the graphical procedure of Bretz et al. (2009) with group-sequential tests
  (Maurer & Bretz 2013): hypothesis i is tested at level w_i alpha with its own spending; when one
  is rejected its weight passes along the graph to the others, whose boundaries at this look and
  later ones are those of their new level. Holm is the complete graph with equal weights.
- Estimates: stage-wise ordering (Armitage 1957; Jennison & Turnbull 8.4): the p-value of an
  outcome (stopping look k*, z*) is P_theta(cross before k*) + P_theta(reach k*, Z_k* >= z*); the
  confidence bounds and the median-unbiased estimate solve p(theta) = 1 - c/2, c/2 and 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

GRID_R = 18  # gsDesign's default: 6r - 1 grid points per look before Simpson's midpoints


def obrien_fleming_spending(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spent by information fraction t (one-sided alpha)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    return float(2.0 - 2.0 * sps.norm.cdf(sps.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(t)))


def _grid(r: int, mean: float, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Integration points and Simpson weights on [low, high] for a density centred on `mean`:
    Jennison & Turnbull's 6r - 1 points (dense within +-3 of the mean, log-spaced tails to +-(3 + 4
    log r)), clipped to the interval, with the midpoints Simpson's rule needs."""
    i = np.arange(1, 6 * r)
    x = np.where(i < r, mean - 3 - 4 * np.log(r / np.maximum(i, 1)),
                 np.where(i <= 5 * r, mean - 3 + 3 * (i - r) / (2 * r), mean + 3 + 4 * np.log(r / (6 * r - i))))
    x = x[(x > low) & (x < high)]
    if np.isfinite(low) and low > mean - 3 - 4 * math.log(r):
        x = np.concatenate([[low], x])
    if np.isfinite(high) and high < mean + 3 + 4 * math.log(r):
        x = np.concatenate([x, [high]])
    if len(x) < 2:
        return np.array([]), np.array([])
    points = np.empty(2 * len(x) - 1)
    points[0::2] = x
    points[1::2] = (x[:-1] + x[1:]) / 2
    weights = np.zeros_like(points)
    widths = np.diff(x)
    weights[0:-1:2] += widths / 6
    weights[2::2] += widths / 6
    weights[1::2] += 4 * widths / 6
    return points, weights


@dataclass(frozen=True)
class Crossing:
    """Per look k: the probability of stopping there above the upper boundary (upper[k]) and below
    the lower one (lower[k]), and of reaching look k at all (reach[k])."""

    upper: np.ndarray
    lower: np.ndarray
    reach: np.ndarray


def crossing_probabilities(information: Sequence[float], upper: Sequence[float], lower: Sequence[float] | None = None,
                           theta: float = 0.0, last_upper: float | None = None, r: int = GRID_R) -> Crossing:
    """Crossing probabilities of Z_1..Z_K (Z_k ~ N(theta sqrt(I_k), 1), independent increments) for
    upper boundaries `upper` and optional lower ones (binding; -inf = none). `last_upper`, when
    given, replaces the upper boundary of the last look (the stage-wise p-value's z*)."""
    info = np.asarray(information, dtype=float)
    k_max = len(info)
    b = np.array(upper, dtype=float)
    if last_upper is not None:
        b[-1] = last_upper
    a = np.full(k_max, -np.inf) if lower is None else np.asarray(lower, dtype=float)
    up, down, reach = np.zeros(k_max), np.zeros(k_max), np.zeros(k_max)
    sqrt_i = np.sqrt(info)
    mean1 = theta * sqrt_i[0]
    up[0] = sps.norm.sf(b[0] - mean1)
    down[0] = sps.norm.cdf(a[0] - mean1)
    reach[0] = 1.0
    z, w = _grid(r, mean1, a[0], b[0])
    mass = w * sps.norm.pdf(z - mean1)  # density times weight: the mass of continuing at each point
    for k in range(1, k_max):
        reach[k] = mass.sum()
        delta = info[k] - info[k - 1]
        sd = math.sqrt(delta)
        # Z_k sqrt(I_k) = Z_{k-1} sqrt(I_{k-1}) + N(theta delta, delta)
        shift = z * sqrt_i[k - 1] + theta * delta
        up[k] = float(mass @ sps.norm.sf((b[k] * sqrt_i[k] - shift) / sd))
        down[k] = float(mass @ sps.norm.cdf((a[k] * sqrt_i[k] - shift) / sd)) if np.isfinite(a[k]) else 0.0
        if k + 1 < k_max:
            z_next, w_next = _grid(r, theta * sqrt_i[k], a[k], b[k])
            kernel = sps.norm.pdf((z_next[:, None] * sqrt_i[k] - shift[None, :]) / sd) * sqrt_i[k] / sd
            mass = w_next * (kernel @ mass)
            z = z_next
    return Crossing(up, down, reach)


def spending_boundaries(information_fractions: Sequence[float], alpha: float, r: int = GRID_R) -> np.ndarray:
    """Upper z boundaries of a one-sided level-alpha test with O'Brien-Fleming-type spending at the
    given information fractions (t_K = 1 spends all of alpha). alpha 0: +inf everywhere."""
    t = np.asarray(information_fractions, dtype=float)
    if alpha <= 0:
        return np.full(len(t), np.inf)
    spent = [obrien_fleming_spending(x, alpha) for x in t]
    bounds: list[float] = []
    for k in range(len(t)):
        target = spent[k] - (spent[k - 1] if k else 0.0)
        if target <= 1e-15:
            bounds.append(np.inf)
            continue
        if k == 0:
            bounds.append(float(sps.norm.isf(target)))
            continue
        def excess(c: float, k: int = k, target: float = target) -> float:
            return crossing_probabilities(t[:k + 1], [*bounds, c], r=r).upper[k] - target
        bounds.append(float(optimize.brentq(excess, -10.0, 40.0, xtol=1e-10)))
    return np.array(bounds)


def nominal_p(z_boundaries: Sequence[float]) -> np.ndarray:
    """The nominal one-sided p-values of z boundaries (what a look's test must reach)."""
    return sps.norm.sf(np.asarray(z_boundaries, dtype=float))


def t_boundary(z_boundary: float, n: int) -> float:
    """The t boundary of equal nominal one-sided p for a one-sample t-test with n observations."""
    if not np.isfinite(z_boundary):
        return math.inf
    return float(sps.t.isf(sps.norm.sf(z_boundary), n - 1))


# ----------------------------------------------------------------------------------------------
# the graphical procedure


def holm_graph(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights, transitions) of Holm's procedure as a graph: equal weights 1/m, and a rejected
    hypothesis passes its weight to the others in equal parts."""
    weights = np.full(m, 1.0 / m)
    transitions = np.full((m, m), 1.0 / (m - 1) if m > 1 else 0.0)
    np.fill_diagonal(transitions, 0.0)
    return weights, transitions


def reject_in_graph(weights: np.ndarray, transitions: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """The graph after rejecting hypothesis j (Bretz et al. 2009, Algorithm 1): w_l += w_j g_jl;
    g_lk = (g_lk + g_lj g_jk) / (1 - g_lj g_jl) for l != k, both not j; j leaves the graph."""
    w, g = weights.copy(), transitions.copy()
    m = len(w)
    new_w = w + w[j] * g[j]
    new_g = np.zeros_like(g)
    for source in range(m):
        for k in range(m):
            if source == k or source == j or k == j:
                continue
            denominator = 1.0 - g[source, j] * g[j, source]
            new_g[source, k] = (g[source, k] + g[source, j] * g[j, k]) / denominator if denominator > 0 else 0.0
    new_w[j] = 0.0
    new_g[j, :] = 0.0
    new_g[:, j] = 0.0
    return new_w, new_g


@dataclass
class LookDecision:
    """The outcome of testing a family at one look: which hypotheses were rejected (in order), the
    weights afterwards, and each hypothesis' level and boundary at this look."""

    rejected: list[int]
    weights: np.ndarray
    transitions: np.ndarray
    levels: np.ndarray
    z_boundaries: np.ndarray


def test_look(p_values: Sequence[float], look: int, information_fractions: Sequence[float], alpha: float,
              weights: np.ndarray, transitions: np.ndarray, open_: Sequence[bool]) -> LookDecision:
    """One look of the graphical group-sequential procedure. p_values[i]: the one-sided p of
    hypothesis i's test at this look (NaN: not tested now); a hypothesis with level w_i alpha is
    rejected when its p is at most the nominal p of its boundary at this look. Rejections pass weight
    along the graph, and the hypotheses left are tested again at this look with their new levels,
    until no new rejection. `open_`: the hypotheses still to be decided (not rejected earlier)."""
    w, g = np.asarray(weights, float).copy(), np.asarray(transitions, float).copy()
    still = list(open_)
    rejected: list[int] = []
    p = np.asarray(p_values, dtype=float)
    while True:
        levels = w * alpha
        bounds = np.array([spending_boundaries(information_fractions, lv)[look] if still[i] and lv > 0 else np.inf
                           for i, lv in enumerate(levels)])
        nominal = nominal_p(bounds)
        hits = [i for i in range(len(p)) if still[i] and np.isfinite(p[i]) and p[i] <= nominal[i]]
        if not hits:
            return LookDecision(rejected, w, g, levels, bounds)
        j = min(hits, key=lambda i: p[i] / max(nominal[i], 1e-300))  # the clearest first; order does not change the set
        rejected.append(j)
        still[j] = False
        w, g = reject_in_graph(w, g, j)


# ----------------------------------------------------------------------------------------------
# estimates after a group-sequential test


def stagewise_p(theta: float, information: Sequence[float], upper: Sequence[float], stop_look: int,
                z_observed: float) -> float:
    """P_theta of an outcome at least as extreme as (stop_look, z_observed) in the stage-wise
    ordering: crossing an upper boundary at an earlier look, or reaching stop_look with Z >= z."""
    info = list(information)[:stop_look + 1]
    bounds = list(upper)[:stop_look + 1]
    crossing = crossing_probabilities(info, bounds, theta=theta, last_upper=z_observed)
    return float(crossing.upper.sum())


def stagewise_estimates(information: Sequence[float], upper: Sequence[float], stop_look: int, z_observed: float,
                        confidence: float = 0.95) -> dict:
    """Median-unbiased estimate and confidence bounds of theta (drift per unit information: the
    standardised effect) from a group-sequential outcome, by the stage-wise ordering."""
    tail = (1 - confidence) / 2

    def solve(target: float) -> float:
        span = 20.0 / math.sqrt(information[0])
        return float(optimize.brentq(lambda th: stagewise_p(th, information, upper, stop_look, z_observed) - target,
                                     -span, span, xtol=1e-10))

    return {"median": solve(0.5), "low": solve(tail), "high": solve(1 - tail)}
