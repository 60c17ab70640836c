"""The house a maintainer extends without a map: a new penalty term, a new metric and a new claim,
each registered from this file alone, flow through a real tiny sweep (Hydra composition, the
in-process executor, the real training loop on tiny IDX files) into runs.csv, summary.csv,
verdict.json and report.md. No other file of the project knows them.

The toy regularizer is a confidence penalty on the logits (alpha times the mean negative entropy of
the softmax, Pereyra et al. 2017): it is neither a weight nor an activation norm. The toy metric is
the mean top-class softmax probability on the test images; the toy claim says the penalty "makes
the model less confident" and is decided by a paired one-sided t-test per setting, Holm over the
settings of the context."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import claims, evaluate, penalties, runner, stats, text
from l2reg.claims.base import INCONCLUSIVE, SUPPORTED, Claim, holm_into, verdict_dict

QUICK = ["train.batch_size=64", "train.eval_batch_size=100", "train.compile=false", "train.epochs=1"]


def negative_entropy(alpha, logits):
    log_p = logits.log_softmax(dim=1)
    return alpha * (log_p.exp() * log_p).sum(dim=1).mean()


class LessConfident(Claim):
    name = "confidence"
    words = "makes the model less confident"
    metrics = ("mean_max_softmax",)
    columns = ("confidence_n", "confidence_delta", "confidence_p", "confidence_p_holm")
    tests = "paired by seed, d = mean_max_softmax(setting) - baseline; H0 mean d >= 0, one-sided t-test, Holm"

    def setting_row(self, setting, context):
        d = setting.paired("mean_max_softmax")
        return {"confidence_n": len(d), "confidence_delta": float(d.mean()) if len(d) else float("nan"),
                "confidence_p": stats.one_sample_p(d, 0.0, "less")}

    def family(self, rows, context):
        holm_into(rows, "confidence_p", "confidence_n")

    def verdict(self, table, context):
        shown = table[table["confidence_p_holm"] < stats.SIGNIFICANCE]
        reasons = [f"{len(shown)} of {len(table)} settings lower the mean top-class probability (Holm p < 0.05)"]
        return verdict_dict(SUPPORTED if len(shown) else INCONCLUSIVE, reasons, None, None, self.tests)

    def table(self, view):
        return text.markdown_table(pd.DataFrame({
            "setting": [text.setting_name(r, view.varying) for _, r in view.rows.iterrows()],
            "confidence change": view.rows["confidence_delta"].map(lambda v: text.cell(v, 4, True)),
            "p (Holm)": view.rows["confidence_p_holm"].map(text.p_cell)}))


@pytest.fixture
def extended():
    """The three registrations, undone after the test (the registries are the project's own)."""
    term = penalties.register(penalties.Term("confidence-logits", "confidence", ("logits",), negative_entropy))
    metric = evaluate.register(evaluate.Metric("mean_max_softmax",
                                               lambda batch: batch.logits.softmax(dim=1).amax(dim=1).sum()))
    claim = claims.register(LessConfident())
    yield
    claims.unregister(claim.name)
    evaluate.unregister(metric.name)
    penalties.unregister(term.name)


def test_a_claim_a_metric_and_a_term_registered_here_reach_every_report_file(tiny_mnist, tmp_path, extended):
    overrides = ["alpha=0.0,0.5", "target=confidence", "seeds=3", f"data.root={tiny_mnist}",
                 f"results_dir={tmp_path}", "name=extended", *QUICK]
    result = runner.run_sweep(overrides)
    assert [r["status"] for r in result.trained] == ["ok"] * 6 and result.report is not None
    folder = tmp_path / "extended"

    runs = pd.read_csv(folder / "runs.csv")
    assert runs.columns[runs.columns.get_loc("n_train") + 1] == "mean_max_softmax"  # appended to the metrics
    assert set(runs["target"]) == {"none", "confidence"} and runs["mean_max_softmax"].between(0.1, 1).all()
    base = runs[runs["alpha"] == 0].set_index("seed")["mean_max_softmax"]
    penalised = runs[runs["alpha"] == 0.5].set_index("seed")["mean_max_softmax"]
    d = (penalised - base).sort_index().to_numpy()
    assert (d < 0).all()  # the entropy bonus lowers every seed's confidence

    summary = pd.read_csv(folder / "summary.csv")
    row = summary[summary["alpha"] == 0.5].iloc[0]
    assert row["confidence_n"] == 3 and row["confidence_delta"] == pytest.approx(d.mean(), rel=1e-9)
    expected_p = sps.ttest_1samp(d, 0.0, alternative="less").pvalue
    assert row["confidence_p"] == pytest.approx(expected_p, rel=1e-9)
    assert row["confidence_p_holm"] == pytest.approx(expected_p, rel=1e-9)  # a family of one setting
    assert "delta_pp" in summary.columns  # the built-in claims still run beside it

    verdict = json.loads((folder / "verdict.json").read_text())
    [context] = verdict["contexts"].values()
    assert list(context["claims"]) == [*claims.names()] and list(context["claims"])[-1] == "confidence"
    mine = context["claims"]["confidence"]
    assert mine["verdict"] == (SUPPORTED if expected_p < 0.05 else INCONCLUSIVE)
    assert mine["tests"] == LessConfident.tests

    report = (folder / "report.md").read_text()
    assert f"Confidence: {mine['verdict']}" in report
    assert f"Test: {LessConfident.tests}." in report
    assert text.cell(float(np.mean(d)), 4, True) in report  # the claim's own table, with its number


def test_a_claim_of_a_metric_no_run_records_is_refused():
    class Unmeasured(LessConfident):
        name = "unmeasured"
        metrics = ("no_such_metric",)
        columns = ("unmeasured_p",)

    with pytest.raises(ValueError, match="no_such_metric.*register them first"):
        claims.register(Unmeasured())
    assert "unmeasured" not in claims.names()
