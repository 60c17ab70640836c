"""report: files rebuilt from runs/*.json alone, plots with the expected series, failed runs shown."""

import numpy as np
import pandas as pd

from l2reg import files
from l2reg.plots import PLOTS, figures
from l2reg.report import histories_frame, load_records, runs_frame, write_reports


def record(run_id, alpha, target, seed, acc, status="ok", schedule="constant"):
    setting = ({"alpha": 0.0, "target": "none", "norm": "none", "schedule": "none"} if alpha == 0 else
               {"alpha": alpha, "target": target, "norm": "l2", "schedule": schedule})
    history = [{"epoch": e, "train_loss": 0.1, "train_acc": 97.0 + e, "val_loss": 0.05, "val_objective": 0.06,
                "val_acc": (acc or 0) - 1 + e / 2, "lr": 1e-3, "seconds": 1.0} for e in (1, 2)]
    metrics = {"test_acc": acc, "test_loss": 0.03, "val_acc": acc, "val_loss": 0.04, "train_acc": acc + 0.5,
               "train_loss": 0.02, "penalty": 0.01 * alpha, "weight_sq_norm": 50.0, "activation_sq_norm": 300.0,
               "n_test": 10000} if status == "ok" else {}
    return {"run_id": run_id, "setting": setting, "seed": seed, "context": "epochs=2-abc", "status": status,
            "metrics": metrics, "history": history if status == "ok" else [], "seconds": 10.0, "pack_size": 1,
            "device": "cpu", "error": "RuntimeError: boom" if status == "failed" else None,
            "config": {"train": {"epochs": 2, "lr": 1e-3, "adam_eps": 1e-7, "batch_size": 128,
                                 "plateau_factor": 0.1, "plateau_patience": 3},
                       "data": {"val_fraction": 0.1, "train_limit": None}, "report": {"min_effect_pp": 0.1}},
            "versions": {"torch": "x"}, "git_commit": "abc"}


def write_folder(folder):
    rng = np.random.default_rng(0)
    records = []
    for seed in range(4):
        records.append(record(f"base-{seed}", 0.0, None, seed, 99.0 + rng.normal(0, 0.05)))
        for alpha in (1e-4, 1e-3):
            for target in ("weights", "both"):
                for schedule in ("constant", "exponential(gamma=1)"):
                    records.append(record(f"{target}-{alpha}-{schedule}-{seed}", alpha, target, seed,
                                          99.0 + rng.normal(0, 0.05), schedule=schedule))
    records.append(record("broken", 1e-3, "both", 9, None, status="failed"))
    for r in records:
        files.write_json_atomic(folder / "runs" / f"{r['run_id']}.json", r)
    return records


def test_report_writes_everything_and_reproduces_it(tmp_path):
    write_folder(tmp_path)
    runs, summary, claim = write_reports(tmp_path)
    assert len(runs) == 4 + 4 * 8 + 1 and len(summary) == 1 + 8
    assert claim.verdict in ("supported", "not supported", "inconclusive")
    names = ["runs.csv", "summary.csv", "report.md"] + [f"plots/{p}" for p in PLOTS]
    first = {n: (tmp_path / n).read_bytes() for n in names[:3]}
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    for n in names[:3]:
        (tmp_path / n).unlink()
    write_reports(tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in names[:3]} == first
    report = (tmp_path / "report.md").read_text()
    assert f"## Verdict: {claim.verdict}" in report and "](plots/test_acc_vs_alpha.png)" in report
    assert "`broken`: failed (RuntimeError: boom)" in report
    summary_csv = pd.read_csv(tmp_path / "summary.csv")
    for column in ("delta_images", "ci_low_pp", "ci_high_pp", "p_value", "p_holm", "paired_delta_pp", "paired_p",
                   "hedges_g", "call"):
        assert column in summary_csv.columns
    row = summary_csv[(summary_csv["alpha"] == 1e-3) & (summary_csv["target"] == "both")
                      & (summary_csv["schedule"] == "constant")].iloc[0]
    assert row["n"] == 4 and row["n_not_ok"] == 1


def test_plots_have_a_series_per_target_norm_schedule_and_a_baseline_band(tmp_path):
    records = write_folder(tmp_path)
    loaded, _ = load_records(tmp_path)
    assert len(loaded) == len(records)
    made = figures(runs_frame(loaded), histories_frame(loaded))
    accuracy = made["test_acc_vs_alpha.png"].axes[0]
    assert len(accuracy.containers) == 4  # errorbar series: 2 targets x 2 schedules
    assert accuracy.get_xscale() == "log"
    assert len(accuracy.patches) == 1  # the baseline band
    for container in accuracy.containers:
        assert list(container.lines[0].get_xdata()) == [1e-4, 1e-3]
    assert len(made["val_acc_per_epoch.png"].axes[0].lines) == 1 + 8  # baseline + 8 settings
    assert len(made["gap_vs_alpha.png"].axes[0].containers) == 4
