"""Packs: several runs trained as one vmapped computation give each run's own result."""

import pytest
import torch

from l2reg.config import ScheduleConfig
from l2reg.data import load_mnist
from l2reg.train import TrainSettings, make_spec, train_pack

SPECS = [
    make_spec(0, 1e-3, ScheduleConfig("constant"), target="weights", norm="l2"),
    make_spec(1, 1e-2, ScheduleConfig("exponential", gamma=1.0), target="activations", norm="l1"),
    make_spec(2, 0.0, ScheduleConfig("constant")),
    make_spec(3, 5e-3, ScheduleConfig("cosine"), target="both", norm="l2"),
    make_spec(4, 2.0, ScheduleConfig("constant"), target="weights", form="decoupled", scope="all"),
]


def float64(data):
    """Equivalence is checked in float64: in float32 the different convolution algorithms of a
    vmapped pack and a single run differ in the last bits, and Adam turns the sign noise of
    near-zero gradients into lr-sized steps, so float32 parameters drift apart by ~lr."""
    for name in vars(data):
        if getattr(data, name).is_floating_point():
            setattr(data, name, getattr(data, name).double())
    return data


def assert_same_run(a: dict, b: dict, rtol=1e-7, atol=1e-9):
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        assert torch.allclose(a["params"][name], b["params"][name], rtol=rtol, atol=atol), name
    for key in ("test_loss", "train_loss", "weight_sq_norm", "dense_weight_sq_norm", "penalty"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-7, abs=1e-9), key
    for key in ("test_acc", "probe_acc_100", "probe_acc_1000", "zero_fraction", "noise_acc_0.2"):
        assert a["metrics"].get(key) == b["metrics"].get(key), key
    assert a.get("test_predictions") == b.get("test_predictions")
    assert [h["train_loss"] for h in a["history"]] == pytest.approx([h["train_loss"] for h in b["history"]],
                                                                     rel=1e-7)


@pytest.fixture
def small(tiny_mnist_factory):
    """200 training images: float64 convolutions are slow on a CPU."""
    return float64(load_mnist(tiny_mnist_factory(n_train=200, n_test=60)))


def test_pack_equals_runs_one_by_one_without_dropout(small):
    data = small
    settings = TrainSettings(epochs=2, batch_size=32, eval_batch_size=100, dropout=0.0)
    packed = train_pack(SPECS, data, settings, keep_params=True)
    alone = [train_pack([spec], data, settings, keep_params=True)[0] for spec in SPECS]
    assert [r["pack_size"] for r in packed] == [5] * 5 and alone[0]["pack_size"] == 1
    for a, b in zip(packed, alone):
        assert_same_run(a, b)
    # and the runs really differ from each other (the test could not pass by accident)
    assert not torch.allclose(packed[0]["params"]["conv1.weight"], packed[1]["params"]["conv1.weight"])


def test_a_run_with_dropout_does_not_depend_on_its_pack_mates(small):
    data = small
    settings = TrainSettings(epochs=2, batch_size=32, eval_batch_size=100)
    in_first = train_pack([SPECS[3], SPECS[0]], data, settings, keep_params=True)[0]
    in_second = train_pack([SPECS[1], SPECS[2], SPECS[3]], data, settings, keep_params=True)[2]
    alone = train_pack([SPECS[3]], data, settings, keep_params=True)[0]
    assert_same_run(in_first, in_second)
    assert_same_run(in_first, alone)


def test_plateau_lowers_each_runs_learning_rate_on_its_own(tiny_mnist):
    data = load_mnist(tiny_mnist)
    # patience 1 with a huge lr: the val objective stops improving for some runs, not for all
    settings = TrainSettings(epochs=4, batch_size=64, eval_batch_size=100, plateau_patience=1, lr=0.05,
                             features=False)
    results = train_pack(SPECS[:3], data, settings)
    schedules = [[h["lr"] for h in result["history"]] for result in results]
    for lrs in schedules:
        assert all(b in (pytest.approx(a), pytest.approx(a * 0.1)) for a, b in zip(lrs, lrs[1:]))
    assert any(lrs[-1] < lrs[0] for lrs in schedules), schedules  # the plateau fired for some run ...
    assert len({tuple(lrs) for lrs in schedules}) > 1, schedules  # ... and not alike for all: per run
    for spec, lrs in zip(SPECS[:3], schedules):  # each as it would be alone
        solo = train_pack([spec], data, settings)[0]
        assert [h["lr"] for h in solo["history"]] == pytest.approx(lrs)
