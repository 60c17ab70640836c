"""Elementary statistics: the tests, intervals, corrections, power and resampling the claims use.

Nothing here knows a claim, a column of the runs table or a context: the claims (l2reg.claims)
decide what is compared with what; this module computes. Conventions (tests at level
``SIGNIFICANCE`` = 0.05):

- Pairs. d = the paired differences of one metric (setting minus baseline, same seed); n = number
  of pairs, dbar = mean(d), sd = sd(d) (ddof 1). m = a margin (the smallest effect of interest).
- One-sample t-tests of the pairs, t = (dbar - mu0) / (sd / sqrt(n)), n - 1 degrees of freedom, p from
  ``scipy.stats.ttest_1samp``:
  superiority  H0: mean d <= m   (alternative 'greater')   -> p_superior
  inferiority  H0: mean d >= m   (alternative 'less')      -> p_inferior
  equivalence  TOST: max(p of H0 mean d <= -m, p of H0 mean d >= m)  -> p_equivalent
  worse        H0: mean d >= 0   (alternative 'less')      -> p_worse
  above zero   H0: mean d <= 0   (alternative 'greater')   -> p_above_zero
- Fewer than 2 pairs: not tested (p = NaN). Differences without spread (sd <= 1e-9 * max(1, |dbar|)):
  the t statistic is undefined, so no test (p = NaN, which is never significant) and no CI (NaN). Such
  ties come from accuracies measured in steps of one image (two seeds that both differ by exactly
  -0.01 pp) or from arms that gave identical runs; neither is evidence of a mean known exactly.
  In Holm's family such a member still counts, as p = 1 (no evidence), so ties never make the family
  smaller; the power calculations (seeds_needed) leave them out: there is no sd to plan with.
- Holm: step-down adjusted p (:func:`holm`) over the tested members of the family; NaN is not a test.

Distributions come from scipy (t, noncentral t, F via ``levene``); the arithmetic (Holm, Hedges' g,
bootstrap resampling) is written out here and tested against brute force.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
POWER = 0.8
SPREAD_RATIO_OF_INTEREST = 1 / 1.5  # "1.5x smaller seed-to-seed sd"
N_BOOT = 2000
N_SPREAD_SIMULATIONS = 2000
RNG_SEED = 12345
MAX_SEEDS = 100_000
MAX_SPREAD_SEEDS = 2000
EXACT_TOLERANCE = 1e-9
MIN_SPREAD_RUNS = 3  # Brown-Forsythe with 2 runs per arm has no within-arm spread of deviations


# ----------------------------------------------------------------------------------------------
# elementary statistics


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN stays NaN and does not count as a test.

    With the k tested p sorted p_(1) <= ... <= p_(k): adj_(i) = min(1, max_{j <= i} (k - j + 1) p_(j)).
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    k = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (k - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def holm_family(p_values, n_pairs) -> np.ndarray:
    """Holm over a family whose members are the hypotheses with >= 2 pairs. A member without spread
    (no t-test: p NaN, module docstring) counts as p = 1, no evidence, so a tie never shrinks the
    family and never lowers another member's adjusted p; its own adjusted p stays NaN."""
    p = np.asarray(p_values, dtype=float)
    counted = np.where(np.isnan(p) & (np.asarray(n_pairs) >= 2), 1.0, p)
    adjusted = holm(counted)
    adjusted[np.isnan(p)] = np.nan
    return adjusted


def hedges_g(x, y) -> float:
    """Standardised mean difference (mean x - mean y) / s_pooled times 1 - 3 / (4 (n_x + n_y) - 9),
    s_pooled**2 = ((n_x - 1) s_x**2 + (n_y - 1) s_y**2) / (n_x + n_y - 2); NaN if undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return float("nan")
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return float("nan")
    return float((x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9)))


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[~np.isnan(values)]


def _is_exact(d: np.ndarray) -> bool:
    """No spread beyond float rounding: sd <= 1e-9 * max(1, |mean|)."""
    return bool(d.std(ddof=1) <= EXACT_TOLERANCE * max(1.0, abs(d.mean())))


def one_sample_p(d, popmean: float, alternative: str = "two-sided") -> float:
    """p of the one-sample t-test of mean(d) against ``popmean`` (scipy ``ttest_1samp``).

    n < 2, or differences without spread (see the module docstring): NaN, not a test.
    """
    d = _clean(d)
    if len(d) < 2 or _is_exact(d):
        return float("nan")
    return float(sps.ttest_1samp(d, popmean, alternative=alternative).pvalue)


def t_interval(d, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Confidence interval of mean(d): dbar +- t_{n-1, (1+c)/2} sd / sqrt(n) (scipy); NaN for n < 2 or
    differences without spread (no t-interval exists)."""
    d = _clean(d)
    if len(d) < 2 or _is_exact(d):
        return float("nan"), float("nan")
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def paired_margin_tests(d, margin: float) -> dict:
    """The paired tests of one setting against its baseline with margin m (module docstring):
    n, mean, sd, 95 % t-interval, p_superior (H0 mean <= m), p_inferior (H0 mean >= m),
    p_equivalent (TOST, max of H0 mean <= -m and H0 mean >= m), p_worse (H0 mean >= 0),
    p_above_zero (H0 mean <= 0)."""
    d = _clean(d)
    low, high = t_interval(d)
    return {
        "paired_n": len(d),
        "delta_pp": float(d.mean()) if len(d) else float("nan"),
        "paired_sd_pp": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
        "paired_ci_low_pp": low, "paired_ci_high_pp": high,
        "p_superior": one_sample_p(d, margin, "greater"),
        "p_inferior": one_sample_p(d, margin, "less"),
        "p_equivalent": max(one_sample_p(d, -margin, "greater"), one_sample_p(d, margin, "less"))
        if len(d) > 1 else float("nan"),
        "p_worse": one_sample_p(d, 0.0, "less"),
        "p_above_zero": one_sample_p(d, 0.0, "greater"),
    }



def welch(x, y) -> dict:
    """Welch's unpaired t-test of mean x - mean y (scipy ``ttest_ind(equal_var=False)``), its 95 % CI,
    and Hedges' g. Both arms without spread: no test (NaN), as for the paired tests."""
    x, y = _clean(x), _clean(y)
    row = {"welch_ci_low_pp": float("nan"), "welch_ci_high_pp": float("nan"), "welch_p": float("nan"),
           "hedges_g": hedges_g(x, y)}
    if len(x) < 2 or len(y) < 2:
        return row
    if _is_exact(x) and _is_exact(y):
        return row
    result = sps.ttest_ind(x, y, equal_var=False)
    ci = result.confidence_interval(CONFIDENCE)
    row.update(welch_ci_low_pp=float(ci.low), welch_ci_high_pp=float(ci.high), welch_p=float(result.pvalue))
    return row


# ----------------------------------------------------------------------------------------------
# power and seeds needed


def t_test_power(n: int, effect: float, sd: float, level: float) -> float:
    """Power of the one-sided one-sample t-test with n pairs when the true mean lies ``effect`` beyond
    the null boundary (in the alternative's direction) and the pairs' sd is ``sd``:
    P(T > t_{n-1, 1-level}) with T ~ noncentral t(n - 1, effect sqrt(n) / sd) (scipy ``nct``)."""
    dof = n - 1
    return float(sps.nct.sf(sps.t.ppf(1 - level, dof), dof, effect * math.sqrt(n) / sd))


def seeds_needed(effect: float, sd: float, level: float, power: float = POWER,
                 max_n: int = MAX_SEEDS) -> int | None:
    """Smallest n in 2..max_n with :func:`t_test_power` (n, effect, sd, level) >= power (power rises with
    n, so a bisection finds it). None when no finite n does it: effect <= 0 (the observed mean sits on
    the null boundary or on its wrong side), sd not > 0 (nothing to model), or n > max_n needed."""
    if not (np.isfinite(effect) and np.isfinite(sd)) or effect <= 0 or sd <= EXACT_TOLERANCE * max(1.0, effect):
        return None
    if not t_test_power(max_n, effect, sd, level) >= power:  # NaN (scipy's nct beyond its range) included
        return None
    low, high = 1, max_n  # power(low) < target (or low < 2), power(high) >= target
    while high - low > 1:
        middle = (low + high) // 2
        if middle >= 2 and t_test_power(middle, effect, sd, level) >= power:
            high = middle
        else:
            low = middle
    return high


def spread_power(n_setting: int, n_base: int, level: float, ratio: float = SPREAD_RATIO_OF_INTEREST,
                 n_sim: int = N_SPREAD_SIMULATIONS, rng_seed: int = RNG_SEED) -> float:
    """Monte Carlo power of the stability rule: normal data, sd(setting) = ratio * sd(baseline), the
    fraction of ``n_sim`` simulated sweeps where the Brown-Forsythe test (scipy ``levene``,
    center='median') gives p < level AND the setting's sample sd is the smaller. Fixed rng seed,
    so deterministic. NaN with fewer than 3 runs in an arm."""
    if n_setting < MIN_SPREAD_RUNS or n_base < MIN_SPREAD_RUNS:
        return float("nan")
    rng = np.random.default_rng(rng_seed)
    x = ratio * rng.standard_normal((n_sim, n_setting))
    y = rng.standard_normal((n_sim, n_base))
    p = sps.levene(x, y, center="median", axis=1).pvalue
    smaller = x.std(axis=1, ddof=1) < y.std(axis=1, ddof=1)
    return float(np.mean((p < level) & smaller))


def spread_seeds_needed(level: float, ratio: float = SPREAD_RATIO_OF_INTEREST, power: float = POWER,
                        max_n: int = MAX_SPREAD_SEEDS, n_sim: int = N_SPREAD_SIMULATIONS,
                        rng_seed: int = RNG_SEED) -> int | None:
    """Smallest n (runs per arm, equal arms) in 3..max_n with :func:`spread_power` (n, n, level, ratio)
    >= power: doubling from 3 until the power is reached, then bisection (the simulated power rises
    with n up to Monte Carlo error). None if even max_n is not enough."""
    def enough(n: int) -> bool:
        return spread_power(n, n, level, ratio, n_sim, rng_seed) >= power

    low, high = MIN_SPREAD_RUNS - 1, MIN_SPREAD_RUNS  # invariant: not enough(low) (or low < 3)
    while not enough(high):
        if high >= max_n:
            return None
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return high


# ----------------------------------------------------------------------------------------------
# two-level paired bootstrap over seeds and test images


def draw_bootstrap_counts(n_seeds: int, n_images: int, n_informative: int, n_boot: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts for ``n_boot`` replicates: seed counts ~ Multinomial(S, 1/S each), shape (B, S),
    and the counts of the first ``n_informative`` images of Multinomial(N, 1/N each) (the remaining
    N - M images are one lumped category, dropped), shape (B, M). The same images for every seed."""
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot)
    p = np.append(np.full(n_informative, 1.0 / n_images), max(0.0, 1.0 - n_informative / n_images))
    image_counts = rng.multinomial(n_images, p, size=n_boot)[:, :n_informative]
    return seed_counts, image_counts


def gain_from_counts(diff: np.ndarray, seed_counts: np.ndarray, image_counts: np.ndarray,
                     n_images: int) -> np.ndarray:
    """Replicate statistics, in pp: 100 / (S N) sum_s sum_i c_s w_i diff[s, i], i.e. the mean over
    resampled seeds of (acc_setting - acc_base) on the resampled images; ``diff`` (S, M) holds
    correct_setting - correct_base on the images where some pair differs (the others add 0)."""
    n_seeds = diff.shape[0]
    per_image = seed_counts @ diff.astype(np.int64)  # (B, M): sum over resampled seeds
    return 100.0 * (per_image * image_counts).sum(axis=1) / (n_seeds * n_images)


def bootstrap_gain(correct_setting, correct_base, n_boot: int = N_BOOT, rng_seed: int = RNG_SEED,
                   confidence: float = CONFIDENCE) -> tuple[float, float, np.ndarray]:
    """Two-level paired bootstrap of the accuracy gain (pp) from per-image correctness, arrays (S, N)
    with row s = seed s of the setting / of the baseline (the same seed in the same row).

    Each replicate resamples the S seeds with replacement (both arms keep their pairing) and the N test
    images with replacement (the same images for both arms and every seed: the test set is shared, so
    images are crossed with seeds), and takes the mean over resampled seeds of acc_setting - acc_base on
    the resampled images (:func:`gain_from_counts`). Only images where some pair differs enter the
    arithmetic. Returns the percentile CI (low, high) and the replicates; fixed rng seed."""
    correct_setting = np.asarray(correct_setting, dtype=bool)
    correct_base = np.asarray(correct_base, dtype=bool)
    if correct_setting.shape != correct_base.shape or correct_setting.ndim != 2:
        raise ValueError("correct_setting and correct_base must both have shape (seeds, images)")
    n_seeds, n_images = correct_setting.shape
    diff = correct_setting.astype(np.int8) - correct_base.astype(np.int8)
    informative = np.flatnonzero((diff != 0).any(axis=0))
    rng = np.random.default_rng(rng_seed)
    seed_counts, image_counts = draw_bootstrap_counts(n_seeds, n_images, len(informative), n_boot, rng)
    replicates = gain_from_counts(diff[:, informative], seed_counts, image_counts, n_images)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high), replicates


# ----------------------------------------------------------------------------------------------
# churn: how often two seeds of one arm disagree on a test image
#
# An arm's runs r = 0..R-1 predict labels for the same N test images. d(r, s) = the number of images
# on which runs r and s predict different labels; an arm's churn over n seeds = the mean of d over
# its n (n - 1) / 2 distinct pairs of runs (a U-statistic of degree 2), in images. Comparing two
# arms paired by seed (row i of both from seed i: same init, data order and dropout masks): delta =
# churn(setting) - churn(baseline). Everything here is conditional on the N test images (they are
# fixed; only seeds are permuted or left out) and pure numpy with integer sums, so comparisons of
# permuted statistics are exact (no float tolerance). Its interval is a jackknife-t over seeds
# (churn_interval), not a bootstrap: the percentile bootstrap of this U-statistic was too narrow at
# 5 to 20 seeds (churn_interval's docstring has the coverages).

MIN_CHURN_PAIRS = 3  # a permutation test over 2 seeds has 4 arrangements: p >= 1/2 whatever the data
N_CHURN_PERMUTATIONS = 10_000
CHURN_EXACT_UP_TO = 12  # all 2^n within-seed swaps up to n = 12 (4,096), random swaps beyond
_CHUNK = 2048  # permutation replicates computed at once (memory ~ _CHUNK * n * n)


def disagreement_counts(predictions: np.ndarray) -> np.ndarray:
    """(R, R) int64 counts of test images on which runs r and s predict different labels (zero
    diagonal, symmetric); `predictions` (R, N) integer labels of R runs on the same N test images."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must have shape (runs, images), not {predictions.shape}")
    runs = len(predictions)
    counts = np.zeros((runs, runs), dtype=np.int64)
    for r in range(runs):
        counts[r] = (predictions != predictions[r]).sum(axis=1)
    return counts


def _pair_sums(counts: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Sum of counts over the ordered pairs (r, s), r != s, of each row of `members` (B, n): twice
    the sum over its distinct pairs, as int64 (the diagonal of `counts` is 0)."""
    return counts[members[:, :, None], members[:, None, :]].sum(axis=(1, 2))


def churn(counts: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Mean pairwise disagreement (images) within each row of `members` (B, n) of n distinct run
    indices into the (R, R) `counts`: the mean over the n (n - 1) / 2 distinct pairs. (B,) floats."""
    members = np.atleast_2d(np.asarray(members))
    n = members.shape[1]
    if n < 2:
        raise ValueError("churn needs at least 2 runs per arm (one pair)")
    return _pair_sums(counts, members) / (n * (n - 1))


def _swap_members(masks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Run indices of the two arms after swapping arm labels within the seeds a mask marks (1 =
    swapped): runs 0..n-1 are arm A's seeds, n..2n-1 arm B's, seed i of both in position i. A gets
    run i + n * mask_i of seed i, B the other one."""
    masks = np.asarray(masks, dtype=np.int64)
    seeds = np.arange(n)
    return seeds + n * masks, seeds + n * (1 - masks)


def _swap_statistic(counts: np.ndarray, masks: np.ndarray, n: int) -> np.ndarray:
    """n (n - 1) * (churn(A) - churn(B)) for each row of `masks`, in exact integers, chunked."""
    out = np.empty(len(masks), dtype=np.int64)
    for start in range(0, len(masks), _CHUNK):
        a, b = _swap_members(masks[start:start + _CHUNK], n)
        out[start:start + _CHUNK] = _pair_sums(counts, a) - _pair_sums(counts, b)
    return out


def churn_permutation_test(setting: np.ndarray, baseline: np.ndarray, n_perm: int = N_CHURN_PERMUTATIONS,
                           rng_seed: int = RNG_SEED, exact_up_to: int = CHURN_EXACT_UP_TO) -> dict:
    """Is the setting's churn lower than the baseline's? `setting`, `baseline`: (n, N) predicted
    labels, row i of both from seed i. Statistic T = churn(setting) - churn(baseline), in images.

    H0 (a sharp null): within each seed, the setting's run and the baseline's run are exchangeable
    -- the joint distribution of a seed's pair of runs is unchanged when the arm labels are swapped,
    independently across seeds (e.g. the regularizer changes nothing about the predictions'
    distribution). Under it every swap pattern is equally likely, so the null distribution of T is
    that of T with the labels swapped within a subset of seeds: all 2^n subsets for n <= exact_up_to
    (an exact test of level alpha: the smallest attainable p is 2^-n, the full swap maps T to -T), else
    `n_perm` random subsets with the observed one counted, p = (1 + #{T* <= T}) / (1 + n_perm) (valid
    too). H1: lower churn; p_lower = share of swaps with T* <= T observed (ties count).

    It is a test of that sharp null, not of "equal churn" alone: if the arms have equal churn but err
    on different images, a swapped arm mixes runs of both, its cross-arm pairs disagree more, and the
    permutation distribution of T is wider than T's own: the test is then conservative (tests/unit/
    test_churn.py measures it), never liberal in the cases simulated there.

    Fewer than MIN_CHURN_PAIRS seeds: no test (NaN). Returns {n, churn_setting, churn_baseline,
    delta, p_lower} (churns and delta in images)."""
    setting, baseline = np.asarray(setting), np.asarray(baseline)
    if setting.shape != baseline.shape or setting.ndim != 2:
        raise ValueError(f"setting and baseline must both have shape (seeds, images): {setting.shape} and "
                         f"{baseline.shape}")
    n = len(setting)
    if n < MIN_CHURN_PAIRS:
        return {"n": n, "churn_setting": float("nan"), "churn_baseline": float("nan"), "delta": float("nan"),
                "p_lower": float("nan")}
    counts = disagreement_counts(np.concatenate([setting, baseline]))
    pairs = n * (n - 1)
    identity = np.zeros((1, n), dtype=np.int64)
    churn_a = float(churn(counts, _swap_members(identity, n)[0])[0])
    churn_b = float(churn(counts, _swap_members(identity, n)[1])[0])
    t_obs = int(_swap_statistic(counts, identity, n)[0])
    if n <= exact_up_to:
        masks = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
        p = float(np.mean(_swap_statistic(counts, masks, n) <= t_obs))
    else:
        masks = np.random.default_rng(rng_seed).integers(0, 2, size=(n_perm, n))
        p = float((1 + np.sum(_swap_statistic(counts, masks, n) <= t_obs)) / (1 + n_perm))
    return {"n": n, "churn_setting": churn_a, "churn_baseline": churn_b, "delta": t_obs / pairs, "p_lower": p}


def churn_jackknife(setting: np.ndarray, baseline: np.ndarray) -> dict:
    """delta = churn(setting) - churn(baseline) (images) and its leave-one-seed-out jackknife.

    delta is a U-statistic of degree 2 over the n seeds (kernel d_setting(i, j) - d_baseline(i, j) of
    a pair of seeds; seed i's two runs travel together). delta_(-i) = delta over the n - 1 seeds
    without seed i (both arms), the pseudo-values n delta - (n - 1) delta_(-i) average to delta
    exactly (a U-statistic is its own jackknife bias correction), and se = sd(pseudo-values, ddof 1) /
    sqrt(n), which is sqrt((n - 1) / n * sum_i (delta_(-i) - mean)^2). On average its square is at
    least the variance of delta (the Efron-Stein inequality; a U-statistic's variance falls with n):
    a t interval on it errs, if anything, on the wide side. The test images stay fixed (conditional
    on this test set, as the permutation test is).

    Fewer than MIN_CHURN_PAIRS seeds: NaN (a seed left out of 2 leaves no pair). Returns {n, delta,
    leave_one_out (n,), pseudo (n,), se, df = n - 1}."""
    setting, baseline = np.asarray(setting), np.asarray(baseline)
    if setting.shape != baseline.shape or setting.ndim != 2:
        raise ValueError(f"setting and baseline must both have shape (seeds, images): {setting.shape} and "
                         f"{baseline.shape}")
    n = len(setting)
    if n < MIN_CHURN_PAIRS:
        empty = np.full(n, np.nan)
        return {"n": n, "delta": float("nan"), "leave_one_out": empty, "pseudo": empty, "se": float("nan"),
                "df": n - 1}
    counts = disagreement_counts(np.concatenate([setting, baseline]))
    kernel = counts[:n, :n] - counts[n:, n:]  # int64, zero diagonal, symmetric
    total = int(kernel.sum())  # twice the sum over distinct pairs
    delta = total / (n * (n - 1))
    leave_one_out = (total - 2 * kernel.sum(axis=1)) / ((n - 1) * (n - 2))
    pseudo = n * delta - (n - 1) * leave_one_out
    return {"n": n, "delta": delta, "leave_one_out": leave_one_out, "pseudo": pseudo,
            "se": float(np.std(pseudo, ddof=1) / math.sqrt(n)), "df": n - 1}


def churn_interval(setting: np.ndarray, baseline: np.ndarray,
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Jackknife-t CI of delta = churn(setting) - churn(baseline) (images): delta +- t_(n-1) * se,
    se from :func:`churn_jackknife`, t_(n-1) the (1 + confidence) / 2 quantile of Student's t with
    n - 1 degrees of freedom. (NaN, NaN) for fewer than MIN_CHURN_PAIRS seeds. confidence = 0.90 gives
    the one-sided 95 % lower bound as its low end (:func:`churn_lower_bound`).

    Chosen over the percentile bootstrap of the seeds (and over BCa and a studentized bootstrap) by
    simulation: two arms' runs of a seed correlated (shared per-image and per-seed latent effects),
    200 to 800 images, churn and its seed-to-seed spread up to those of the committed screens, a
    setting that lowers churn and one that does not, 2,000 studies per cell (Monte-Carlo se 0.005).
    Coverage of the nominal 0.95 two-sided interval / one-sided lower bound: percentile bootstrap
    0.79-0.83 / 0.86-0.89 at n = 5, 0.86-0.89 / 0.90-0.91 at n = 10, 0.91-0.93 / 0.93 at n = 20 (BCa
    the same); jackknife-t 0.94-0.96 / 0.94-0.96 at every n (studentized bootstrap 0.92-0.95 at n = 5,
    0.94-0.95 beyond). Where the baseline now and then has a much worse run (a skewed seed effect in
    one arm) the one-sided bound covered 0.92-0.93 (percentile bootstrap 0.82-0.90): a few skewed
    seeds are not seen in a sample of 10. tests/unit/test_churn.py checks the coverage on a small
    version. Arms whose kernel differences are all equal (identical runs in both arms: delta 0 and
    every pseudo-value 0) get the point interval (delta, delta)."""
    jack = churn_jackknife(setting, baseline)
    if not jack["n"] >= MIN_CHURN_PAIRS:
        return float("nan"), float("nan")
    half = float(sps.t.ppf((1 + confidence) / 2, jack["df"])) * jack["se"]
    return float(jack["delta"] - half), float(jack["delta"] + half)


def churn_lower_bound(setting: np.ndarray, baseline: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """One-sided `confidence` lower bound of delta (images): delta - t_(n-1, confidence) * se, the low
    end of the two-sided :func:`churn_interval` at 2 * confidence - 1. NaN below MIN_CHURN_PAIRS seeds."""
    return churn_interval(setting, baseline, 2 * confidence - 1)[0]
