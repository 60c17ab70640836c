"""The training loop: coefficient table, Keras Adam and plateau, repeatability, divergence."""

import math

import pytest
import torch

from l2reg import train as train_module
from l2reg.config import ScheduleConfig
from l2reg.data import load_mnist
from l2reg.train import RunSpec, TrainSettings, _compiled_objective, _KerasAdam, _Plateau, coefficient_table, train_pack

TINY = TrainSettings(epochs=2, batch_size=64, eval_batch_size=100)


def spec(seed=0, alpha=0.0, target="both", norm="l2", schedule="constant", **kw):
    return RunSpec(seed, alpha, target, norm, ScheduleConfig(schedule, **kw))


def test_coefficient_table_columns_and_times():
    specs = [spec(alpha=0.0), spec(alpha=1e-3, target="weights"), spec(alpha=2e-3, target="both", norm="l1"),
             spec(alpha=1e-3, target="activations", schedule="exponential", gamma=1.0)]
    table = coefficient_table(specs, epochs=2, steps_per_epoch=4)
    assert table.shape == (8, 4, 4)
    assert table[:, 0].abs().sum() == 0  # baseline: no penalty at all
    assert torch.allclose(table[:, 1], torch.tensor([1e-3, 0, 0, 0]).expand(8, 4))
    assert torch.allclose(table[:, 2], torch.tensor([0, 2e-3, 0, 2e-3]).expand(8, 4))
    # exponential: t = epoch + step/4 at the start of each step
    times = torch.tensor([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75], dtype=torch.float64)
    assert torch.allclose(table[:, 3, 2].double(), 1e-3 * torch.exp(-times), rtol=1e-6)
    assert table[:, 3, [0, 1, 3]].abs().sum() == 0


def test_keras_adam_first_step():
    p = torch.tensor([[1.0, -2.0]])
    g = torch.tensor([[0.5, -0.01]])
    opt = _KerasAdam([p], torch.tensor([0.1]), eps=1e-7)
    opt.step([g])
    # alpha_1 = lr*sqrt(1-b2)/(1-b1); m = 0.1 g; v = 0.001 g^2 -> update = alpha_1 * m / (sqrt(v) + eps)
    alpha1 = 0.1 * math.sqrt(0.001) / 0.1
    expected = [1.0 - alpha1 * 0.05 / (math.sqrt(0.001) * 0.5 + 1e-7),
                -2.0 + alpha1 * 0.001 / (math.sqrt(0.001) * 0.01 + 1e-7)]
    assert p[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_keras_adam_learning_rate_is_per_run():
    p = torch.ones(2, 3)
    opt = _KerasAdam([p], torch.tensor([0.1, 0.0]), eps=1e-7)
    opt.step([torch.ones(2, 3)])
    assert torch.all(p[0] < 1) and torch.equal(p[1], torch.ones(3))


def test_plateau_follows_keras_min_delta_and_patience():
    plateau, lr = _Plateau(factor=0.1, patience=3), 1e-3
    lrs = []
    for value in [1.0, 0.99995, 0.9999, 0.99999, 0.5, 0.6]:
        lr = plateau.new_lr(value, lr)
        lrs.append(lr)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])


def test_a_cpu_run_repeats_to_the_bit_and_depends_on_its_seed(tiny_mnist):
    data = load_mnist(tiny_mnist)
    first = train_pack([spec(seed=0, alpha=1e-3)], data, TINY)[0]
    again = train_pack([spec(seed=0, alpha=1e-3)], data, TINY)[0]
    other = train_pack([spec(seed=1, alpha=1e-3)], data, TINY)[0]
    def untimed(history):
        return [{k: v for k, v in h.items() if k not in ("seconds", "train_seconds")} for h in history]

    assert untimed(first["history"]) == untimed(again["history"])
    assert first["metrics"] == again["metrics"]
    assert first["metrics"]["weight_sq_norm"] != other["metrics"]["weight_sq_norm"]


def test_result_fields_and_units(tiny_mnist):
    data = load_mnist(tiny_mnist)
    [result] = train_pack([spec(alpha=1e-3, target="weights")], data, TINY)
    assert result["status"] == "ok" and len(result["history"]) == 2
    m = result["metrics"]
    assert 0 <= m["test_acc"] <= 100 and 0 <= m["train_acc"] <= 100
    # penalty of the last epoch = alpha * sum W^2 averaged over its steps, close to alpha * final norm
    assert m["penalty"] == pytest.approx(1e-3 * m["weight_sq_norm"], rel=0.1)
    h = result["history"][-1]
    assert h["train_loss"] == pytest.approx(h["train_ce"] + h["train_penalty"])
    assert h["val_objective"] > h["val_loss"]  # the monitored objective includes the penalty


def test_learns_the_tiny_patterns(tiny_mnist):
    data = load_mnist(tiny_mnist)
    [result] = train_pack([spec()], data, TrainSettings(epochs=4, batch_size=32, eval_batch_size=100))
    assert result["metrics"]["test_acc"] > 60  # chance is 10 %


def test_overflowing_penalty_marks_the_run_diverged_and_spares_its_pack_mate(tiny_mnist):
    data = load_mnist(tiny_mnist)
    diverged, fine = train_pack([spec(seed=0, alpha=1e38, target="weights"), spec(seed=1)], data, TINY)
    assert diverged["status"] == "diverged" and diverged["diverged_epoch"] == 1
    assert diverged["metrics"]["final_lr"] is None
    assert fine["status"] == "ok" and len(fine["history"]) == 2


def test_compiled_training_step_matches_eager(tiny_mnist):
    data = load_mnist(tiny_mnist)  # 540 images, batch 64: 8 compiled steps + 1 eager partial step per epoch
    settings = TrainSettings(epochs=2, batch_size=64, eval_batch_size=100)
    eager = train_pack([spec(alpha=1e-3)], data, settings)[0]
    _compiled_objective.cache_clear()
    compiled = train_pack([spec(alpha=1e-3)], data, TrainSettings(**{**vars(settings), "compile": True}))[0]
    assert _compiled_objective.cache_info().currsize == 1  # the compiled path really ran
    for a, b in zip(eager["history"], compiled["history"]):
        for key in ("train_loss", "train_penalty", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=2e-3), key
    assert eager["metrics"]["weight_sq_norm"] == pytest.approx(compiled["metrics"]["weight_sq_norm"], rel=1e-3)


def test_compiled_pack_matches_eager_pack(tiny_mnist, monkeypatch):
    data = load_mnist(tiny_mnist)  # 540 images, batch 64: 8 full steps per epoch
    specs = [spec(seed=0, alpha=1e-3), spec(seed=1, alpha=0.0), spec(seed=2, alpha=1e-2, target="weights")]
    settings = TrainSettings(epochs=2, batch_size=64, eval_batch_size=100)
    eager = train_pack(specs, data, settings)
    calls = []

    def counting(*key):  # the real compiled objective, counting the steps that went through it
        compiled_objective = _compiled_objective(*key)
        return lambda *args: calls.append(args[1].shape) or compiled_objective(*args)

    monkeypatch.setattr(train_module, "_compiled_objective", counting)
    compiled = train_pack(specs, data, TrainSettings(**{**vars(settings), "compile": True}))
    assert calls == [(3, 64, 1, 28, 28)] * 16  # every full step of both epochs, the whole pack at once
    for a, b in zip(eager, compiled):
        for x, y in zip(a["history"], b["history"]):
            for key in ("train_loss", "train_penalty", "val_loss"):
                assert x[key] == pytest.approx(y[key], rel=2e-3, abs=1e-7), key
        assert a["metrics"]["weight_sq_norm"] == pytest.approx(b["metrics"]["weight_sq_norm"], rel=1e-3)
