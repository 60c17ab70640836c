"""The final evaluation as declared metrics: the column order, registration, a light import."""

import subprocess
import sys

import pytest

from l2reg import evaluate

COLUMNS = ["test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "penalty", "weight_sq_norm",
           "dense_weight_sq_norm", "activation_sq_norm", "probe_acc_100", "probe_acc_1000", "probe_acc_100_cv",
           "zero_fraction", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3", "n_test", "n_train"]


def test_the_metric_columns_keep_their_order_and_a_new_metric_appends_one():
    assert evaluate.metric_columns() == COLUMNS  # runs.csv's metric columns, as committed reports have them
    assert [m.name for m in evaluate.metrics() if not m.column] == ["final_lr"]  # in the record only
    metric = evaluate.register(evaluate.Metric("test_error", lambda b: (b.predictions != b.labels).sum(),
                                               reduce=evaluate.percent))
    try:
        assert evaluate.metric_columns() == [*COLUMNS, "test_error"]
        with pytest.raises(ValueError, match="registered already"):
            evaluate.register(metric)
    finally:
        evaluate.unregister(metric.name)
    assert evaluate.metric_columns() == COLUMNS


def test_a_declaration_says_how_it_is_computed():
    with pytest.raises(ValueError, match="give per_batch .* or value"):
        evaluate.Metric("nothing")
    with pytest.raises(ValueError, match="give per_batch .* or value"):
        evaluate.Metric("both", lambda b: b.correct, value=lambda run: 1.0)
    with pytest.raises(ValueError, match="over='val' is not an image set"):
        evaluate.Metric("val_error", lambda b: b.correct, over="val")
    assert evaluate.image_sets() == ("test", "train", "noise_0.1", "noise_0.2", "noise_0.3")
    assert evaluate.percent(3.0, 200) == 1.5 and evaluate.mean(3.0, 200) == 0.015
    assert list(evaluate.batches(5, 2)) == [(0, 2), (2, 4), (4, 5)]


def test_importing_the_metric_declarations_does_not_import_torch():
    """l2reg.report takes its columns from here and must stay light."""
    code = "import sys, l2reg.evaluate as e; e.metric_columns(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
