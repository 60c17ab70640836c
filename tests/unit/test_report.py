"""report: files rebuilt from runs/*.json alone, each claim's verdict the one the constructed data imply,
summary numbers equal to scipy's, plots with the expected series, failed runs and foreign files shown."""

import base64
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import axes, files
from l2reg.analysis import summary_columns
from l2reg.claims import names as claim_names
from l2reg.claims.features import METRICS as FEATURE_METRICS
from l2reg.claims.features import NOT_NONINFERIOR, SUPPORTS, UNDECIDED
from l2reg.plots import ACCURACY_PLOT, CAPTIONS, DODGE_DECADES, FOREST_PLOT, PLOTS, VALIDATION_PLOT, figures
from l2reg.report import (
    Loaded,
    Report,
    ReportError,
    histories_frame,
    load_records,
    runs_frame,
    write_reports,
)

N_TEST = 10_000
LABELS = (np.arange(N_TEST) % 10).astype(np.uint8)
CONTEXT = "epochs=2,train_limit=None-abc123"
M = 0.1  # the records' report.min_effect_pp
# correct test images of the baseline per seed (0..5): accuracies 99.00, 99.12, 98.95, 99.08, 99.03, 98.97 %
BASE_CORRECT = [9900, 9912, 9895, 9908, 9903, 9897]
BASE_GAP = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]  # train minus test accuracy of the baseline, pp


def encode(array) -> str:
    return base64.b64encode(np.asarray(array, dtype=np.uint8).tobytes()).decode()


def predicted(correct: int) -> np.ndarray:
    """Predictions that get exactly `correct` images right: the first N_TEST - correct are wrong, so two
    runs differ on exactly |correct_1 - correct_2| images."""
    wrong = N_TEST - correct
    out = LABELS.copy()
    out[:wrong] = (LABELS[:wrong] + 1) % 10
    return out


def setting_of(alpha, target="both", schedule="constant", legacy=False):
    if alpha == 0:
        keys = ["alpha", "target", "norm", "schedule"] + ([] if legacy else ["form", "scope"])
        return {k: (0.0 if k == "alpha" else "none") for k in keys}
    setting = {"alpha": alpha, "target": target, "norm": "l2", "schedule": schedule}
    return setting if legacy else {**setting, "form": "loss", "scope": "conv"}


def record(run_id, setting, seed, correct=None, status="ok", gap=1.0, legacy=False, features=None, test_loss=0.03,
           context=CONTEXT, dropout=0.5):
    """A run record as l2sweep writes it (legacy=True: as it wrote them before `compiled`, the
    per-image predictions, the feature metrics and the form/scope/context axes existed)."""
    ok = status == "ok"
    acc = correct / N_TEST * 100 if ok else None
    history = [{"epoch": e, "train_loss": 0.1, "train_acc": 97.0 + e, "val_loss": 0.05, "val_objective": 0.06,
                "val_acc": acc - 1 + e / 2, "lr": 1e-3, "seconds": 1.0} for e in (1, 2)] if ok else []
    metrics = {"test_acc": acc, "test_loss": test_loss, "val_acc": acc, "val_loss": 0.04, "train_acc": acc + gap,
               "train_loss": 0.02, "penalty": 0.01 * setting["alpha"], "weight_sq_norm": 50.0,
               "activation_sq_norm": 300.0, "n_test": N_TEST, **(features or {})} if ok else {}
    out = {"run_id": run_id, "setting": setting, "seed": seed, "context": context, "status": status,
           "metrics": metrics, "history": history, "seconds": 10.0, "pack_size": 1, "device": "cpu",
           "error": "RuntimeError: boom" if status == "failed" else None,
           "config": {"train": {"epochs": 2, "lr": 1e-3, "adam_eps": 1e-7, "batch_size": 128,
                                "plateau_factor": 0.1, "plateau_patience": 3},
                      "data": {"val_fraction": 0.1, "train_limit": None}, "report": {"min_effect_pp": M}},
           "versions": {"torch": "x"}, "git_commit": "abc"}
    if not legacy:
        out.update(context_axes={"dropout": dropout, "train_size": None}, compiled=False)
        if ok:
            out.update(test_predictions=encode(predicted(correct)), test_labels=encode(LABELS))
    return out


def write(folder, records):
    for r in records:
        files.write_json_atomic(folder / "runs" / f"{r['run_id']}.json", r)
    return records


# Per data set: the gain of settings A (alpha=1e-4) and B (alpha=1e-3) over the baseline, in test
# images per seed (1 image = 0.01 pp), and what they imply with m = 0.1 pp, Holm over 2 settings.
GAINS = {
    # A: +0.50 pp (sd 0.07) is above m; B: -0.50 pp is below 0  ->  some setting better
    "supported": ([50, 60, 40, 50, 55, 45], [-50, -40, -60, -50, -45, -55], ("better", "worse")),
    # A: -0.30 pp; B: 0.00 pp with sd 0.014 pp, inside +-m  ->  every setting shown below m
    "not supported": ([-30, -20, -40, -30, -25, -35], [1, -1, 0, 2, -2, 0], ("worse", "equivalent")),
    # A: +0.15 pp with sd 0.28 pp: neither above m nor below it  ->  open
    "inconclusive": ([30, -10, 50, -20, 40, 0], [1, -1, 0, 2, -2, 0], ("undecided", "equivalent")),
}


def gains_folder(folder, case):
    gains_a, gains_b, _ = GAINS[case]
    records = []
    for seed, base in enumerate(BASE_CORRECT):
        records.append(record(f"baseline-s{seed}", setting_of(0.0), seed, base, gap=BASE_GAP[seed]))
        # A also shrinks the train-test gap by 0.5 pp (+- 0.05); B leaves it as it is
        records.append(record(f"both-a0.0001-s{seed}", setting_of(1e-4), seed, base + gains_a[seed],
                              gap=BASE_GAP[seed] - 0.5 + 0.05 * (seed % 3 - 1),
                              test_loss=0.03 - 0.001 * (1 + seed % 2)))
        records.append(record(f"both-a0.001-s{seed}", setting_of(1e-3), seed, base + gains_b[seed], gap=BASE_GAP[seed]))
    return write(folder, records)


def holm_by_hand(p):
    """Holm's step-down adjustment written independently of l2reg.stats.holm."""
    p = np.asarray(p, float)
    order = np.argsort(p)
    adjusted, running = np.empty_like(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def brute_force_seeds(effect, sd, level, power=0.8):
    """Smallest n whose one-sided one-sample t-test reaches `power` (noncentral t), by counting up."""
    for n in range(2, 100_000):
        crit = sps.t.ppf(1 - level, n - 1)
        if sps.nct.sf(crit, n - 1, effect * np.sqrt(n) / sd) >= power:
            return n
    return None


@pytest.mark.parametrize("case", list(GAINS))
def test_the_accuracy_verdict_is_the_one_the_data_imply(case, tmp_path):
    gains_folder(tmp_path, case)
    report = write_reports(tmp_path)
    assert isinstance(report, Report) and report.skipped == []
    summary = report.analysis.summary
    calls = dict(zip(summary["alpha"], summary["call"]))
    assert calls == {0.0: "baseline", 1e-4: GAINS[case][2][0], 1e-3: GAINS[case][2][1]}
    accuracy = report.analysis.verdicts[CONTEXT]["accuracy"]
    assert accuracy["verdict"] == case
    assert accuracy["min_effect_pp"] == M
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["contexts"][CONTEXT]["claims"]["accuracy"]["verdict"] == case
    assert verdict["runs"] == verdict["runs_ok"] == 18 and verdict["skipped_files"] == []
    report_md = (tmp_path / "report.md").read_text()
    assert f"## Accuracy: {case}\n" in report_md
    assert f"| accuracy: clearly raises test accuracy (明显提高测试准确率) | **{case}** |" in report_md
    if case == "supported":
        assert accuracy["seeds_needed"] is None
        assert accuracy["reasons"][0].startswith("1 of 2 settings raise test accuracy by more than 0.1 pp")
    elif case == "not supported":
        assert accuracy["seeds_needed"] is None
        assert "equivalent to the baseline within +-0.1 pp: alpha=0.001" in accuracy["reasons"]
        assert "significantly below the baseline (Holm p < 0.05, whatever the call): alpha=0.0001" in \
            accuracy["reasons"]
    else:  # the best gain (A, +0.15 pp) exceeds m: seeds for its superiority test at Holm's first level
        d = np.array(GAINS[case][0]) / 100
        assert accuracy["seeds_needed"] == brute_force_seeds(d.mean() - M, d.std(ddof=1), 0.05 / 2)
        assert accuracy["seeds_needed"] > 6


def test_summary_numbers_are_what_scipy_computes(tmp_path):
    gains_folder(tmp_path, "supported")
    write_reports(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns) == summary_columns(axes.SETTING_COLUMNS)
    assert list(summary["alpha"]) == [0.0, 1e-4, 1e-3]  # the baseline first
    base = runs[runs["alpha"] == 0].sort_values("seed")
    diffs, p_sup, p_equiv = {}, [], []
    for alpha in (1e-4, 1e-3):
        arm = runs[runs["alpha"] == alpha].sort_values("seed")
        assert list(arm["seed"]) == list(base["seed"]) == list(range(6))
        d = arm["test_acc"].to_numpy() - base["test_acc"].to_numpy()
        diffs[alpha] = d
        row = summary[summary["alpha"] == alpha].iloc[0]
        ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
        assert (row["n"], row["n_not_ok"], row["paired_n"]) == (6, 0, 6)
        assert row["delta_pp"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["delta_images"] == pytest.approx(d.mean() / 100 * N_TEST)
        assert row["paired_sd_pp"] == pytest.approx(d.std(ddof=1))
        assert (row["paired_ci_low_pp"], row["paired_ci_high_pp"]) == pytest.approx((ci.low, ci.high))
        assert row["p_superior"] == pytest.approx(sps.ttest_1samp(d, M, alternative="greater").pvalue)
        assert row["p_inferior"] == pytest.approx(sps.ttest_1samp(d, M, alternative="less").pvalue)
        equivalent = max(sps.ttest_1samp(d, -M, alternative="greater").pvalue,
                         sps.ttest_1samp(d, M, alternative="less").pvalue)
        assert row["p_equivalent"] == pytest.approx(equivalent)
        assert row["p_worse"] == pytest.approx(sps.ttest_1samp(d, 0, alternative="less").pvalue)
        p_sup.append(row["p_superior"])
        p_equiv.append(row["p_equivalent"])
        welch = sps.ttest_ind(arm["test_acc"], base["test_acc"], equal_var=False)
        assert row["welch_p"] == pytest.approx(welch.pvalue)
        assert (row["welch_ci_low_pp"], row["welch_ci_high_pp"]) == pytest.approx(
            tuple(welch.confidence_interval(0.95)))
        # the per-image predictions: arms differ on |correct_1 - correct_2| images per seed
        assert row["boot_n"] == 6
        assert row["disagreements"] == pytest.approx(np.abs(d * 100).mean())
        assert row["boot_ci_low_pp"] < d.mean() < row["boot_ci_high_pp"]
        # overfitting: the gap and test loss, paired
        gap = (arm["train_acc"] - arm["test_acc"]).to_numpy() - (base["train_acc"] - base["test_acc"]).to_numpy()
        assert row["gap_delta_pp"] == pytest.approx(gap.mean())
        if alpha == 1e-3:  # B leaves every gap exactly as it was: differences without spread, no test
            assert np.ptp(gap) < 1e-9 and np.isnan(row["gap_p"])
        else:
            assert row["gap_p"] == pytest.approx(sps.ttest_1samp(gap, -M, alternative="less").pvalue)
        # stability: sd ratio and Brown-Forsythe
        assert row["spread_ratio"] == pytest.approx(arm["test_acc"].std(ddof=1) / base["test_acc"].std(ddof=1))
        assert row["spread_p"] == pytest.approx(sps.levene(arm["test_acc"], base["test_acc"], center="median").pvalue)
    tested = summary[summary["alpha"] != 0]
    assert tested["p_superior_holm"].to_numpy() == pytest.approx(holm_by_hand(p_sup))
    assert tested["p_equivalent_holm"].to_numpy() == pytest.approx(holm_by_hand(p_equiv))


def test_the_other_claims_follow_their_declared_rules(tmp_path):
    gains_folder(tmp_path, "supported")
    verdicts = write_reports(tmp_path).analysis.verdicts[CONTEXT]
    assert set(verdicts) == {"accuracy", "overfitting", "stability", "churn", "features"}
    # A shrinks the gap by 0.5 pp (> m) and raises test accuracy: supported, and said why
    overfitting = verdicts["overfitting"]
    assert overfitting["verdict"] == "supported"
    assert overfitting["reasons"][0].startswith("1 of 2 settings shrink the train-test accuracy gap by more than "
                                                "0.1 pp")
    assert overfitting["reasons"][1].endswith("and test accuracy rose by more than 0.1 pp (accuracy call: better)")
    # no run has feature metrics: not tested, and said so
    assert verdicts["features"]["verdict"] == "not tested"
    assert verdicts["features"]["reasons"] == ["no run of this context has feature metrics"]
    # 6 runs per arm give little power to see a 1.5x smaller sd: inconclusive, with the runs that would
    stability = verdicts["stability"]
    assert stability["verdict"] == "inconclusive"
    assert stability["reasons"][0].startswith("no setting has a significantly smaller spread, but for 2 of 2 settings "
                                              "the seeds give less than 80% power to find a 1.5x smaller sd")
    assert stability["seeds_needed"] > 6


def test_report_writes_everything_and_rebuilds_it_byte_for_byte(tmp_path):
    records = gains_folder(tmp_path, "supported")
    failed = write(tmp_path, [record("both-a0.001-s9", setting_of(1e-3), 9, status="failed")])
    report = write_reports(tmp_path)
    assert len(report.runs) == len(records) + 1 == 19
    assert len(report.analysis.summary) == 3
    row = report.analysis.summary[report.analysis.summary["alpha"] == 1e-3].iloc[0]
    assert (row["n"], row["n_not_ok"]) == (6, 1)  # the failed run is counted, not analysed
    names = ["runs.csv", "summary.csv", "verdict.json", "report.md"]
    first = {n: (tmp_path / n).read_bytes() for n in names}
    assert all((tmp_path / "plots" / p).stat().st_size > 1000 for p in PLOTS)
    for n in names:
        (tmp_path / n).unlink()
    write_reports(tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in names} == first
    report_md = (tmp_path / "report.md").read_text()
    assert "](plots/test_acc_vs_alpha.png)" in report_md
    assert "## Runs and files left out of the statistics" in report_md
    assert f"- `{failed[0]['run_id']}`: failed (RuntimeError: boom)" in report_md
    assert "Runs: 19 (18 ok, 1 not ok) in 1 context(s)." in report_md
    runs_csv = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs_csv.columns[:2 + len(axes.SETTING_COLUMNS)]) == ["run_id", "context", *axes.SETTING_COLUMNS]
    assert runs_csv.loc[runs_csv["status"] == "failed", "error"].tolist() == ["RuntimeError: boom"]


def test_old_run_records_read_with_the_off_values_of_newer_axes(tmp_path):
    """Runs recorded before form/scope/dropout, `compiled` and predictions existed still report."""
    for seed, base in enumerate(BASE_CORRECT[:4]):
        write(tmp_path, [record(f"baseline-s{seed}", setting_of(0.0, legacy=True), seed, base, legacy=True),
                         record(f"both-s{seed}", setting_of(1e-4, legacy=True), seed, base + 20, legacy=True)])
    report = write_reports(tmp_path)
    runs = report.runs
    regularized = runs[runs["alpha"] != 0].iloc[0]
    baseline = runs[runs["alpha"] == 0].iloc[0]
    assert (regularized["form"], regularized["scope"], regularized["dropout"]) == ("loss", "conv", 0.5)
    assert (baseline["form"], baseline["scope"]) == ("none", "none")
    assert runs["compiled"].isna().all()
    assert report.paths == {CONTEXT: {"devices": ["cpu"], "code_paths": ["not recorded, single run"],
                                      "commits": ["abc"], "fingerprints": ["not recorded"],
                                      "threads": ["not recorded"], "one_path": False, "mixed_code": False}}
    row = report.analysis.summary.iloc[1]
    assert row["boot_n"] == 0 and np.isnan(row["boot_ci_low_pp"]) and np.isnan(row["disagreements"])
    accuracy = report.analysis.verdicts[CONTEXT]["accuracy"]
    assert "no seed-and-image bootstrap for 1 of 1 settings: runs lack per-image predictions" in accuracy["reasons"][-1]
    report_md = (tmp_path / "report.md").read_text()
    assert ("Code path: not recorded, single run on cpu - **the arms of this comparison did not all take one "
            "recorded") in report_md


BAD_FILES = {
    "a-list.json": (b"[1, 2, 3]", "not a run record (a JSON list)"),
    "no-id.json": (b'{"status": "ok", "metrics": {}}', "not a run record (no run_id, setting, seed, context, config)"),
    "truncated.json": (b'{"run_id": "truncated", "status": "o', "damaged or truncated JSON (Unterminated string "
                                                                 "starting at: line 1 column 35 (char 34))"),
    "latin1.json": ('{"run_id": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text"),
}


def test_foreign_and_damaged_files_are_skipped_with_the_reason(tmp_path):
    good = gains_folder(tmp_path, "supported")
    clean = write_reports(tmp_path)
    clean_files = {n: (tmp_path / n).read_bytes() for n in ("runs.csv", "summary.csv")}
    for name, (blob, _) in BAD_FILES.items():
        (tmp_path / "runs" / name).write_bytes(blob)
    renamed = dict(good[0], run_id="someone-else")
    partial = dict(good[1], run_id="partial", metrics={"test_loss": 0.1})
    odd_seed = dict(good[2], run_id="odd-seed", seed="0")
    unknown = dict(good[3], run_id="queued", status="queued")
    for name, rec in (("renamed.json", renamed), ("partial.json", partial), ("odd-seed.json", odd_seed),
                      ("queued.json", unknown)):
        files.write_json_atomic(tmp_path / "runs" / name, rec)
    (tmp_path / "runs" / "notes.txt").write_text("not a .json file: not a candidate")
    loaded = load_records(tmp_path)
    assert isinstance(loaded, Loaded) and len(loaded.records) == len(good)
    expected = {name: why for name, (_, why) in BAD_FILES.items()}
    expected.update({"renamed.json": "its run_id 'someone-else' does not match the file name",
                     "partial.json": "a partial run record (status ok but no numeric metrics.test_acc)",
                     "odd-seed.json": "not a run record (seed '0' is not an integer)",
                     "queued.json": "unknown status 'queued' (a run record says ok, diverged, failed)"})
    assert dict(loaded.skipped) == expected
    assert [name for name, _ in loaded.skipped] == sorted(expected)  # in file-name order
    report = write_reports(tmp_path)
    assert report.skipped == loaded.skipped
    # statistics unaffected
    assert {n: (tmp_path / n).read_bytes() for n in clean_files} == clean_files
    pd.testing.assert_frame_equal(report.analysis.summary, clean.analysis.summary)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["skipped_files"] == [{"file": name, "why": why} for name, why in sorted(expected.items())]
    report_md = (tmp_path / "report.md").read_text()
    assert f"- {len(expected)} file(s) in runs/ are not run records and were skipped:" in report_md
    for name, why in expected.items():
        assert f"  - `{name}`: {why}" in report_md


def test_a_folder_without_run_records_says_so(tmp_path):
    with pytest.raises(ReportError, match="has no runs/ folder"):
        write_reports(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ReportError) as empty:
        write_reports(tmp_path)
    assert str(empty.value) == f"no finished runs in {tmp_path / 'runs'}"
    (tmp_path / "runs" / "x.json").write_text("[]")
    with pytest.raises(ReportError) as only_bad:
        write_reports(tmp_path)
    assert str(only_bad.value) == (f"no finished runs in {tmp_path / 'runs'}: its 1 file(s) are not run records "
                                   "(x.json: not a run record (a JSON list))")
    assert not (tmp_path / "runs.csv").exists() and not (tmp_path / "report.md").exists()


def test_a_sweep_whose_runs_all_failed_still_reports(tmp_path):
    write(tmp_path, [record(f"both-s{seed}", setting_of(1e-3), seed, status="failed") for seed in range(2)]
          + [record(f"baseline-s{seed}", setting_of(0.0), seed, status="diverged") for seed in range(2)])
    report = write_reports(tmp_path)
    assert set(report.runs["status"]) == {"failed", "diverged"}
    assert report.analysis.verdicts[CONTEXT]["accuracy"]["verdict"] == "not tested"
    assert all((tmp_path / "plots" / p).is_file() for p in PLOTS)
    assert (tmp_path / "report.md").read_text().count(": failed (RuntimeError: boom)") == 2


def plots_folder(folder):
    rng = np.random.default_rng(0)
    records = []
    for seed in range(4):
        records.append(record(f"base-{seed}", setting_of(0.0), seed, 9900 + int(rng.integers(-5, 5))))
        for alpha in (1e-4, 1e-3):
            for target in ("weights", "both"):
                for schedule in ("constant", "exponential(gamma=1)"):
                    records.append(record(f"{target}-{alpha}-{schedule}-{seed}", setting_of(alpha, target, schedule),
                                          seed, 9900 + int(rng.integers(-5, 5))))
    records.append(record("broken", setting_of(1e-3), 9, status="failed"))
    return write(folder, records)


def test_plots_have_a_series_per_target_and_schedule_and_a_baseline_band(tmp_path):
    records = plots_folder(tmp_path)
    loaded = load_records(tmp_path)
    assert len(loaded.records) == len(records) and loaded.skipped == []
    made = figures(runs_frame(loaded.records), histories_frame(loaded.records))
    assert set(made) == {ACCURACY_PLOT, VALIDATION_PLOT}  # the others are drawn from the statistics
    accuracy = made["test_acc_vs_alpha.png"].axes[0]
    assert len(accuracy.containers) == 4  # errorbar series: 2 targets x 2 schedules
    assert sorted(c.get_label() for c in accuracy.containers) == [
        "both, constant", "both, exponential(gamma=1)", "weights, constant", "weights, exponential(gamma=1)"]
    assert accuracy.get_xscale() == "log"
    assert len(accuracy.patches) == 1  # the baseline band
    offsets = set()
    for container in accuracy.containers:
        # drawn at its alphas, moved aside by one factor per line (at most 1.5 dodges of 4 lines)
        x = np.asarray(container.lines[0].get_xdata()) / np.array([1e-4, 1e-3])
        assert np.allclose(x, x[0]) and 10 ** (-1.5 * DODGE_DECADES) - 1e-12 <= x[0] <= 10 ** (1.5 * DODGE_DECADES)
        offsets.add(round(x[0], 9))
    assert len(offsets) == 4
    # colour = target, line style = schedule: the same target keeps its colour, a schedule its style
    style = {c.get_label(): (c.lines[0].get_color(), c.lines[0].get_linestyle()) for c in accuracy.containers}
    assert style["both, constant"][0] == style["both, exponential(gamma=1)"][0] != style["weights, constant"][0]
    assert style["both, constant"][1] == style["weights, constant"][1] == "-"
    assert style["both, exponential(gamma=1)"][1] == style["weights, exponential(gamma=1)"][1] == "--"
    assert accuracy.get_legend() is not None
    validation = made["val_acc_per_epoch.png"].axes
    assert [ax.get_title() for ax in validation] == ["alpha=0.0001", "alpha=0.001"]  # a panel per alpha
    for ax in validation:
        assert len(ax.lines) == 1 + 4  # the baseline + 2 targets x 2 schedules
        assert ax.lines[0].get_label() == "baseline (alpha=0)" and ax.lines[0].get_color() == "black"
    assert [ax.get_legend() is not None for ax in validation] == [False, True]


def test_feature_panels_draw_the_summarys_paired_gains_and_margins(tmp_path):
    from l2reg.forest import features_figure

    records = []
    for seed in range(3):
        for alpha, target in ((0.0, "both"), (1e-4, "weights"), (1e-4, "both"), (1e-3, "both")):
            records.append(record(f"{target}-{alpha}-{seed}", setting_of(alpha, target), seed, 9900 + seed,
                                  features={m: 90.0 + seed + 1000 * alpha + (0.1 * seed if target == "both" else 0)
                                            for m in FEATURE_METRICS}))
    write(tmp_path, records)
    summary = write_reports(tmp_path).analysis.summary
    panels = [ax for ax in features_figure(summary).axes if ax.axison]
    assert len(panels) == len(FEATURE_METRICS)
    rows = summary[summary["alpha"] > 0]
    for ax, metric in zip(panels, FEATURE_METRICS):
        band = next(a for a in ax.patches if a.get_gid() == "margin band")
        m = summary[f"{metric}_margin_pp"].iloc[0]
        assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((-m, m))
        # one marker per setting at its paired gain, in the summary's order from the top
        drawn = {tuple(xy) for a in ax.collections if str(a.get_gid()).startswith("call:") for xy in a.get_offsets()}
        assert drawn == {(d, y) for d, y in zip(rows[f"{metric}_delta_pp"], [2.0, 1.0, 0.0])}
    assert (tmp_path / "plots" / "features_paired.png").stat().st_size > 1000


def test_each_context_is_its_own_family_in_every_output(tmp_path, wide_console):
    """Two dropout values: two baselines, two Holm families, two verdicts, named in report.md, verdict.json,
    the plots and the console (where a context label in brackets must not be taken for rich markup)."""
    from typer.testing import CliRunner

    from l2reg.cli import main as cli_main

    contexts = {0.5: CONTEXT, 0.0: "epochs=2,train_limit=None,dropout=0-def456"}
    for dropout, context in contexts.items():
        gains = GAINS["supported" if dropout == 0.5 else "not supported"]
        for seed, base in enumerate(BASE_CORRECT):
            tag = "" if dropout == 0.5 else "-dropout0"
            write(tmp_path, [
                record(f"baseline{tag}-s{seed}", setting_of(0.0), seed, base, context=context, dropout=dropout),
                record(f"both-a0.0001{tag}-s{seed}", setting_of(1e-4), seed, base + gains[0][seed], context=context,
                       dropout=dropout),
                record(f"both-a0.001{tag}-s{seed}", setting_of(1e-3), seed, base + gains[1][seed], context=context,
                       dropout=dropout)])
    result = CliRunner().invoke(cli_main.app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for context, verdict in ((contexts[0.5], "supported"), (contexts[0.0], "not supported")):
        assert f"verdicts [{context}] (smallest effect of interest 0.1 pp):" in result.output
        assert f"baseline [{context}]" in result.output
        summary = pd.read_csv(tmp_path / "summary.csv")
        assert list(summary.loc[summary["context"] == context, "call"])[0] == "baseline"
        claims = json.loads((tmp_path / "verdict.json").read_text())["contexts"][context]["claims"]
        assert claims["accuracy"]["verdict"] == verdict
        assert f"## Context `{context}`" in (tmp_path / "report.md").read_text()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 6 and list(summary["call"]).count("baseline") == 2
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs["dropout"].unique()) == [0.0, 0.5]
    loaded = load_records(tmp_path).records
    made = figures(runs_frame(loaded), histories_frame(loaded))
    assert len(made["test_acc_vs_alpha.png"].axes) == 2  # a panel per context
    assert [ax.get_title().split("\n")[-1] for ax in made["test_acc_vs_alpha.png"].axes] == [
        f"[{c}]" for c in sorted(contexts.values())]


def test_the_forest_plot_draws_the_summarys_paired_numbers_and_is_listed_with_its_caption(tmp_path):
    from l2reg.forest import forest_figure

    plots_folder(tmp_path)
    report = write_reports(tmp_path)
    assert (tmp_path / "plots" / FOREST_PLOT).stat().st_size > 1000
    report_md = (tmp_path / "report.md").read_text()
    assert [line for line in report_md.splitlines() if line.startswith("![")] == [
        f"![{name[:-4]}](plots/{name})" for name in PLOTS]
    assert f"![forest_accuracy](plots/{FOREST_PLOT})\n\n{CAPTIONS[FOREST_PLOT]}\n" in report_md
    summary = report.analysis.summary
    rows = summary[summary["alpha"] > 0].sort_values("delta_pp", ascending=False, kind="stable")
    ax = next(a for a in forest_figure(summary, report.runs, 0.1).axes if a.get_title())
    y = [float(v) for v in range(len(rows) - 1, -1, -1)]
    (ci,) = [a for a in ax.collections if a.get_gid() == "ci95"]
    segments = ci.get_segments()
    assert [seg[0][0] for seg in segments] == pytest.approx(rows["paired_ci_low_pp"].tolist())
    assert [seg[1][0] for seg in segments] == pytest.approx(rows["paired_ci_high_pp"].tolist())
    assert [seg[0][1] for seg in segments] == y
    drawn = sorted((xy[1], xy[0]) for a in ax.collections if str(a.get_gid()).startswith("call:")
                   for xy in a.get_offsets())
    assert drawn == sorted(zip(y, rows["delta_pp"]))


def data_set(folder, gains, seeds=6, extra_planned=()):
    """A results folder of the baseline and settings A (1e-4) and B (1e-3) with the given GAINS, its
    sweep.json planning its runs and `extra_planned` more."""
    records = []
    for seed, base in enumerate(BASE_CORRECT[:seeds]):
        records += [record(f"baseline-s{seed}", setting_of(0.0), seed, base),
                    record(f"both-a0.0001-s{seed}", setting_of(1e-4), seed, base + gains[0][seed]),
                    record(f"both-a0.001-s{seed}", setting_of(1e-3), seed, base + gains[1][seed])]
    write(folder, records)
    files.write_json_atomic(folder / "sweep.json", {"invocations": [
        {"planned_runs": [r["run_id"] for r in records] + list(extra_planned)}]})
    return records


def test_the_overview_tabulates_each_folders_verdicts_and_says_what_is_missing(tmp_path):
    from l2reg.overview import folder_rows, write_overview

    main, control, unreported = tmp_path / "ablation", tmp_path / "controls-a", tmp_path / "controls-b"
    data_set(main, GAINS["supported"], extra_planned=["both-a0.01-s0", "both-a0.01-s1"])
    data_set(control, GAINS["not supported"])
    data_set(unreported, GAINS["inconclusive"], seeds=2)
    summary = write_reports(main).analysis.summary
    write_reports(control)
    out = tmp_path / "docs" / "claim-check.md"
    text = write_overview([main, control, unreported, tmp_path / "controls-c"], out)
    assert out.read_text() == text
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]  # the header row left out
    assert len(lines) == 4
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0][0] == f"[{main}](../ablation/report.md)"  # relative to the markdown's folder
    assert cells[0][1] == "2 epoch(s), dropout 0.5, all training images"
    assert cells[0][2] == "18 of 20 (18 ok)"
    assert cells[0][3] == "3 min (median 10 s)"  # 18 runs of 10 s each (the records' `seconds`)
    assert cells[0][4] == "**supported**" and cells[1][4] == "**not supported**"
    best = summary.loc[summary["delta_pp"].idxmax()]
    assert best["alpha"] == 1e-4 and best["delta_pp"] == pytest.approx(0.5)
    assert cells[0][9] == (f"alpha=0.0001: +0.500 pp [{best['paired_ci_low_pp']:+.3f}, "
                           f"{best['paired_ci_high_pp']:+.3f}], n = 6, better")
    assert cells[1][2] == "18 of 18 (18 ok)" and cells[1][10] == ""
    assert cells[2][0] == str(unreported) and cells[2][2] == "6 files of 6" and cells[2][3] == "-"
    assert cells[2][10] == f"no report yet: `l2sweep report {unreported}`"
    assert cells[3][10] == "not started" and cells[3][4] == "-"
    # a folder whose runs were copied in (a control's baselines) but where no sweep has run
    (control / "sweep.json").unlink()
    assert folder_rows(control)[0].note == ("no sweep has run here yet (no sweep.json: nothing planned; its run "
                                            "files were put here)")
    files.write_json_atomic(control / "sweep.json", {"invocations": [{"planned_runs": []}]})
    # a run finished after the report: the row says its report is stale, and why
    write(control, [record("both-a0.01-s0", setting_of(1e-2), 0, 9800)])
    [row] = folder_rows(control)
    assert row.note == f"stale: runs/ holds 19 files, the report read 18: `l2sweep report {control}`"
    assert row.runs == "18 of 19 (18 ok)"  # done and ok both from the report
    write_reports(control)
    assert folder_rows(control)[0].note == ""
    # a file that is not a run record is counted as read, not as a stale report (report.md names it)
    (control / "runs" / "junk.json").write_text("{not json")
    write_reports(control)
    [row] = folder_rows(control)
    assert row.note == "1 file(s) in runs/ are not run records (report.md)" and row.runs == "19 of 20 (19 ok)"
    # file times say nothing (a git clone sets them all): only content makes a report stale
    later = (control / "verdict.json").stat().st_mtime + 10
    os.utime(control / "runs" / "both-a0.01-s0.json", (later, later))
    assert folder_rows(control)[0].note == "1 file(s) in runs/ are not run records (report.md)"
    # a run re-run since the report (same file, another test accuracy), same count of files
    write(control, [record("both-a0.01-s0", setting_of(1e-2), 0, 9790)])
    assert folder_rows(control)[0].note.endswith(f"stale: 1 run file(s) changed since the report: "
                                                 f"`l2sweep report {control}`")
    (control / "runs" / "both-a0.01-s0.json").unlink()
    (control / "runs" / "other.json").write_text("{}")  # same count, but the report's run is gone
    assert folder_rows(control)[0].note.endswith("stale: 1 run file(s) changed since the report: "
                                                 f"`l2sweep report {control}`")


def test_the_overviews_compute_column_sums_the_runs_wall_times_and_gives_the_median():
    from l2reg.overview import _compute

    runs = pd.DataFrame({"seconds": [100.0, 300.0, float("nan"), 200.0]})  # a failed run without time
    assert _compute(runs) == "10 min (median 200 s)"
    assert _compute(pd.DataFrame({"seconds": [3600.0] * 3 + [1800.0]})) == "3.5 h (median 3600 s)"
    assert _compute(pd.DataFrame({"seconds": [7199.0]})) == "120 min (median 7199 s)"  # hours from 2 h on
    assert _compute(pd.DataFrame({"seconds": [float("nan")]})) == "-"
    assert _compute(pd.DataFrame({"run_id": ["a"]})) == "-"  # a runs.csv from before the column


def test_the_overview_headlines_only_a_tested_gain_and_names_its_alpha(tmp_path):
    from l2reg.overview import folder_rows

    # one alpha: alpha is not a varying axis but is still named; a setting with a single paired seed
    # (gain +0.9 pp) is not headlined over the tested one
    records = []
    for seed, base in enumerate(BASE_CORRECT[:3]):
        records += [record(f"baseline-s{seed}", setting_of(0.0), seed, base),
                    record(f"both-s{seed}", setting_of(1e-3, "both"), seed, base + (10, 12, 8)[seed])]
    records.append(record("weights-s0", setting_of(1e-3, "weights"), 0, BASE_CORRECT[0] + 90))
    write(tmp_path, records)
    write_reports(tmp_path)
    [row] = folder_rows(tmp_path)
    assert row.best_gain.startswith("alpha=0.001 target=both: +0.100 pp [") and ", n = 3, " in row.best_gain


def test_the_overview_refuses_report_files_that_disagree(tmp_path):
    from l2reg.overview import OverviewError, folder_rows

    data_set(tmp_path, GAINS["supported"], seeds=3)
    write_reports(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    runs["context"] = "another-context"
    runs.to_csv(tmp_path / "runs.csv", index=False)
    with pytest.raises(OverviewError, match="describe different runs or contexts"):
        folder_rows(tmp_path)
    write_reports(tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    del verdict["contexts"][CONTEXT]["claims"]["accuracy"]
    (tmp_path / "verdict.json").write_text(json.dumps(verdict))
    # a claim the report predates (registered since) reads "-", never a traceback
    assert [row.verdicts["accuracy"] for row in folder_rows(tmp_path)] == ["-"]
    del verdict["contexts"]
    (tmp_path / "verdict.json").write_text(json.dumps(verdict))
    with pytest.raises(OverviewError, match="cannot be read .KeyError"):
        folder_rows(tmp_path)


def test_the_overview_of_a_started_folder_without_finished_runs(tmp_path):
    from l2reg.overview import folder_rows

    files.write_json_atomic(tmp_path / "sweep.json", {"invocations": [{"planned_runs": ["a", "b"]}]})
    [row] = folder_rows(tmp_path)
    assert (row.runs, row.note) == ("0 of 2", "started, no run finished yet")


def test_the_overview_gives_each_context_its_own_row(tmp_path):
    from l2reg.overview import folder_rows

    for dropout, context in ((0.5, CONTEXT), (0.0, "epochs=2,train_limit=None,dropout=0-def456")):
        for seed, base in enumerate(BASE_CORRECT):
            tag = "" if dropout == 0.5 else "-dropout0"
            write(tmp_path, [record(f"baseline{tag}-s{seed}", setting_of(0.0), seed, base, context=context,
                                    dropout=dropout),
                             record(f"both{tag}-s{seed}", setting_of(1e-4), seed, base + 50, context=context,
                                    dropout=dropout)])
    files.write_json_atomic(tmp_path / "sweep.json", {"invocations": [{"planned_runs": []}]})
    write_reports(tmp_path)
    rows = folder_rows(tmp_path)
    assert [r.regime for r in rows] == ["2 epoch(s), dropout 0, all training images",
                                        "2 epoch(s), dropout 0.5, all training images"]
    assert [r.runs for r in rows] == ["12 (12 ok)", "12 (12 ok)"]
    assert all(r.note == "folder: 24 of 24 runs" for r in rows)


def test_overview_command_writes_the_table_and_fails_cleanly_on_a_damaged_report(tmp_path):
    from typer.testing import CliRunner

    from l2reg.cli import main as cli_main

    data_set(tmp_path / "ablation", GAINS["supported"])
    write_reports(tmp_path / "ablation")
    out = tmp_path / "claim-check.md"
    result = CliRunner().invoke(cli_main.app, ["overview", str(tmp_path / "ablation"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "**supported**" in out.read_text() and out.read_text() in result.output
    (tmp_path / "ablation" / "verdict.json").write_text("{not json")
    result = CliRunner().invoke(cli_main.app, ["overview", str(tmp_path / "ablation")])
    assert result.exit_code == 2
    assert "its report files cannot be read" in result.output and "Traceback" not in result.output


def test_by_axis_averages_each_axis_values_settings_for_every_claim(tmp_path):
    from l2reg.axis_reading import table as by_axis

    plots_folder(tmp_path)
    summary = write_reports(tmp_path).analysis.summary
    rows = summary[summary["alpha"] != 0]
    table = by_axis(rows, ["alpha", "target", "schedule"])
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    header, body = lines[0], lines[2:]
    assert [(r[0], r[1]) for r in body] == [("alpha", "0.0001"), ("alpha", "0.001"), ("target", "both"),
                                            ("target", "weights"), ("schedule", "constant"),
                                            ("schedule", "exponential(gamma=1)")]
    weights = dict(zip(header, body[3]))
    group = rows[rows["target"] == "weights"]
    assert weights["settings"] == "4"
    assert float(weights["accuracy gain pp, mean"]) == pytest.approx(group["delta_pp"].mean(), abs=5e-4)
    best = group.loc[group["delta_pp"].idxmax()]
    assert weights["best (setting)"] == f"{best['delta_pp']:+.3f} (alpha={best['alpha']:g} schedule={best['schedule']})"
    assert float(weights["gap change pp, mean"]) == pytest.approx(group["gap_delta_pp"].mean(), abs=5e-4)
    assert float(weights["sd ratio, median"]) == pytest.approx(group["spread_ratio"].median(), abs=5e-3)
    assert sum(int(part.split()[0]) for part in weights["accuracy calls"].split(", ")) == 4
    assert weights["probe_acc_100 gain pp, mean"] == "-"  # these records have no feature metrics
    assert "## By axis, at a glance" in (tmp_path / "report.md").read_text()
    assert table in (tmp_path / "report.md").read_text()


def test_a_value_keeps_its_style_in_every_plot_and_every_legend_names_every_line(tmp_path):
    """'activations' has ok runs but no seed paired with a baseline, and only at alpha 1e-4: the
    legends of rows of panels must name it although the last panel does not draw it."""
    from l2reg.plots import palette

    records = []
    for seed, base in enumerate(BASE_CORRECT[:3]):
        records.append(record(f"baseline-s{seed}", setting_of(0.0), seed, base,
                              features={m: 90.0 + 0.5 * seed for m in FEATURE_METRICS}))
        for alpha in (1e-4, 1e-3):
            for target in ("both", "weights"):
                records.append(record(f"{target}-{alpha}-s{seed}", setting_of(alpha, target), seed, base + 5 + seed,
                                      features={m: 91.0 + 0.7 * seed for m in FEATURE_METRICS}))
    records += [record(f"activations-s{seed}", setting_of(1e-4, "activations"), seed, 9890 + seed,
                       features={m: 85.0 + seed for m in FEATURE_METRICS}) for seed in (7, 8)]
    write(tmp_path, records)
    write_reports(tmp_path)
    loaded = load_records(tmp_path).records
    runs = runs_frame(loaded)
    values = palette(runs)
    made = figures(runs, histories_frame(loaded), values)
    colours = {c.get_label(): c.lines[0].get_color() for c in made["test_acc_vs_alpha.png"].axes[0].containers}
    assert set(colours) == {"activations", "both", "weights"} and len(set(colours.values())) == 3
    validation = made["val_acc_per_epoch.png"].axes
    assert validation[-1].get_title() == "alpha=0.001"
    assert [t.get_text() for t in validation[-1].get_legend().get_texts()] == [
        "baseline (alpha=0)", "activations", "both", "weights"]


def test_a_report_with_fewer_runs_than_planned_says_it_is_interim(tmp_path):
    from l2reg.overview import folder_rows

    data_set(tmp_path, GAINS["supported"], extra_planned=["both-a0.01-s0", "both-a0.01-s1"])
    write_reports(tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert (verdict["runs"], verdict["runs_planned"], verdict["interim"]) == (18, 20, True)
    assert "**Interim report: 18 of the 20 planned runs have finished (ok or diverged).**" in (
        tmp_path / "report.md").read_text()
    assert folder_rows(tmp_path)[0].note == "interim: not all planned runs are in"
    files.write_json_atomic(tmp_path / "sweep.json", {"invocations": [{"planned_runs": []}]})
    write_reports(tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert (verdict["runs_planned"], verdict["interim"]) == (18, False)
    assert "Interim report" not in (tmp_path / "report.md").read_text()
    assert folder_rows(tmp_path)[0].note == ""
    # a failed run is retried by the next invocation: the report is interim until it has finished
    failed = record("both-a0.001-s5", setting_of(1e-3), 5, status="failed")
    write(tmp_path, [failed])
    write_reports(tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert (verdict["runs"], verdict["runs_final"], verdict["runs_planned"], verdict["interim"]) == (18, 17, 18, True)
    assert "**Interim report: 17 of the 18 planned runs have finished" in (tmp_path / "report.md").read_text()


def test_a_pipe_in_a_folder_name_does_not_split_the_overview_table(tmp_path):
    from l2reg.overview import overview_markdown

    folder = tmp_path / "a|b"
    data_set(folder, GAINS["supported"], seeds=3)
    write_reports(folder)
    row = [line for line in overview_markdown([folder], tmp_path).splitlines() if line.startswith("| [")][0]
    assert row.count(" | ") == len(claim_names()) + 5  # 10 cells: 9 separators between them
    assert "a\\|b" in row


def test_axis_words_restate_the_per_setting_decisions_as_counts_per_axis_value():
    from l2reg.axis_reading import table as by_axis
    from l2reg.axis_reading import words as axis_words

    def row(alpha, target, delta, call, support=1.0, gap=1.0, ratio=1.0, spread=1.0, features=UNDECIDED,
            diverged=0):
        gains = {f"{metric}_delta_pp": 1.0 for metric in FEATURE_METRICS}
        return {"alpha": alpha, "target": target, "delta_pp": delta, "call": call, "n_diverged": diverged,
                "support_p_holm": support, "gap_p_holm": gap, "gap_delta_pp": -0.1, "spread_ratio": ratio,
                "spread_p_holm": spread, "features_call": features, **gains}

    rows = pd.DataFrame([
        row(1e-4, "weights", -0.30, "worse", gap=0.01, ratio=1.8, spread=0.02),  # gap shrunk, accuracy not held
        row(1e-4, "both", +0.20, "better", support=0.03, gap=0.01, features=SUPPORTS),
        row(1e-3, "weights", -0.10, "undecided", features=NOT_NONINFERIOR),
        row(1e-3, "both", +0.05, "above zero (not shown above m)", ratio=0.5, spread=0.049, features=NOT_NONINFERIOR),
        # diverged in a seed: its survivors look good on every claim, yet it counts against them all
        row(1e-3, "activations", +0.90, "diverged", support=0.001, gap=0.001, ratio=0.2, spread=0.001,
            features=SUPPORTS, diverged=1),
    ])
    words = axis_words(rows, ["alpha", "target"])
    no_test = "; means over settings, no test compares values); settings by what the declared tests decided:"
    assert words == [
        "- **alpha**: mean accuracy change highest at alpha=0.001 (-0.025 pp), lowest at alpha=0.0001 (-0.050 pp"
        + no_test,
        "  - alpha=0.0001 (2 settings): accuracy 1 better, 1 worse; gap 1 shrunk with test accuracy held, "
        "1 shrunk without test accuracy shown held (does not count); sd 1 larger; "
        "features 1 better (on one metric, non-inferior on the others)",
        "  - alpha=0.001 (3 settings): 1 diverged in some seed (against every claim); accuracy 0 better, "
        "1 above zero (not shown above m), 1 undecided; sd 1 smaller; features 2 better on a metric but not shown "
        "non-inferior on another",
        "- **target**: mean accuracy change highest at target=both (+0.125 pp), lowest at target=weights (-0.200 pp"
        + no_test,
        "  - target=activations (1 setting): 1 diverged in some seed (against every claim); accuracy 0 better",
        "  - target=both (2 settings): accuracy 1 better, 1 above zero (not shown above m); gap 1 shrunk with "
        "test accuracy held; sd 1 smaller; features 1 better (on one metric, non-inferior on the others), 1 better "
        "on a metric but not shown non-inferior on another",
        "  - target=weights (2 settings): accuracy 0 better, 1 worse, 1 undecided; gap 1 shrunk without test "
        "accuracy shown held (does not count); sd 1 larger; features 1 better on a metric but not shown "
        "non-inferior on another",
    ]
    # within one target the per-alpha words count only that target's settings, and an axis with one
    # value left (target) gets no words
    assert axis_words(rows[rows["target"] == "both"], ["alpha", "target"]) == [
        "- **alpha**: mean accuracy change highest at alpha=0.0001 (+0.200 pp), lowest at alpha=0.001 (+0.050 pp"
        + no_test,
        "  - alpha=0.0001 (1 setting): accuracy 1 better; gap 1 shrunk with test accuracy held; "
        "features 1 better (on one metric, non-inferior on the others)",
        "  - alpha=0.001 (1 setting): accuracy 0 better, 1 above zero (not shown above m); sd 1 smaller; "
        "features 1 better on a metric but not shown non-inferior on another",
    ]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in by_axis(rows, ["alpha"]).splitlines()]
    assert table[3][:6] == ["alpha", "0.001", "3", "-0.025", "+0.050", "1 undecided, 1 above zero (not shown above m), "
                            "1 diverged"]  # the diverged setting: in the calls, not in the mean or the best


def test_settings_whose_varying_axes_differ_by_alpha_are_drawn_in_every_report_file(tmp_path):
    """A sweep that is not a cartesian product (two sweeps into one folder, or point sets): alpha
    1e-3 varies the schedule, alpha 1e-4 the target. Every plot and report.html draws it."""
    records = []
    for seed in range(3):
        records.append(record(f"baseline-s{seed}", setting_of(0.0), seed, 9900 + seed))
        records.append(record(f"a-s{seed}", setting_of(1e-3, "activations", "exponential(gamma=1)"), seed, 9910))
        records.append(record(f"b-s{seed}", setting_of(1e-4, "activations"), seed, 9905 + seed))
        records.append(record(f"c-s{seed}", setting_of(1e-4, "both"), seed, 9902 + 2 * seed))
    write(tmp_path, records)
    report = write_reports(tmp_path)
    assert len(report.analysis.summary) == 4
    page = (tmp_path / "report.html").read_text()
    assert "Validation accuracy per epoch" in page and page.count("alpha=0.0001") >= 1
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == set(PLOTS)


def test_the_article_claims_are_listed_once_each_a_second_reading_by_the_number_of_the_first():
    """report.md's opening list: stability is one article claim read two ways (sd, churn)."""
    from l2reg import report

    listed = report._article_claims()
    assert listed.count("makes the model more stable") == 1
    assert "(3) makes the model more stable (使得模型更加稳定); (4) claim (3), read as: two seeds disagree" in listed
    assert listed.startswith("(1) clearly raises test accuracy") and "(5) extracts better features" in listed
