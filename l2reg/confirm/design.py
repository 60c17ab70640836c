"""The decision procedure of a confirmation study, from the paired differences alone: looks,
alpha spending, the graphical Holm procedure, the futility stop, the stopping rule, and the
estimates adjusted for the sequential design. No file, no run: l2reg.confirm.study feeds it the
runs' numbers; the tests and the plan's simulation feed it simulated ones.

For hypothesis i (a candidate setting against the baseline, one metric, margin m, direction
"greater"): d = the paired differences over the first n_k seeds at look k, t = (mean(d) - m) /
(sd(d) / sqrt(n_k)) with n_k - 1 degrees of freedom.
- Efficacy: H0_i: mean d <= m is rejected at look k when the one-sided p of t is at most the
  nominal p of hypothesis i's z boundary at look k for its current level w_i alpha (O'Brien-Fleming
  type Lan-DeMets spending at information fractions n_k / n_K; l2reg.sequential). A rejection passes
  w_i along Holm's graph; the others are tested again at this look with their new levels.
- Futility (non-binding: the efficacy boundaries ignore it): H0'_i: mean d >= m rejected at the
  boundary of its own O'Brien-Fleming-type spending of `futility_alpha` = "shown not to gain m"; the
  arm stops.
- A candidate with a diverged run is decided "not confirmed (diverged)" and stops.
- The study stops when every hypothesis is decided, or after the last look.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from l2reg import sequential

# what the plan names (l2reg.confirm.study refuses a plan declaring another procedure)
SPENDING = "Lan-DeMets O'Brien-Fleming type"
MULTIPLICITY = "graphical Holm"
CONFIRMED = "confirmed better"
FUTILE = "shown not better"
DIVERGED = "not confirmed (diverged)"
OPEN = "open"
UNDECIDED = "not decided (last look)"
# an observed t beyond this is taken as this (the stage-wise tail probabilities are 0 to double precision)
STAGEWISE_T_CAP = 40.0


@dataclass(frozen=True)
class Design:
    looks: tuple[int, ...]  # seeds per arm at each look, increasing
    alpha: float  # family-wise, one-sided
    futility_alpha: float  # per hypothesis, one-sided (inferiority: shown not to gain the margin)
    margin: float
    hypotheses: int

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.looks[-1] for n in self.looks)


@functools.lru_cache(maxsize=256)
def z_boundaries(fractions: tuple[float, ...], level: float) -> tuple[float, ...]:
    """The O'Brien-Fleming-type z boundaries at `fractions` for a one-sided level (cached: a
    study's levels take a few values: alpha/k, alpha/(k-1), ...)."""
    return tuple(float(b) for b in sequential.spending_boundaries(fractions, round(level, 15)))


def t_test(d: np.ndarray, margin: float) -> dict:
    """The look's one-sample t-test of the paired differences against the margin, both ways."""
    n = len(d)
    if n < 2:
        return {"n": n, "mean": float(d.mean()) if n else float("nan"), "sd": float("nan"), "t": float("nan"),
                "p_greater": float("nan"), "p_less": float("nan")}
    sd = float(d.std(ddof=1))
    t = (float(d.mean()) - margin) / (sd / math.sqrt(n)) if sd > 0 else math.copysign(math.inf, d.mean() - margin)
    return {"n": n, "mean": float(d.mean()), "sd": sd, "t": t, "p_greater": float(sps.t.sf(t, n - 1)),
            "p_less": float(sps.t.cdf(t, n - 1))}


@dataclass
class HypothesisState:
    decision: str = OPEN
    look: int | None = None  # the look that decided it (0-based)
    level: float = 0.0  # its level when decided, or at the last look it was tested
    tests: list[dict] = field(default_factory=list)  # one per look it was tested at


@dataclass
class StudyState:
    """Where the procedure stands after the looks so far."""

    hypotheses: list[HypothesisState]
    weights: np.ndarray
    transitions: np.ndarray
    looks_done: int = 0

    @property
    def open(self) -> list[int]:
        return [i for i, h in enumerate(self.hypotheses) if h.decision == OPEN]

    def stopped(self, design: Design) -> bool:
        return not self.open or self.looks_done >= len(design.looks)


def start(design: Design) -> StudyState:
    weights, transitions = sequential.holm_graph(design.hypotheses)
    return StudyState([HypothesisState(level=w * design.alpha) for w in weights], weights, transitions)


def look(design: Design, state: StudyState, diffs: Sequence[np.ndarray | None],
         diverged: Sequence[bool] = ()) -> StudyState:
    """Apply look `state.looks_done` to the paired differences of each open hypothesis (seeds of
    this look only: the first design.looks[k] seeds; None for decided ones)."""
    k = state.looks_done
    fractions = design.fractions
    tests: dict[int, dict] = {}
    for i in state.open:
        h = state.hypotheses[i]
        if diverged and diverged[i]:
            h.decision, h.look = DIVERGED, k
            continue
        tests[i] = {**t_test(np.asarray(diffs[i], dtype=float), design.margin), "look": k}
        h.tests.append(tests[i])
    # efficacy, with weight passed along the graph until no new rejection at this look
    w, g = state.weights, state.transitions
    while True:
        hits = []
        for i, test in tests.items():
            h = state.hypotheses[i]
            if h.decision != OPEN:
                continue
            level = w[i] * design.alpha
            h.level = level
            test["level"] = level
            bound = z_boundaries(fractions, level)[k] if level > 0 else math.inf
            test["z_boundary"] = bound
            test["nominal_p"] = float(sps.norm.sf(bound))
            test["t_boundary"] = sequential.t_boundary(bound, test["n"]) if test["n"] >= 2 else math.inf
            if np.isfinite(test["p_greater"]) and test["p_greater"] <= test["nominal_p"]:
                hits.append(i)
        if not hits:
            break
        j = min(hits, key=lambda i: tests[i]["p_greater"])
        state.hypotheses[j].decision, state.hypotheses[j].look = CONFIRMED, k
        w, g = sequential.reject_in_graph(w, g, j)
    state.weights, state.transitions = w, g
    # futility (non-binding): shown below the margin at the boundary of its own spending
    futility = z_boundaries(fractions, design.futility_alpha)[k]
    for i, test in tests.items():
        test["futility_nominal_p"] = float(sps.norm.sf(futility))
        h = state.hypotheses[i]
        if h.decision == OPEN and np.isfinite(test["p_less"]) and test["p_less"] <= test["futility_nominal_p"]:
            h.decision, h.look = FUTILE, k
    state.looks_done = k + 1
    if state.looks_done >= len(design.looks):
        for h in state.hypotheses:
            if h.decision == OPEN:
                h.decision, h.look = UNDECIDED, k
    return state


def adjusted_estimate(design: Design, h: HypothesisState, confidence: float = 0.95) -> dict:
    """The mean paired difference (metric units) adjusted for the sequential design: the stage-wise
    median-unbiased estimate and confidence interval at the look that decided the hypothesis.
    The sd of its last look is taken as known, so the observed t statistic is the standardised
    drift times sqrt(n), and each look's boundary is the t boundary it was actually tested at
    (the z boundary of its level at that look, as a t boundary of equal nominal p). Converting the
    observed t to z by equal p instead would shrink a large t at few degrees of freedom (t = 10
    with 10 seeds is z = 4.6) and bias the estimate of an early stop downwards."""
    if not h.tests or not np.isfinite(h.tests[-1].get("sd", float("nan"))) or h.tests[-1]["sd"] <= 0:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan")}
    last = h.tests[-1]
    stop = len(h.tests) - 1  # the look index within the hypothesis' own tests (all looks from the first)
    information = [t["n"] for t in h.tests]
    bounds = [t.get("t_boundary", math.inf) for t in h.tests]
    theta = sequential.stagewise_estimates(information, bounds, stop, min(last["t"], STAGEWISE_T_CAP), confidence)
    return {key: design.margin + value * last["sd"] for key, value in theta.items()}


def simulate(design: Design, means: Sequence[float], sd_setting: float, sd_baseline: float, replicates: int,
             rng_seed: int = 0) -> dict:
    """Monte Carlo of the procedure with normal metrics: each candidate's value per seed ~ N(mean_i,
    sd_setting), the baseline's ~ N(0, sd_baseline), paired differences sharing the baseline (so the
    hypotheses' tests are correlated as in the study). Returns the share of replicates rejecting any
    true null (mean_i <= margin), each hypothesis' rejection rate, and the runs trained (baseline
    included) per replicate."""
    rng = np.random.default_rng(rng_seed)
    means = np.asarray(means, dtype=float)
    n_max = design.looks[-1]
    any_false, rejected, runs = 0, np.zeros(len(means)), []
    for _ in range(replicates):
        base = rng.normal(0.0, sd_baseline, n_max)
        values = rng.normal(means[:, None], sd_setting, (len(means), n_max))
        d = values - base[None, :]
        state = start(design)
        trained_until = np.zeros(len(means), dtype=int)
        baseline_until = 0
        while not state.stopped(design):
            n = design.looks[state.looks_done]
            for i in state.open:
                trained_until[i] = n
            baseline_until = n
            state = look(design, state, [d[i, :n] if i in state.open else None for i in range(len(means))])
        hits = np.array([h.decision == CONFIRMED for h in state.hypotheses])
        any_false += bool((hits & (means <= design.margin)).any())
        rejected += hits
        runs.append(int(trained_until.sum() + baseline_until))
    runs = np.array(runs)
    return {"familywise_error": any_false / replicates, "rejection_rate": (rejected / replicates).tolist(),
            "runs_mean": float(runs.mean()), "runs_p10": float(np.percentile(runs, 10)),
            "runs_p90": float(np.percentile(runs, 90)), "runs_max": int(runs.max()), "replicates": replicates}
