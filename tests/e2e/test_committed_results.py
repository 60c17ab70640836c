"""The committed claim checks: each summary is what scipy computes from its runs.csv, and
`l2sweep report` rebuilds the same summary from its runs/*.json."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg.report import load_records, runs_frame
from l2reg.stats import holm, summarize

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.fixture(params=["ablation-quick", "ablation-quick-12"])
def folder(request):
    if not (RESULTS / request.param / "summary.csv").is_file():
        pytest.skip(f"no committed results/{request.param}")
    return RESULTS / request.param


@pytest.fixture
def committed(folder):
    return pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "summary.csv")


def test_summary_is_reproduced_by_scipy_from_runs_csv(committed):
    runs, summary = committed
    ok = runs[runs["status"] == "ok"]
    base = ok[ok["target"] == "none"].sort_values("seed")
    tested = summary[summary["target"] != "none"]
    p_values = []
    for row in tested.itertuples():
        setting = ok[(ok["alpha"] == row.alpha) & (ok["target"] == row.target) & (ok["norm"] == row.norm)
                     & (ok["schedule"] == row.schedule)].sort_values("seed")
        welch = sps.ttest_ind(setting["test_acc"], base["test_acc"], equal_var=False)
        ci = welch.confidence_interval(0.95)
        assert row.n == len(setting)
        assert row.mean_acc == pytest.approx(setting["test_acc"].mean())
        assert row.delta_pp == pytest.approx(setting["test_acc"].mean() - base["test_acc"].mean())
        assert (row.ci_low_pp, row.ci_high_pp, row.p_value) == pytest.approx((ci.low, ci.high, welch.pvalue))
        paired = sps.ttest_rel(setting["test_acc"].to_numpy(), base["test_acc"].to_numpy())
        assert row.paired_p == pytest.approx(paired.pvalue)
        p_values.append(welch.pvalue)
    assert tested["p_holm"].to_numpy() == pytest.approx(holm(np.array(p_values)))


def test_report_rebuilds_the_same_summary_from_the_run_files(folder, committed):
    _, summary = committed
    records, unreadable = load_records(folder)
    assert not unreadable
    rebuilt = summarize(runs_frame(records))
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True),
                                  summary.astype(rebuilt.dtypes.to_dict()).reset_index(drop=True),
                                  check_exact=False, rtol=1e-9)
