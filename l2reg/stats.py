"""Statistics of a sweep and the four claim verdicts (accuracy, overfitting, stability, features).

Input: a runs table (one row per run: ``run_id, context, <setting columns>, seed, status`` and the
metrics, accuracies in percent) and, optionally, per-image test predictions and labels per run id.
Output: :func:`analyse` -> :class:`Analysis` (a summary DataFrame with one row per (context, setting)
in the column order of :func:`summary_columns`, and per context the claim verdicts and the
sensitivity table, in plain JSON types).

Conventions (all tests at level ``SIGNIFICANCE`` = 0.05):

- Families. Each ``context`` is its own family: its own baseline (the ok runs with ``alpha == 0``),
  its own Holm corrections, its own verdicts. Nothing is ever pooled across contexts.
- Only runs with ``status == "ok"`` count; the others are counted in ``n_not_ok``.
- Pairing. For a setting and a metric, d_s = metric(setting, s) - metric(baseline, s) over the seeds s
  that both arms have (with a value). n = number of pairs, dbar = mean(d), sd = sd(d) (ddof 1).
- m = ``min_effect_pp``, the smallest effect of interest (0.1 pp = 10 of 10,000 test images).
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
  (Until session 4 such differences were decided without a t-test, p 0 or 1: a partial report then
  called a setting `equivalent` from 2 seeds that both differed by -0.01 pp. The change can only
  remove findings, never create one.)
- Holm: step-down adjusted p (:func:`holm`) over the tested members of the family; NaN is not a test.

Distributions come from scipy (t, noncentral t, F via ``levene``); the arithmetic (Holm, Hedges' g,
bootstrap resampling) is written out here and tested against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

SIGNIFICANCE = 0.05
CONFIDENCE = 0.95
POWER = 0.8
DEFAULT_MIN_EFFECT_PP = 0.1
# The feature claim's margin: probe and noisy-input accuracies spread far more over seeds than
# test accuracy, and 10 images of a probe's accuracy is not "better features": declared 0.5 pp.
DEFAULT_MIN_FEATURE_EFFECT_PP = 0.5
SENSITIVITY_MARGINS_PP = (0.05, 0.1, 0.2, 0.3)
SPREAD_RATIO_OF_INTEREST = 1 / 1.5  # "1.5x smaller seed-to-seed sd"
N_BOOT = 2000
N_SPREAD_SIMULATIONS = 2000
RNG_SEED = 12345
MAX_SEEDS = 100_000
MAX_SPREAD_SEEDS = 2000
EXACT_TOLERANCE = 1e-9
MIN_SPREAD_RUNS = 3  # Brown-Forsythe with 2 runs per arm has no within-arm spread of deviations
BASELINE_COLUMN = "alpha"
FEATURE_METRICS = ("probe_acc_100", "probe_acc_1000", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3")
SPARSITY_METRIC = "zero_fraction"
CLAIMS = ("accuracy", "overfitting", "stability", "features")

# per-setting calls
BASELINE = "baseline"
BETTER = "better"
EQUIVALENT = "equivalent"
WORSE = "worse"
ABOVE_ZERO_ONLY = "above zero (not shown above m)"
UNDECIDED = "undecided"
NOT_TESTED = "not tested"
DIVERGED = "diverged"  # some runs of the setting diverged: never better, never more stable
# claim verdicts (and NOT_TESTED)
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

NO_PREDICTIONS = "runs lack per-image predictions"

ACCURACY_TEST_COLUMNS = [
    "paired_n", "delta_pp", "paired_sd_pp", "paired_ci_low_pp", "paired_ci_high_pp",
    "p_superior", "p_superior_holm", "p_inferior", "p_equivalent", "p_equivalent_holm",
    "p_worse", "p_worse_holm", "p_above_zero", "p_above_zero_holm", "call",
]
FEATURE_SUFFIXES = ("n", "delta_pp", "sd_pp", "p_superior", "p_superior_holm", "p_inferior", "p_worse",
                    "p_worse_holm")
SUMMARY_STAT_COLUMNS = [  # n_diverged: runs of the setting that diverged (counted in n_not_ok too)
    "n", "n_not_ok", "n_diverged", "mean_acc", "std_acc",
    "paired_n", "delta_pp", "delta_images", "paired_sd_pp", "paired_ci_low_pp", "paired_ci_high_pp",
    "p_superior", "p_superior_holm", "p_inferior", "p_equivalent", "p_equivalent_holm",
    "p_worse", "p_worse_holm", "p_above_zero", "p_above_zero_holm", "call",
    "welch_ci_low_pp", "welch_ci_high_pp", "welch_p", "hedges_g",
    "boot_n", "boot_ci_low_pp", "boot_ci_high_pp", "disagreements",
    "train_acc_delta_pp", "train_acc_p", "gap_n", "gap_delta_pp", "gap_sd_pp", "gap_ci_low_pp", "gap_ci_high_pp",
    "gap_p", "gap_p_holm", "gap_p_above_margin", "acc_held_p", "acc_below_p", "support_p", "support_p_holm",
    "test_loss_delta", "test_loss_p", "test_loss_p_holm",
    "spread_ratio", "spread_p", "spread_p_holm", "spread_power_1_5x",
    *[f"{metric}_{suffix}" for metric in FEATURE_METRICS for suffix in FEATURE_SUFFIXES],
    f"{SPARSITY_METRIC}_delta", f"{SPARSITY_METRIC}_p",
    "note",
]


def summary_columns(setting_cols: Sequence[str]) -> list[str]:
    """The summary's column order: context, the setting columns, then ``SUMMARY_STAT_COLUMNS``."""
    return ["context", *setting_cols, *SUMMARY_STAT_COLUMNS]


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


def accuracy_call(row: Mapping) -> str:
    """The first that applies: not tested (< 2 pairs), better (p_superior_holm < 0.05), equivalent
    (p_equivalent_holm < 0.05), worse (p_worse_holm < 0.05), above zero, not shown above m (p_above_zero_holm
    < 0.05), undecided."""
    if not row["paired_n"] >= 2:
        return NOT_TESTED
    for column, call in (("p_superior_holm", BETTER), ("p_equivalent_holm", EQUIVALENT),
                         ("p_worse_holm", WORSE), ("p_above_zero_holm", ABOVE_ZERO_ONLY)):
        if row[column] < SIGNIFICANCE:
            return call
    return UNDECIDED


def accuracy_tests(diffs: Sequence, margin: float) -> pd.DataFrame:
    """One family (the settings of one context): :func:`paired_margin_tests` per setting, Holm across
    the family for p_superior, p_equivalent, p_worse and p_above_zero (p_inferior is used without
    correction, in an intersection-union test), and the call. Rows in the order of ``diffs``."""
    table = pd.DataFrame([paired_margin_tests(d, margin) for d in diffs],
                         columns=[c for c in ACCURACY_TEST_COLUMNS if not c.endswith("_holm") and c != "call"])
    for column in ("p_superior", "p_equivalent", "p_worse", "p_above_zero"):
        table[f"{column}_holm"] = holm_family(table[column], table["paired_n"]) if len(table) else []
    table["call"] = [accuracy_call(row) for _, row in table.iterrows()]
    return table[ACCURACY_TEST_COLUMNS]


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
# per-context assembly


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce").astype(float)
    return pd.Series(np.nan, index=frame.index, dtype=float)


def _check_unique_seeds(ok: pd.DataFrame, what: str) -> None:
    duplicated = ok["seed"][ok["seed"].duplicated(keep=False)]
    if len(duplicated):
        ids = ", ".join(map(str, ok.loc[duplicated.index, "run_id"]))
        raise ValueError(f"{what} has more than one ok run for seed(s) {sorted(set(duplicated))} ({ids}): the "
                         "runs table mixes regimes that its context column does not tell apart")


def paired_differences(setting: pd.DataFrame, baseline: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, d): the seeds both arms have with a value of ``column``, sorted, and d = setting - baseline."""
    left = pd.DataFrame({"seed": setting["seed"], "x": _column(setting, column)}).dropna()
    right = pd.DataFrame({"seed": baseline["seed"], "y": _column(baseline, column)}).dropna()
    pairs = left.merge(right, on="seed").sort_values("seed", kind="stable")
    return pairs["seed"].to_numpy(), (pairs["x"] - pairs["y"]).to_numpy(dtype=float)


def _describe(key: Mapping, setting_cols: Sequence[str]) -> str:
    def show(value):
        return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
    return " ".join(f"{col}={show(key[col])}" for col in setting_cols)


def _bootstrap_row(setting: pd.DataFrame, baseline: pd.DataFrame, predictions, labels, n_boot: int,
                   rng_seed: int) -> dict:
    row = {"boot_n": 0, "boot_ci_low_pp": float("nan"), "boot_ci_high_pp": float("nan"),
           "disagreements": float("nan"), "boot_note": None}
    predictions, labels = predictions or {}, labels or {}
    pairs = setting[["seed", "run_id"]].merge(baseline[["seed", "run_id"]], on="seed", suffixes=("", "_base"))
    correct_s, correct_b, differ = [], [], []
    for set_id, base_id in zip(pairs.sort_values("seed")["run_id"], pairs.sort_values("seed")["run_id_base"]):
        if set_id not in predictions or base_id not in predictions:
            continue
        truth = labels.get(set_id, labels.get(base_id))
        if truth is None:
            continue
        truth = np.asarray(truth)
        other = labels.get(base_id)
        if other is not None and not np.array_equal(np.asarray(other), truth):
            raise ValueError(f"runs {set_id} and {base_id} have different test labels")
        pred_s, pred_b = np.asarray(predictions[set_id]), np.asarray(predictions[base_id])
        if not (pred_s.shape == pred_b.shape == truth.shape):
            raise ValueError(f"runs {set_id} and {base_id}: predictions and labels differ in length")
        correct_s.append(pred_s == truth)
        correct_b.append(pred_b == truth)
        differ.append(int((pred_s != pred_b).sum()))
    if len(correct_s) < 2:
        row["boot_note"] = (f"bootstrap: {NO_PREDICTIONS}" if len(pairs) >= 2 else
                            "bootstrap: fewer than 2 paired seeds")
        return row
    low, high, _ = bootstrap_gain(np.array(correct_s), np.array(correct_b), n_boot, rng_seed)
    row.update(boot_n=len(correct_s), boot_ci_low_pp=low, boot_ci_high_pp=high,
               disagreements=float(np.mean(differ)))
    if len(correct_s) < len(pairs):
        row["boot_note"] = f"bootstrap over {len(correct_s)} of {len(pairs)} paired seeds ({NO_PREDICTIONS})"
    return row


def _context_rows(ctx_runs: pd.DataFrame, context, setting_cols: Sequence[str], margin: float,
                  baseline_col: str, predictions, labels, n_boot: int, rng_seed: int,
                  n_spread_sim: int, feature_margin: float) -> tuple[dict, list[dict], list[np.ndarray]]:
    """The baseline row, the setting rows (with Holm within this context) and the accuracy diffs."""
    ctx_runs = ctx_runs.copy()
    ctx_runs["_gap"] = _column(ctx_runs, "train_acc") - _column(ctx_runs, "test_acc")
    is_base = pd.to_numeric(ctx_runs[baseline_col], errors="coerce") == 0
    is_ok = ctx_runs["status"].astype(str) == "ok"
    base_all, base_ok = ctx_runs[is_base], ctx_runs[is_base & is_ok]
    _check_unique_seeds(base_ok, f"the baseline of context {context!r}")
    n_test = _column(ctx_runs[is_ok], "n_test").median()

    def arm(rows_all: pd.DataFrame, rows_ok: pd.DataFrame) -> dict:
        acc = _column(rows_ok, "test_acc").dropna()
        return {"n": int(len(rows_ok)), "n_not_ok": int(len(rows_all) - len(rows_ok)),
                "n_diverged": int((rows_all["status"].astype(str) == DIVERGED).sum()),
                "mean_acc": float(acc.mean()) if len(acc) else float("nan"),
                "std_acc": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan")}

    baseline_key = {col: (base_all[col].dropna().iloc[0] if len(base_all) and base_all[col].notna().any()
                          else ("none" if col != baseline_col else 0.0)) for col in setting_cols}
    baseline_row = {"context": context, **baseline_key, **arm(base_all, base_ok), "delta_pp": 0.0,
                    "delta_images": 0.0, "call": BASELINE,
                    "note": None if len(base_ok) else "no ok baseline run in this context"}

    rows, diffs = [], []
    base_acc = _column(base_ok, "test_acc").dropna().to_numpy()
    settings = ctx_runs[~is_base]
    # names show the axes that vary between the settings of this context (all of them if none does)
    varying = [col for col in setting_cols if settings[col].nunique(dropna=False) > 1] or list(setting_cols)
    for key_values, group in (settings.groupby(list(setting_cols), sort=True, dropna=False) if len(settings)
                              else []):
        key = dict(zip(setting_cols, key_values if isinstance(key_values, tuple) else (key_values,)))
        ok = group[group["status"].astype(str) == "ok"]
        name = _describe(key, varying)
        _check_unique_seeds(ok, f"setting {name} of context {context!r}")
        row = {"context": context, **key, **arm(group, ok), "_name": name}
        notes = []
        _, d = paired_differences(ok, base_ok, "test_acc")
        diffs.append(d)
        if len(d) < 2:
            notes.append(f"accuracy not tested: {len(d)} paired seed(s), needs 2"
                         + ("" if len(base_ok) else " (no ok baseline run)"))
        row["delta_images"] = float(d.mean()) / 100 * n_test if len(d) else float("nan")
        row.update(welch(_column(ok, "test_acc"), base_acc))
        boot = _bootstrap_row(ok, base_ok, predictions, labels, n_boot, rng_seed)
        boot_note = boot.pop("boot_note")
        if boot_note:
            notes.append(boot_note)
        row.update(boot)
        # overfitting
        _, train_d = paired_differences(ok, base_ok, "train_acc")
        _, gap_d = paired_differences(ok, base_ok, "_gap")
        # the test-accuracy change over the gap's own seeds (those with train accuracy too)
        _, held_d = paired_differences(ok[ok["_gap"].notna()], base_ok[base_ok["_gap"].notna()], "test_acc")
        _, loss_d = paired_differences(ok, base_ok, "test_loss")
        gap_low, gap_high = t_interval(gap_d)
        row.update(train_acc_delta_pp=float(train_d.mean()) if len(train_d) else float("nan"),
                   train_acc_p=one_sample_p(train_d, 0.0, "two-sided"),
                   gap_n=len(gap_d), gap_delta_pp=float(gap_d.mean()) if len(gap_d) else float("nan"),
                   gap_sd_pp=float(gap_d.std(ddof=1)) if len(gap_d) > 1 else float("nan"),
                   gap_ci_low_pp=gap_low, gap_ci_high_pp=gap_high,
                   gap_p=one_sample_p(gap_d, -margin, "less"),
                   gap_p_above_margin=one_sample_p(gap_d, -margin, "greater"),
                   # a smaller gap counts only with the test accuracy held (README): H0 mean <= -m;
                   # shown below -m: H0 mean >= -m; joint support = the larger of gap_p and acc_held_p
                   acc_held_p=one_sample_p(held_d, -margin, "greater"),
                   acc_below_p=one_sample_p(held_d, -margin, "less"),
                   test_loss_delta=float(loss_d.mean()) if len(loss_d) else float("nan"),
                   test_loss_p=one_sample_p(loss_d, 0.0, "less"))
        # stability
        set_acc = _column(ok, "test_acc").dropna().to_numpy()
        if len(set_acc) >= MIN_SPREAD_RUNS and len(base_acc) >= MIN_SPREAD_RUNS:
            sd_base = base_acc.std(ddof=1)
            row["spread_ratio"] = float(set_acc.std(ddof=1) / sd_base) if sd_base > 0 else float("nan")
            p = float(sps.levene(set_acc, base_acc, center="median").pvalue)
            row["spread_p"] = p if np.isfinite(p) else float("nan")
            if not np.isfinite(p):
                notes.append("spread not tested: no spread of absolute deviations")
        else:
            row.update(spread_ratio=float("nan"), spread_p=float("nan"))
            notes.append(f"spread not tested: needs >= {MIN_SPREAD_RUNS} ok runs per arm")
        row["_spread_n"] = (len(set_acc), len(base_acc))
        # features
        for metric in FEATURE_METRICS:
            _, fd = paired_differences(ok, base_ok, metric)
            row.update({f"{metric}_n": len(fd), f"{metric}_delta_pp": float(fd.mean()) if len(fd) else float("nan"),
                        f"{metric}_sd_pp": float(fd.std(ddof=1)) if len(fd) > 1 else float("nan"),
                        f"{metric}_p_superior": one_sample_p(fd, feature_margin, "greater"),
                        f"{metric}_p_inferior": one_sample_p(fd, feature_margin, "less"),
                        f"{metric}_p_worse": one_sample_p(fd, 0.0, "less")})
        _, zd = paired_differences(ok, base_ok, SPARSITY_METRIC)
        row[f"{SPARSITY_METRIC}_delta"] = float(zd.mean()) if len(zd) else float("nan")
        row[f"{SPARSITY_METRIC}_p"] = one_sample_p(zd, 0.0, "two-sided")
        row["note"] = "; ".join(notes) or None
        rows.append(row)

    # Holm within this context only
    tests = accuracy_tests(diffs, margin)
    for row, (_, test) in zip(rows, tests.iterrows()):
        row.update(test.to_dict())
        if row["n_diverged"]:  # a setting that diverges in some seed is not "better": its survivors alone
            row["call"] = DIVERGED  # would hide the failures (declared rule, README)
    for row in rows:  # intersection-union of the two one-sided tests (NaN if either is no test)
        row["support_p"] = max(row["gap_p"], row["acc_held_p"]) if np.isfinite(row["gap_p"]) and np.isfinite(
            row["acc_held_p"]) else float("nan")
    for column in ("gap_p", "test_loss_p", "support_p"):  # paired over the same seeds as the gap
        adjusted = holm_family([row[column] for row in rows], [row["gap_n"] for row in rows])
        for row, value in zip(rows, adjusted):
            row[f"{column}_holm"] = float(value)
    adjusted = holm([row["spread_p"] for row in rows])  # Brown-Forsythe: NaN only where it has no test
    for row, value in zip(rows, adjusted):
        row["spread_p_holm"] = float(value)
    feature_n = [row[f"{metric}_n"] for row in rows for metric in FEATURE_METRICS]
    adjusted = iter(holm_family([row[f"{metric}_p_superior"] for row in rows for metric in FEATURE_METRICS],
                                feature_n))  # over all setting x metric cells of the context
    for row in rows:
        for metric in FEATURE_METRICS:
            row[f"{metric}_p_superior_holm"] = float(next(adjusted))
        # the loss tests veto a setting's support: Holm over its own metrics only (correcting a veto
        # over all cells would make it more lenient, not stricter)
        worse = holm_family([row[f"{metric}_p_worse"] for metric in FEATURE_METRICS],
                            [row[f"{metric}_n"] for metric in FEATURE_METRICS])
        for metric, value in zip(FEATURE_METRICS, worse):
            row[f"{metric}_p_worse_holm"] = float(value)
    k_spread = sum(np.isfinite(row["spread_p"]) for row in rows)
    powers: dict[tuple[int, int], float] = {}
    for row in rows:
        if np.isfinite(row["spread_p"]):
            sizes = row["_spread_n"]
            if sizes not in powers:
                powers[sizes] = spread_power(*sizes, SIGNIFICANCE / k_spread, n_sim=n_spread_sim,
                                             rng_seed=rng_seed)
            row["spread_power_1_5x"] = powers[sizes]
        else:
            row["spread_power_1_5x"] = float("nan")
    return baseline_row, rows, diffs


# ----------------------------------------------------------------------------------------------
# claim verdicts (each takes the setting rows of ONE context, with a "name" column)


def _f(value, digits: int = 3, signed: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if value == 0:
        return "< 1e-300"  # a t-test's p below the smallest float
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _names(table: pd.DataFrame) -> str:
    return "; ".join(table["name"]) if len(table) else "none"


def _claim(verdict: str, reasons: list[str], margin, seeds, tests: str, **extra) -> dict:
    return {"verdict": verdict, "reasons": reasons, "min_effect_pp": margin, "seeds_needed": seeds,
            "tests": tests, **extra}


def diverged_mask(table: pd.DataFrame) -> pd.Series:
    """True for the settings (rows) with a diverged run in some seed. The one definition: the verdicts
    (_split_diverged) and the report's per-axis words both set these settings apart."""
    n_div = table["n_diverged"] if "n_diverged" in table else pd.Series(0, index=table.index)
    return n_div.fillna(0) > 0


def _split_diverged(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(settings without diverged runs, settings with some, a reason sentence or none). A setting
    that diverged in some seed counts as not better / not more stable / not shrinking the gap: its
    surviving runs alone would hide the failures; for the intersection-union "not supported"
    rules it counts as shown (it does not support the claim)."""
    has_diverged = diverged_mask(table)
    diverged = table[has_diverged]
    live = table[~has_diverged]
    if not len(diverged):
        return live, diverged, []
    names = "; ".join(f"{row['name']} ({int(row['n_diverged'])} of {int(row['n']) + int(row['n_not_ok'])} runs)"
                      for _, row in diverged.iterrows())
    return live, diverged, [f"{len(diverged)} setting(s) diverged in some seeds and count as not supporting the "
                            f"claim: {names}"]


def _accuracy_line(row, margin: float) -> str:
    text = (f"{row['name']}: {_f(row['delta_pp'])} pp ({_f(row.get('delta_images', float('nan')), 1)} images), "
            f"paired 95 % CI {_f(row['paired_ci_low_pp'])} to {_f(row['paired_ci_high_pp'])} pp, "
            f"n = {int(row['paired_n'])} seeds, Holm p (gain > {margin:g} pp) = {_p(row['p_superior_holm'])}, "
            f"p (gain < {margin:g} pp) = {_p(row['p_inferior'])}")
    if np.isfinite(row.get("boot_ci_low_pp", float("nan"))):
        text += (f", seed-and-image bootstrap 95 % CI {_f(row['boot_ci_low_pp'])} to {_f(row['boot_ci_high_pp'])} pp "
                 f"({_f(row['disagreements'], 1, False)} images predicted differently per seed)")
    return text


ACCURACY_TESTS = ("paired by seed, d = test_acc(setting) - test_acc(baseline); one-sample t-tests (scipy "
                  "ttest_1samp): better = H0 mean d <= m rejected at Holm 0.05 over the settings of the context; "
                  "not supported = every setting's H0 mean d >= m rejected at 0.05 (intersection-union test, no "
                  "correction); TOST within +-m and H0 mean d >= 0 for the equivalent/worse calls, Holm")


def accuracy_verdict(table: pd.DataFrame, margin: float) -> dict:
    """Accuracy claim for one context from its setting rows (columns of :func:`accuracy_tests`, "name").

    supported: some setting's call is better (p_superior_holm < 0.05). not supported: every setting has
    p_inferior < 0.05 (intersection-union test). not tested: no setting has 2 pairs. Else inconclusive,
    with seeds_needed: if the best observed gain exceeds m, the seeds with which its superiority test
    reaches 80 % power at Holm's first-step level 0.05/k; otherwise the largest, over the settings not yet
    shown below m, of the seeds with which their inferiority test (gain m - dbar) reaches 80 % power at
    0.05 (the IUT's level) -- each assuming the observed mean and sd of the paired differences are true.
    """
    k_all = len(table)
    live, diverged, diverged_reason = _split_diverged(table)
    tested = live[live["paired_n"] >= 2]
    k = len(tested)
    if k == 0 and not len(diverged):
        why = "no regularized setting in this context" if k_all == 0 else (
            f"none of the {k_all} settings has 2 seeds paired with an ok baseline run")
        return _claim(NOT_TESTED, [why], margin, None, ACCURACY_TESTS)
    untested = live[live["paired_n"] < 2]
    if k == 0:  # every setting that could be judged diverged
        verdict = NOT_SUPPORTED if not len(untested) else INCONCLUSIVE
        return _claim(verdict, diverged_reason + ([f"{len(untested)} setting(s) could not be tested: "
                                                   f"{_names(untested)}"] if len(untested) else []),
                      margin, None, ACCURACY_TESTS)
    k_holm = int((table["paired_n"] >= 2).sum())  # Holm's family: every setting with 2 pairs, diverged ones too
    counts = tested["call"].value_counts()
    better = tested[tested["call"] == BETTER].sort_values("delta_pp", ascending=False)
    best = tested.sort_values("delta_pp", ascending=False).iloc[0]
    reasons = []
    if len(better):
        reasons.append(f"{len(better)} of {k} settings raise test accuracy by more than {margin:g} pp (one-sided "
                       f"paired t-test against {margin:g} pp, Holm over {k_holm} settings, p < {SIGNIFICANCE})")
        reasons += [_accuracy_line(row, margin) for _, row in better.iterrows()]
        verdict, seeds = SUPPORTED, None
    elif len(untested) == 0 and (tested["p_inferior"] < SIGNIFICANCE).all():
        reasons.append(f"every one of the {k} settings is shown to gain less than {margin:g} pp (intersection-union "
                       f"test: each one-sided p < {SIGNIFICANCE}, the largest {_p(tested['p_inferior'].max())})")
        equivalent = tested[tested["call"] == EQUIVALENT]
        below_zero = tested[tested["p_worse_holm"] < SIGNIFICANCE]
        reasons.append(f"equivalent to the baseline within +-{margin:g} pp: {_names(equivalent)}")
        reasons.append(f"significantly below the baseline (Holm p < {SIGNIFICANCE}, whatever the call): "
                       f"{_names(below_zero)}")
        rest = tested[~tested["call"].isin([EQUIVALENT]) & ~(tested["p_worse_holm"] < SIGNIFICANCE)]
        if len(rest):
            reasons.append(f"below {margin:g} pp but neither shown equivalent nor below zero: {_names(rest)}")
        reasons.append("highest observed gain: " + _accuracy_line(best, margin))
        verdict, seeds = NOT_SUPPORTED, None
    else:
        verdict = INCONCLUSIVE
        open_rows = tested[~(tested["p_inferior"] < SIGNIFICANCE)]
        if len(open_rows):
            reasons.append(f"no setting is shown to raise test accuracy by more than {margin:g} pp, and "
                           f"{len(open_rows)} of {k} tested settings are not shown to gain less than {margin:g} pp: "
                           f"{_names(open_rows)}")
        else:
            reasons.append(f"every tested setting is shown to gain less than {margin:g} pp, but not every setting "
                           "could be tested")
        reasons.append("highest observed gain: " + _accuracy_line(best, margin))
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) could not be tested (fewer than 2 paired seeds): "
                           f"{_names(untested)}")
        seeds, why = _seeds_for_margin(tested, margin, k_holm, "delta_pp", "paired_sd_pp", "p_inferior")
        reasons.append(why)
    reasons += diverged_reason
    shown = (BETTER, EQUIVALENT, WORSE, ABOVE_ZERO_ONLY, UNDECIDED)
    reasons.append("calls: " + ", ".join(f"{counts.get(call, 0)} {call}" for call in shown)
                   + (f", {len(diverged)} diverged" if len(diverged) else "")
                   + (f", {len(untested)} not tested" if len(untested) else ""))
    no_boot = tested[~np.isfinite(tested["boot_ci_low_pp"].astype(float))] if "boot_ci_low_pp" in tested else tested
    if len(no_boot):
        reasons.append(f"no seed-and-image bootstrap for {len(no_boot)} of {k} settings: {NO_PREDICTIONS} "
                       "(or fewer than 2 paired seeds have them)")
    return _claim(verdict, reasons, margin, seeds, ACCURACY_TESTS)


def _with_spread(cells: pd.DataFrame, mean_col: str, sd_col: str) -> pd.DataFrame:
    """The rows whose paired differences have spread (the tolerance of _is_exact)."""
    sd = pd.to_numeric(cells[sd_col], errors="coerce")
    return cells[sd > EXACT_TOLERANCE * np.maximum(1.0, pd.to_numeric(cells[mean_col], errors="coerce").abs())]


def _seeds_for_margin(cells: pd.DataFrame, margin: float, k: int, mean_col: str, sd_col: str,
                      p_inferior_col: str) -> tuple[int | None, str]:
    """seeds_needed and its sentence for a margin rule (accuracy, features); see accuracy_verdict.
    Cells whose paired differences have no spread (ties) are left out: there is no sd to plan with."""
    spread = _with_spread(cells, mean_col, sd_col)
    if spread.empty:
        return None, "no tested one has paired differences with spread yet (ties): no sd to plan the seeds with"
    if len(spread) < len(cells):
        seeds, why = _seeds_for_margin(spread, margin, k, mean_col, sd_col, p_inferior_col)
        return seeds, why + (f" ({len(cells) - len(spread)} left out of this estimate: their paired differences "
                             "have no spread yet)")
    best = cells.sort_values(mean_col, ascending=False).iloc[0]
    if best[mean_col] > margin:
        seeds = seeds_needed(best[mean_col] - margin, best[sd_col], SIGNIFICANCE / k)
        what = (f"{best['name']} (observed {_f(best[mean_col])} pp, sd of paired differences "
                f"{_f(best[sd_col], 3, False)} pp) to be shown better by {margin:g} pp with 80 % power at Holm's "
                f"first-step level {SIGNIFICANCE}/{k}")
        if seeds is None:
            return None, f"no number of seeds from 2 to {MAX_SEEDS} is enough for {what}"
        return seeds, f"about {seeds} seeds per setting are needed for {what}, if the observed values were the truth"
    open_cells = cells[~(cells[p_inferior_col] < SIGNIFICANCE)]
    if open_cells.empty:
        return None, (f"every tested one is shown below {margin:g} pp: only the untested ones, which need "
                      "2 or more paired seeds, keep it open")
    needs = [(seeds_needed(margin - row[mean_col], row[sd_col], SIGNIFICANCE), row) for _, row in open_cells.iterrows()]
    missing = [row for n, row in needs if n is None]
    if missing:
        row = missing[0]
        return None, (f"no finite number of seeds decides it: {row['name']} has an observed mean of "
                      f"{_f(row[mean_col])} pp with sd {_f(row[sd_col], 3, False)} pp, on the margin of "
                      f"{margin:g} pp or without spread, so neither test gains power with more seeds")
    seeds, row = max(needs, key=lambda item: item[0])
    return seeds, (f"about {seeds} seeds per setting: then every setting not yet shown below {margin:g} pp would be, "
                   f"with 80 % power each at {SIGNIFICANCE} (the largest need is {row['name']}, observed "
                   f"{_f(row[mean_col])} pp, sd {_f(row[sd_col], 3, False)} pp), if the observed values were the truth")


OVERFITTING_TESTS = ("paired by seed over the seeds with train and test accuracy, gap = train_acc - test_acc, d = "
                     "gap(setting) - gap(baseline), a = test_acc(setting) - test_acc(baseline); a setting supports the "
                     "claim if its gap shrinks by more than m (H0 mean d >= -m) AND its test accuracy is held (H0 mean "
                     "a <= -m): both one-sided t-tests, joined as p = max of the two (intersection-union), Holm 0.05 "
                     "over the settings; supported = some setting supports it; not supported = every setting shown "
                     "not to: its gap change shown above -m (H0 mean d <= -m) or its test accuracy shown below -m (H0 "
                     "mean a >= -m), each at 0.025; test loss (H0 mean change >= 0, Holm) and train accuracy reported "
                     "alongside")


def overfitting_verdict(table: pd.DataFrame, margin: float) -> dict:
    """Overfitting claim for one context (columns gap_*, support_p_holm, acc_*_p, test_loss_*,
    train_acc_delta_pp, delta_pp, paired_sd_pp, call, name). Changed in session 5 (README): a smaller
    gap counts only with the test accuracy held.

    supported: some setting has support_p_holm < 0.05 (support_p = max(gap_p, acc_held_p): the gap
    shrinks by more than m and the test accuracy change is shown above -m); the reasons say whether
    test accuracy rose or the smaller gap was bought by lower train accuracy; settings whose gap
    shrinks (gap_p_holm < 0.05) without that are named and do not count. not supported: every
    setting has gap_p_above_margin < 0.025 or acc_below_p < 0.025 (shown not to support it). Else
    inconclusive, with seeds_needed: for the setting with the most reduced gap among those whose
    observed test accuracy change is above -m, the larger of the two tests' needs at 0.05/k (k =
    Holm's family); otherwise for the open settings' tests of not supporting it, at 0.025."""
    k_all = len(table)
    live, diverged, diverged_reason = _split_diverged(table)
    tested = live[live["gap_n"] >= 2]
    k = len(tested)
    half = SIGNIFICANCE / 2  # two ways of not supporting it, Bonferroni within the setting
    if k == 0:
        if len(diverged):
            untested_live = live[live["gap_n"] < 2]
            return _claim(INCONCLUSIVE if len(untested_live) else NOT_SUPPORTED, diverged_reason, margin, None,
                          OVERFITTING_TESTS)
        why = "no regularized setting in this context" if k_all == 0 else (
            f"none of the {k_all} settings has 2 seeds with train and test accuracy paired with the baseline")
        return _claim(NOT_TESTED, [why], margin, None, OVERFITTING_TESTS)
    untested = live[live["gap_n"] < 2]
    k_holm = int((table["gap_n"] >= 2).sum())  # Holm's family: every setting with 2 pairs, diverged ones too
    shrunk = tested[tested["support_p_holm"] < SIGNIFICANCE].sort_values("gap_delta_pp")
    not_held = tested[(tested["gap_p_holm"] < SIGNIFICANCE) & ~(tested["support_p_holm"] < SIGNIFICANCE)]
    shown_not = (tested["gap_p_above_margin"] < half) | (tested["acc_below_p"] < half)
    reasons = []

    def gap_line(row) -> str:
        return (f"{row['name']}: train-test gap {_f(row['gap_delta_pp'])} pp (95 % CI {_f(row['gap_ci_low_pp'])} to "
                f"{_f(row['gap_ci_high_pp'])}, n = {int(row['gap_n'])} seeds, Holm p = {_p(row['gap_p_holm'])}), "
                f"train accuracy {_f(row['train_acc_delta_pp'])} pp, test accuracy {_f(row['delta_pp'])} pp")

    if len(shrunk):
        verdict, seeds = SUPPORTED, None
        reasons.append(f"{len(shrunk)} of {k} settings shrink the train-test accuracy gap by more than {margin:g} pp "
                       f"with test accuracy held within -{margin:g} pp (both one-sided paired t-tests, joined as the "
                       f"larger p, Holm over {k_holm} settings, p < {SIGNIFICANCE})")
        for _, row in shrunk.iterrows():
            call = row["call"]
            if call == BETTER:
                how = f"and test accuracy rose by more than {margin:g} pp (accuracy call: better)"
            elif call == ABOVE_ZERO_ONLY:
                how = (f"and test accuracy rose, shown above 0 but not above {margin:g} pp "
                       "(accuracy call: above zero (not shown above m))")
            elif call == WORSE:
                how = f"but test accuracy fell, by less than {margin:g} pp (accuracy call: {call})"
            elif row["train_acc_delta_pp"] < 0 and row.get("train_acc_p", float("nan")) < SIGNIFICANCE:
                how = (f"the smaller gap was bought by lower train accuracy (paired two-sided p = "
                       f"{_p(row['train_acc_p'])}) with no test gain (accuracy call: {call})")
            else:
                how = (f"with no test gain shown (accuracy call: {call}); the train accuracy change of "
                       f"{_f(row['train_acc_delta_pp'])} pp is not significant (p = {_p(row.get('train_acc_p'))})")
            reasons.append(gap_line(row) + f" (joint Holm p = {_p(row['support_p_holm'])}): " + how)
    elif len(untested) == 0 and shown_not.all():
        verdict, seeds = NOT_SUPPORTED, None
        below = tested[tested["acc_below_p"] < half]
        reasons.append(f"every one of the {k} settings is shown not to shrink the gap by more than {margin:g} pp with "
                       f"test accuracy held (intersection-union test): its gap change shown above -{margin:g} pp or "
                       f"its test accuracy shown below -{margin:g} pp, each one-sided p < {half:g}")
        if len(below):
            reasons.append(f"test accuracy shown below -{margin:g} pp (what closes their gap is lower test "
                           f"accuracy, not less overfitting): {_names(below)}")
        reasons.append("largest observed reduction: " + gap_line(tested.sort_values("gap_delta_pp").iloc[0]))
    else:
        verdict = INCONCLUSIVE
        best = tested.sort_values("gap_delta_pp").iloc[0]
        reasons.append(f"no setting is shown to shrink the train-test gap by more than {margin:g} pp with test "
                       f"accuracy held (Holm over {k_holm} settings), and not every setting is shown not to")
        reasons.append("largest observed reduction: " + gap_line(best))
        if len(untested):
            reasons.append(f"{len(untested)} setting(s) could not be tested: {_names(untested)}")
        seeds, why = _overfitting_seeds(tested[~shown_not], margin, k_holm)
        reasons.append(why)
    if len(not_held):
        reasons.append(f"{len(not_held)} setting(s) shrink the gap by more than {margin:g} pp (Holm) without their "
                       f"test accuracy shown held within -{margin:g} pp, so they do not count (a gap closed by "
                       "lower test accuracy would be underfitting): " + "; ".join(
                           gap_line(row) + f" (one-sided p of test accuracy held {_p(row['acc_held_p'])})"
                           for _, row in not_held.iterrows()))
    reasons += diverged_reason
    lower_loss = tested[tested["test_loss_p_holm"] < SIGNIFICANCE]
    reasons.append(f"test loss is significantly lower than the baseline's (one-sided paired t-test, Holm) for "
                   f"{len(lower_loss)} of {k} settings: {_names(lower_loss)} (reported, not part of the rule)")
    return _claim(verdict, reasons, margin, seeds, OVERFITTING_TESTS)


def _overfitting_seeds(open_rows: pd.DataFrame, margin: float, k_holm: int) -> tuple[int | None, str]:
    """seeds_needed and its sentence for an inconclusive overfitting verdict (`open_rows`: the tested
    settings not shown not to support it). Each need assumes the observed means and sds are true."""
    # both tests need paired changes with spread (the tie rule of _with_spread)
    planned = _with_spread(_with_spread(open_rows, "gap_delta_pp", "gap_sd_pp"), "delta_pp", "paired_sd_pp")
    if planned.empty:
        return None, "no open setting has paired changes with spread yet (ties): no sd to plan the seeds with"
    candidates = planned[(planned["gap_delta_pp"] < -margin) & (planned["delta_pp"] > -margin)]
    if len(candidates):
        best = candidates.sort_values("gap_delta_pp").iloc[0]
        level = SIGNIFICANCE / k_holm
        needs = (seeds_needed(-best["gap_delta_pp"] - margin, best["gap_sd_pp"], level),
                 seeds_needed(best["delta_pp"] + margin, best["paired_sd_pp"], level))
        if any(n is None for n in needs):
            return None, f"no finite number of seeds shows {best['name']}'s gap reduction with its accuracy held"
        return max(needs), (f"about {max(needs)} seeds per setting would show {best['name']}'s gap reduction beyond "
                            f"-{margin:g} pp ({needs[0]} seeds) and its test accuracy held within -{margin:g} pp "
                            f"({needs[1]} seeds), each with 80 % power at Holm's first-step level "
                            f"{SIGNIFICANCE}/{k_holm} (joint power lower), if the observed means and sds were "
                            "the truth")
    needs = []
    for _, row in planned.iterrows():  # the cheaper of its two ways of being shown not to support it
        ways = [n for n in (seeds_needed(row["gap_delta_pp"] + margin, row["gap_sd_pp"], SIGNIFICANCE / 2),
                            seeds_needed(-margin - row["delta_pp"], row["paired_sd_pp"], SIGNIFICANCE / 2)) if n]
        needs.append(min(ways) if ways else None)
    if any(n is None for n in needs):
        return None, "no finite number of seeds decides it under the observed means and sds"
    return max(needs), (f"about {max(needs)} seeds per setting would show every open setting not to support it (its "
                        f"gap change above -{margin:g} pp or its test accuracy below -{margin:g} pp) with 80 % power "
                        f"each at {SIGNIFICANCE / 2:g}, if the observed means and sds were the truth")


STABILITY_TESTS = ("seed-to-seed sd of test accuracy: spread_ratio = sd(setting) / sd(baseline); Brown-Forsythe "
                   "test (scipy levene, center='median'), Holm over the settings; supported = some ratio < 1 with "
                   "Holm p < 0.05; not supported = none such AND >= 80 % Monte Carlo power for every setting to "
                   "detect a 1.5x smaller sd at 0.05/k")


def stability_verdict(table: pd.DataFrame, n_spread_sim: int = N_SPREAD_SIMULATIONS,
                      rng_seed: int = RNG_SEED) -> dict:
    """Stability claim for one context (columns spread_*, n, name). supported: some setting has
    spread_ratio < 1 and spread_p_holm < 0.05. not supported: no such setting, every setting tested,
    and every spread_power_1_5x >= 0.8. Else inconclusive, seeds_needed = runs per arm (equal arms) at
    which the rule's power to detect a 1.5x smaller sd at 0.05/k reaches 80 % (:func:`spread_seeds_needed`)."""
    k_all = len(table)
    live, diverged, diverged_reason = _split_diverged(table)
    tested = live[np.isfinite(live["spread_p"].astype(float))]
    k = len(tested)
    extra = {"min_spread_ratio": SPREAD_RATIO_OF_INTEREST}
    if k == 0 and len(diverged):
        untested_live = live[~np.isfinite(live["spread_p"].astype(float))]
        return _claim(INCONCLUSIVE if len(untested_live) else NOT_SUPPORTED,
                      [r.replace("not supporting the claim", "less stable (a diverged run is the widest spread)")
                       for r in diverged_reason], None, None, STABILITY_TESTS, **extra)
    if k == 0:
        why = "no regularized setting in this context" if k_all == 0 else (
            f"none of the {k_all} settings has >= {MIN_SPREAD_RUNS} ok runs with an ok baseline of >= "
            f"{MIN_SPREAD_RUNS} runs (Brown-Forsythe needs them)")
        return _claim(NOT_TESTED, [why], None, None, STABILITY_TESTS, **extra)
    untested = live[~np.isfinite(live["spread_p"].astype(float))]
    k_holm = int(np.isfinite(table["spread_p"].astype(float)).sum())  # Holm's family, diverged settings too
    smaller = tested[(tested["spread_ratio"] < 1) & (tested["spread_p_holm"] < SIGNIFICANCE)]
    larger = tested[(tested["spread_ratio"] > 1) & (tested["spread_p_holm"] < SIGNIFICANCE)]

    def line(row) -> str:
        return (f"{row['name']}: sd ratio {_f(row['spread_ratio'], 2, False)} (n = {int(row['n'])} runs vs baseline), "
                f"Brown-Forsythe Holm p = {_p(row['spread_p_holm'])}, power for a 1.5x smaller sd "
                f"{_f(row['spread_power_1_5x'], 2, False)}")

    reasons = []
    seeds = None
    if len(smaller):
        verdict = SUPPORTED
        reasons.append(f"{len(smaller)} of {k} settings have a significantly smaller seed-to-seed spread of test "
                       f"accuracy (Brown-Forsythe, Holm over {k_holm} settings, p < {SIGNIFICANCE})")
        reasons += [line(row) for _, row in smaller.iterrows()]
    elif len(untested) == 0 and (tested["spread_power_1_5x"] >= POWER).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"no setting has a significantly smaller spread, and with these seeds each of the {k} tests "
                       f"had >= {POWER:.0%} power to find a 1.5x smaller sd (the lowest "
                       f"{_f(tested['spread_power_1_5x'].min(), 2, False)})")
    else:
        verdict = INCONCLUSIVE
        low_power = tested[~(tested["spread_power_1_5x"] >= POWER)]
        reasons.append("no setting has a significantly smaller spread"
                       + (f", but for {len(low_power)} of {k} settings the seeds give less than {POWER:.0%} power to "
                          f"find a 1.5x smaller sd (lowest {_f(tested['spread_power_1_5x'].min(), 2, False)})"
                          if len(low_power) else "")
                       + (f"; {len(untested)} setting(s) not tested (fewer than {MIN_SPREAD_RUNS} ok runs per arm): "
                          f"{_names(untested)}" if len(untested) else ""))
        seeds = spread_seeds_needed(SIGNIFICANCE / k_holm, n_sim=n_spread_sim, rng_seed=rng_seed)
        reasons.append(f"about {seeds} runs per arm would give {POWER:.0%} power to find a 1.5x smaller sd at "
                       f"{SIGNIFICANCE}/{k_holm} (Monte Carlo, normal data)" if seeds else
                       f"more than {MAX_SPREAD_SEEDS} runs per arm would be needed for {POWER:.0%} power")
    if verdict != SUPPORTED:
        reasons.append("smallest observed ratio: " + line(tested.sort_values("spread_ratio").iloc[0]))
    if len(larger):
        reasons.append(f"{len(larger)} setting(s) have a significantly LARGER spread: {_names(larger)}")
    reasons += [r.replace("not supporting the claim", "less stable (a diverged run is the widest spread)")
                for r in diverged_reason]
    return _claim(verdict, reasons, None, seeds, STABILITY_TESTS, **extra)


FEATURE_TESTS = ("paired by seed for each of " + ", ".join(FEATURE_METRICS) + " (higher = better): better = H0 mean "
                 "d <= m rejected at Holm 0.05 over all setting x metric tests of the context; supported = some "
                 "setting better on some metric and shown worse on none (H0 mean d >= 0 rejected at Holm 0.05 over "
                 "that setting's own metrics); not supported = every "
                 "setting x measured metric has H0 mean d >= m rejected at 0.05 (intersection-union test); "
                 f"{SPARSITY_METRIC}: paired change with a two-sided t-test, descriptive only")


def features_verdict(table: pd.DataFrame, margin: float, measured: Sequence[str]) -> dict:
    """Feature claim for one context: the cells (setting x metric in ``measured``) with their paired
    columns <metric>_n, _delta_pp, _sd_pp, _p_superior_holm, _p_inferior, _p_worse_holm. supported:
    some cell has p_superior_holm < 0.05 in a setting none of whose cells has p_worse_holm < 0.05
    (changed in session 5, README). not supported: every cell tested with p_inferior < 0.05 (IUT). not
    tested: no feature metric measured, or no cell with 2 pairs. Else inconclusive (seeds as for
    accuracy, with k = Holm's family of the superiority tests). zero_fraction is described, never
    decisive."""
    live, diverged, diverged_reason = _split_diverged(table)
    columns = ["name", "setting", "metric", "n", "delta", "sd", "p_holm", "p_inferior", "p_worse_holm"]
    cells = pd.DataFrame([{"name": f"{row['name']} / {metric}", "setting": row["name"], "metric": metric,
                           "n": row[f"{metric}_n"], "delta": row[f"{metric}_delta_pp"], "sd": row[f"{metric}_sd_pp"],
                           "p_holm": row[f"{metric}_p_superior_holm"], "p_inferior": row[f"{metric}_p_inferior"],
                           "p_worse_holm": row[f"{metric}_p_worse_holm"]}
                          for _, row in live.iterrows() for metric in measured], columns=columns)
    # Holm's family: the cells of every setting with 2 pairs, diverged ones too
    k_holm = int(sum((table[f"{metric}_n"] >= 2).sum() for metric in measured)) if len(table) else 0
    unmeasured = [m for m in FEATURE_METRICS if m not in measured]
    note = f"not measured in this context: {', '.join(unmeasured)}" if unmeasured else None
    tested = cells[cells["n"] >= 2]
    k = len(tested)
    if measured and k == 0 and len(diverged) and not len(cells[cells["n"] < 2]):
        return _claim(NOT_SUPPORTED, diverged_reason, margin, None, FEATURE_TESTS)
    if not measured or k == 0:
        why = ("no run of this context has feature metrics" if not measured else
               "no setting has 2 seeds with feature metrics paired with the baseline")
        return _claim(NOT_TESTED, [why] + ([note] if note and measured else []), margin, None, FEATURE_TESTS)
    untested = cells[cells["n"] < 2]

    def line(cell) -> str:
        return (f"{cell['name']}: {_f(cell['delta'])} pp (n = {int(cell['n'])} seeds, Holm p (gain > {margin:g} pp) = "
                f"{_p(cell['p_holm'])}, p (gain < {margin:g} pp) = {_p(cell['p_inferior'])})")

    reasons, seeds = [], None
    all_better = tested[tested["p_holm"] < SIGNIFICANCE].sort_values("delta", ascending=False)
    worse = tested[tested["p_worse_holm"] < SIGNIFICANCE]
    # a setting better on one metric but shown worse on another does not count (changed in session 5)
    mixed = all_better[all_better["setting"].isin(set(worse["setting"]))]
    better = all_better[~all_better["setting"].isin(set(worse["setting"]))]
    if len(better):
        verdict = SUPPORTED
        reasons.append(f"{len(better)} of {k} setting x metric tests show better features by more than {margin:g} pp "
                       f"(one-sided paired t-test against {margin:g} pp, Holm over {k_holm} tests, p < {SIGNIFICANCE}) "
                       "in settings shown worse on no feature metric (H0 gain >= 0, Holm over each setting's "
                       f"{len(measured)} metrics)")
        reasons += [line(cell) for _, cell in better.iterrows()]
        metrics = sorted(set(better["metric"]))
        reasons.append(f"the metric(s) that carry it: {', '.join(metrics)} (of {len(measured)} measured)")
    elif len(untested) == 0 and (tested["p_inferior"] < SIGNIFICANCE).all():
        verdict = NOT_SUPPORTED
        reasons.append(f"every one of the {k} setting x metric tests is shown to gain less than {margin:g} pp "
                       f"(intersection-union test, each p < {SIGNIFICANCE}, the largest "
                       f"{_p(tested['p_inferior'].max())})")
        reasons.append("highest observed gain: " + line(tested.sort_values("delta", ascending=False).iloc[0]))
    else:
        verdict = INCONCLUSIVE
        open_cells = tested[~(tested["p_inferior"] < SIGNIFICANCE)]
        reasons.append(f"no setting x metric is shown better by more than {margin:g} pp in a setting shown worse on "
                       f"no metric, and {len(open_cells)} of {k} are not shown to gain less than {margin:g} pp")
        reasons.append("highest observed gain: " + line(tested.sort_values("delta", ascending=False).iloc[0]))
        if len(untested):
            reasons.append(f"{len(untested)} setting x metric cell(s) could not be tested (fewer than 2 paired seeds)")
        seeds, why = _seeds_for_margin(tested, margin, k_holm, "delta", "sd", "p_inferior")
        reasons.append(why)
    if len(mixed):
        reasons.append(f"{len(mixed)} setting x metric test(s) show a gain beyond {margin:g} pp (Holm) in settings "
                       "that are significantly worse on another feature metric (Holm over the setting's metrics), "
                       "so they do not count: "
                       + "; ".join(line(cell) + " - worse on " + ", ".join(
                           worse[worse["setting"] == cell["setting"]]["metric"]) for _, cell in mixed.iterrows()))
    reasons += diverged_reason
    if note:
        reasons.append(note)
    zero = table[np.isfinite(table[f"{SPARSITY_METRIC}_delta"].astype(float))]
    if len(zero):
        reasons.append(f"{SPARSITY_METRIC} (descriptive only, not part of the verdict): " + "; ".join(
            f"{row['name']} {_f(row[f'{SPARSITY_METRIC}_delta'], 4)} "
            f"(two-sided paired p {_p(row[f'{SPARSITY_METRIC}_p'])})" for _, row in zero.iterrows()))
    return _claim(verdict, reasons, margin, seeds, FEATURE_TESTS)


# ----------------------------------------------------------------------------------------------
# top level


def _plain(value):
    """JSON-ready: numpy scalars -> Python, NaN/inf -> None, tuples -> lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if pd.isna(value):
        return None
    return str(value)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` returns. ``summary``: one row per (context, setting), baseline rows first,
    columns :func:`summary_columns`. ``verdicts[context][claim]``: {"verdict", "reasons", "min_effect_pp",
    "seeds_needed", "tests"} in plain JSON types. ``sensitivity[context]``: the accuracy verdict at each
    margin of ``SENSITIVITY_MARGINS_PP``."""

    summary: pd.DataFrame
    verdicts: dict
    sensitivity: dict
    min_effect_pp: float
    setting_cols: tuple
    min_feature_effect_pp: float = DEFAULT_MIN_FEATURE_EFFECT_PP

    def to_json(self) -> dict:
        """verdict.json's content: plain types only (json.dumps(..., allow_nan=False) works)."""
        return _plain({"min_effect_pp": self.min_effect_pp, "min_feature_effect_pp": self.min_feature_effect_pp,
                       "significance": SIGNIFICANCE, "power": POWER,
                       "setting_columns": list(self.setting_cols),
                       "contexts": {str(ctx): {"claims": self.verdicts[ctx], "sensitivity": self.sensitivity[ctx]}
                                    for ctx in self.verdicts}})


def sensitivity_table(table: pd.DataFrame, diffs: Sequence, margins: Sequence[float] = SENSITIVITY_MARGINS_PP) -> list:
    """The accuracy verdict of one context at each margin: [{min_effect_pp, verdict, better, equivalent,
    worse}], the tests recomputed from the paired differences ``diffs`` (rows of ``table``) at each m."""
    out = []
    for margin in margins:
        tests = accuracy_tests(diffs, margin)
        tests["name"] = list(table["name"])
        for column in ("n", "n_not_ok", "n_diverged"):  # a setting with a diverged run is never better
            tests[column] = list(table[column]) if column in table else 0
        tests.loc[tests["n_diverged"] > 0, "call"] = DIVERGED
        verdict = accuracy_verdict(tests, margin)["verdict"]
        out.append({"min_effect_pp": float(margin), "verdict": verdict,
                    **{call: int((tests["call"] == call).sum()) for call in (BETTER, EQUIVALENT, WORSE)}})
    return out


def analyse(runs: pd.DataFrame, setting_cols: Sequence[str], min_effect_pp: float = DEFAULT_MIN_EFFECT_PP,
            predictions: Mapping | None = None, labels: Mapping | None = None, *,
            min_feature_effect_pp: float = DEFAULT_MIN_FEATURE_EFFECT_PP,
            baseline_col: str = BASELINE_COLUMN, sensitivity_margins: Sequence[float] = SENSITIVITY_MARGINS_PP,
            n_boot: int = N_BOOT, n_spread_sim: int = N_SPREAD_SIMULATIONS, rng_seed: int = RNG_SEED) -> Analysis:
    """The whole analysis: per context (its own family), the summary rows, the four claim verdicts and
    the sensitivity table. ``predictions``/``labels``: per run id, predicted and true test labels (test
    order); missing -> the bootstrap columns are NaN and the accuracy reasons say why."""
    setting_cols = list(setting_cols)
    missing = [c for c in ["run_id", "context", "seed", "status", baseline_col, *setting_cols] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {missing}")
    baseline_rows, setting_rows, verdicts, sensitivity = [], [], {}, {}
    for context in sorted(runs["context"].unique(), key=str):
        ctx_runs = runs[runs["context"] == context]
        base, rows, diffs = _context_rows(ctx_runs, context, setting_cols, min_effect_pp, baseline_col,
                                          predictions, labels, n_boot, rng_seed, n_spread_sim,
                                          feature_margin=min_feature_effect_pp)
        table = pd.DataFrame(rows, columns=[*summary_columns(setting_cols), "_name"]).rename(columns={"_name": "name"})
        is_ok = ctx_runs["status"].astype(str) == "ok"
        measured = [m for m in FEATURE_METRICS if _column(ctx_runs[is_ok], m).notna().any()]
        verdicts[context] = _plain({
            "accuracy": accuracy_verdict(table, min_effect_pp),
            "overfitting": overfitting_verdict(table, min_effect_pp),
            "stability": stability_verdict(table, n_spread_sim, rng_seed),
            "features": features_verdict(table, min_feature_effect_pp, measured),
        })
        sensitivity[context] = _plain(sensitivity_table(table, diffs, sensitivity_margins))
        baseline_rows.append(base)
        setting_rows += rows
    summary = pd.DataFrame(baseline_rows + setting_rows, columns=summary_columns(setting_cols))
    return Analysis(summary=summary, verdicts=verdicts, sensitivity=sensitivity, min_effect_pp=float(min_effect_pp),
                    setting_cols=tuple(setting_cols), min_feature_effect_pp=float(min_feature_effect_pp))
