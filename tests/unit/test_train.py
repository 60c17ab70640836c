"""The training loop: coefficient table, Keras Adam and plateau, repeatability, divergence."""

import math

import pytest
import torch

from l2reg import evaluate, penalties, schedules
from l2reg import train as train_module
from l2reg.config import ScheduleConfig
from l2reg.data import load_mnist
from l2reg.model import ArticleCNN
from l2reg.train import (
    TrainSettings,
    _compiled_objective,
    _KerasAdam,
    _Plateau,
    coefficient_table,
    make_spec,
    pack_terms,
    train_pack,
)

TINY = TrainSettings(epochs=2, batch_size=64, eval_batch_size=100)


def spec(seed=0, alpha=0.0, target="both", norm="l2", schedule="constant", form="loss", scope="conv", **kw):
    return make_spec(seed, alpha, ScheduleConfig(schedule, **kw), target=target, norm=norm, form=form, scope=scope)


def test_coefficient_table_columns_and_times():
    specs = [spec(alpha=0.0), spec(alpha=1e-3, target="weights"), spec(alpha=2e-3, target="both", norm="l1"),
             spec(alpha=1e-3, target="activations", schedule="exponential", gamma=1.0),
             spec(alpha=3e-3, target="weights", form="decoupled", scope="all")]
    # the columns: the terms the regularized runs use (the union), in registration order
    terms = [t.name for t in pack_terms(specs)]
    assert terms == ["weights-conv-l2-loss", "weights-conv-l1-loss", "activations-taps-l2-loss",
                     "activations-taps-l1-loss", "weights-conv-l2-decoupled", "weights-dense-l2-decoupled"]
    table = coefficient_table(specs, epochs=2, steps_per_epoch=4)
    assert table.shape == (8, 5, len(terms))
    assert table[:, 0].abs().sum() == 0  # baseline: no penalty at all

    def column(kind, group, norm, form="loss"):
        return terms.index(f"{kind}-{group}-{norm}-{form}")

    def only(run, values: dict):
        expected = torch.zeros(len(terms), dtype=torch.float64)
        for col, value in values.items():
            expected[col] = value
        assert torch.equal(table[:, run], expected.expand(8, len(terms))), run

    only(1, {column("weights", "conv", "l2"): 1e-3})
    only(2, {column("weights", "conv", "l1"): 2e-3, column("activations", "taps", "l1"): 2e-3})
    only(4, {column("weights", "conv", "l2", "decoupled"): 3e-3, column("weights", "dense", "l2", "decoupled"): 3e-3})
    # exponential: t = epoch + step/4 at the start of each step
    times = torch.tensor([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75], dtype=torch.float64)
    act = column("activations", "taps", "l2")
    assert torch.allclose(table[:, 3, act], 1e-3 * torch.exp(-times), rtol=1e-12)
    assert table[:, 3].abs().sum() == pytest.approx(table[:, 3, act].sum().item())


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


def test_decoupled_decay_equals_torch_adamw_in_float64():
    """form=decoupled on one run = torch.optim.AdamW (eps so small that Keras' and torch's eps
    placements coincide), the decay applied to the decayed parameter only, with a per-run lr."""
    torch.manual_seed(0)
    start = torch.randn(3, 4, dtype=torch.float64)
    grads = [torch.randn(3, 4, dtype=torch.float64) for _ in range(5)]
    lr, decay = 0.01, 0.3
    reference = start.clone().requires_grad_(True)
    adamw = torch.optim.AdamW([reference], lr=lr, betas=(0.9, 0.999), eps=1e-30, weight_decay=decay)
    for g in grads:
        reference.grad = g.clone()
        adamw.step()
    ours = start.clone().unsqueeze(0).repeat(2, 1, 1)  # run 0 decays, run 1 does not
    opt = _KerasAdam([ours], torch.tensor([lr, lr], dtype=torch.float64), eps=1e-30, decay_columns=[3])
    coef = torch.zeros(2, 8, dtype=torch.float64)
    coef[0, 3] = decay
    for g in grads:
        opt.step([g.unsqueeze(0).repeat(2, 1, 1)], coef)
    assert torch.allclose(ours[0], reference.detach(), rtol=1e-12, atol=1e-14)
    plain = start.clone().requires_grad_(True)
    adam = torch.optim.Adam([plain], lr=lr, eps=1e-30)
    for g in grads:
        plain.grad = g.clone()
        adam.step()
    assert torch.allclose(ours[1], plain.detach(), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(ours[0], ours[1])  # the decay really acted


def test_decoupled_run_decays_its_kernels_and_adds_nothing_to_the_loss(tiny_mnist):
    data = load_mnist(tiny_mnist)
    settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=100, features=False)
    plain = train_pack([spec()], data, settings, keep_params=True)[0]
    conv = train_pack([spec(alpha=20.0, target="weights", form="decoupled")], data, settings, keep_params=True)[0]
    dense = train_pack([spec(alpha=20.0, target="weights", form="decoupled", scope="dense")], data, settings,
                       keep_params=True)[0]
    assert conv["metrics"]["penalty"] == 0.0 and all(h["train_penalty"] == 0.0 for h in conv["history"])
    assert conv["metrics"]["weight_sq_norm"] < 0.9 * plain["metrics"]["weight_sq_norm"]
    assert conv["metrics"]["dense_weight_sq_norm"] == pytest.approx(plain["metrics"]["dense_weight_sq_norm"], rel=0.1)
    assert dense["metrics"]["dense_weight_sq_norm"] < 0.9 * plain["metrics"]["dense_weight_sq_norm"]
    assert torch.equal(plain["params"]["conv1.bias"] != 0, conv["params"]["conv1.bias"] != 0)  # biases: no decay


def untimed(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "train_seconds")} for h in history]


@pytest.fixture
def zero_schedule(monkeypatch):
    """A schedule with s(t) = 0: a regularized run (alpha > 0) whose terms are computed at
    coefficient 0 at every step."""
    monkeypatch.setitem(schedules._REGISTRY, "zero", lambda cfg, t, total: 0.0)
    monkeypatch.setitem(schedules.PARAMETERS, "zero", ())
    return ScheduleConfig("zero")


def test_terms_at_a_zero_coefficient_train_the_baseline_to_the_bit(tiny_mnist, zero_schedule):
    """The baseline computes no penalty term at all; a run computing every built-in term at
    coefficient 0 (a pack mate's columns, say) gets its very numbers: 0 * term adds exactly 0.0
    to the loss and the gradients, and a 0 decay multiplies by exactly 1.0."""
    data = load_mnist(tiny_mnist)
    settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=100, features=False)
    assert pack_terms([spec(seed=3)]) == ()
    bare = train_pack([spec(seed=3)], data, settings, keep_params=True)[0]
    for setting in ({"target": "both", "norm": "l1", "scope": "all"},
                    {"target": "weights", "form": "decoupled", "scope": "all"}):
        zero = make_spec(3, 1.0, zero_schedule, **setting)
        assert pack_terms([zero]) == zero.terms and len(zero.terms) == 3 - (setting["target"] == "weights")
        ours = train_pack([zero], data, settings, keep_params=True)[0]
        for name in bare["params"]:
            assert torch.equal(ours["params"][name], bare["params"][name]), (setting, name)
        assert ours["metrics"] == bare["metrics"] and untimed(ours["history"]) == untimed(bare["history"])


def test_train_size_draws_a_subset_per_seed_and_keeps_the_validation_set(tiny_mnist):
    data = load_mnist(tiny_mnist)  # 540 training images, 60 validation
    settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=100, train_size=200, features=False)
    [small] = train_pack([spec(seed=0)], data, settings)
    [full] = train_pack([spec(seed=0)], data, TrainSettings(epochs=1, batch_size=64, eval_batch_size=100,
                                                            features=False))
    assert small["metrics"]["n_train"] == 200 and full["metrics"]["n_train"] == 540
    assert small["history"][0]["train_acc"] * 200 / 100 == pytest.approx(round(small["history"][0]["train_acc"] * 2))
    assert small["metrics"]["train_acc"] != full["metrics"]["train_acc"]
    # the subset depends on the seed, never on pack mates: alone == in a pack
    pack = train_pack([spec(seed=1), spec(seed=0)], data, settings)
    assert pack[1]["metrics"]["test_acc"] == small["metrics"]["test_acc"]
    assert pack[1]["history"][0]["train_loss"] == pytest.approx(small["history"][0]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="exceeds the 540 images"):
        train_pack([spec()], data, TrainSettings(epochs=1, batch_size=64, train_size=541, features=False))


def test_feature_metrics_and_predictions_are_recorded(tiny_mnist):
    import base64

    import numpy as np

    data = load_mnist(tiny_mnist)
    [result] = train_pack([spec(alpha=1e-3)], data, TrainSettings(epochs=3, batch_size=32, eval_batch_size=100))
    m = result["metrics"]
    for key in ("probe_acc_100", "probe_acc_1000", "noise_acc_0.1", "noise_acc_0.2", "noise_acc_0.3"):
        assert 0 <= m[key] <= 100 and (m[key] * 2) == pytest.approx(round(m[key] * 2))  # a count of 200 images
    assert 0 < m["zero_fraction"] < 1
    assert m["noise_acc_0.1"] >= m["noise_acc_0.3"] - 5  # more noise does not help (tolerance: 10 images)
    predictions = np.frombuffer(base64.b64decode(result["test_predictions"]), dtype=np.uint8)
    labels = np.frombuffer(base64.b64decode(result["test_labels"]), dtype=np.uint8)
    assert predictions.shape == labels.shape == (200,)
    assert np.array_equal(labels, data.test_y.numpy())
    assert 100 * (predictions == labels).mean() == pytest.approx(m["test_acc"])
    assert result["compiled"] is False and result["eval_seconds"] > 0


def test_the_probes_are_recomputed_from_the_runs_own_parameters(tiny_mnist):
    """probe_acc_100 and _1000 (logistic, fixed images, C=1) and probe_acc_100_cv (a ridge
    classifier on each of 5 resampled 100-image subsets, its penalty chosen by 5-fold
    cross-validation), recomputed here from the trained parameters with numpy's least squares for
    every fold and penalty: the same choices and the same test accuracy."""
    import numpy as np

    from l2reg import features
    from l2reg.model import ArticleCNN

    data = load_mnist(tiny_mnist)
    [result] = train_pack([spec(alpha=1e-3)], data, TrainSettings(epochs=2, batch_size=32, eval_batch_size=100),
                          keep_params=True)
    model = ArticleCNN().eval()
    model.load_state_dict(result["params"])
    with torch.no_grad():
        feats = model(data.train_x, return_features=True)[2].double().numpy()
        test_feats = model(data.test_x, return_features=True)[2].double().numpy()
    train_y, test_y = data.train_y.numpy(), data.test_y.numpy()

    def ridge(x, y, penalty):  # primal least squares on standardised features, centred one-hot targets
        mean, sd = x.mean(axis=0), x.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        z, targets = (x - mean) / sd, np.eye(10)[y]
        weight = np.linalg.solve(z.T @ z + penalty * np.eye(z.shape[1]), z.T @ (targets - targets.mean(axis=0)))
        return lambda other: ((other - mean) / sd) @ weight + targets.mean(axis=0)

    accuracies = []
    for subset in features.cv_subset_indices(len(train_y)).numpy():
        x, y = feats[subset], train_y[subset]
        held_correct = np.zeros(len(features.CV_RIDGES))
        for fold in range(features.CV_FOLDS):
            train, held = np.arange(100) % 5 != fold, np.arange(100) % 5 == fold
            for r, penalty in enumerate(features.CV_RIDGES):
                held_correct[r] += (ridge(x[train], y[train], penalty)(x[held]).argmax(axis=1) == y[held]).sum()
        chosen = max(p for p, c in zip(features.CV_RIDGES, held_correct) if c == held_correct.max())
        assert chosen == features.cross_validated_ridge(torch.from_numpy(x), torch.from_numpy(y))
        accuracies.append(100 * (ridge(x, y, chosen)(test_feats).argmax(axis=1) == test_y).mean())
    assert len(set(map(tuple, features.cv_subset_indices(len(train_y)).tolist()))) == features.CV_SUBSETS
    assert result["metrics"]["probe_acc_100_cv"] == pytest.approx(np.mean(accuracies), abs=1e-9)
    # the fixed logistic probes: refitted here with the same solver, the same test accuracy
    for size in features.PROBE_SIZES:
        index = features.probe_indices(len(train_y), size).numpy()
        probe = features.fit_probe(torch.from_numpy(feats[index]), torch.from_numpy(train_y[index]))
        z = (torch.from_numpy(test_feats) - probe["mean"]) / probe["sd"]
        accuracy = 100 * ((z @ probe["weight"] + probe["bias"]).argmax(dim=1).numpy() == test_y).mean()
        assert result["metrics"][f"probe_acc_{size}"] == pytest.approx(accuracy, abs=0.5 + 1e-9)  # one image of 200


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

    assert untimed(first["history"]) == untimed(again["history"])
    assert first["metrics"] == again["metrics"]
    assert first["test_predictions"] == again["test_predictions"]
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
    assert compiled["compiled"] is True and eager["compiled"] is False
    for a, b in zip(eager["history"], compiled["history"]):
        for key in ("train_loss", "train_penalty", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=2e-3), key
    assert eager["metrics"]["weight_sq_norm"] == pytest.approx(compiled["metrics"]["weight_sq_norm"], rel=1e-3)


def test_compiled_pack_matches_eager_pack(tiny_mnist, monkeypatch):
    data = load_mnist(tiny_mnist)  # 540 images, batch 64: 8 full steps per epoch
    specs = [spec(seed=0, alpha=1e-3), spec(seed=1, alpha=0.0), spec(seed=2, alpha=1e-2, target="weights")]
    settings = TrainSettings(epochs=2, batch_size=64, eval_batch_size=100, features=False)
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


def _negative_entropy(alpha, logits):
    """A confidence penalty (Pereyra et al. 2017): alpha * mean over the batch of sum p log p."""
    return alpha * (logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


@pytest.fixture
def confidence_term():
    term = penalties.register(penalties.Term("confidence-logits", "confidence", ("logits",), _negative_entropy))
    yield term
    penalties.unregister(term.name)


@pytest.fixture
def max_softmax_metric():
    metric = evaluate.register(evaluate.Metric("mean_max_softmax", lambda b: b.logits.softmax(dim=1).amax(dim=1).sum()))
    yield metric
    evaluate.unregister(metric.name)


def test_a_term_and_a_metric_registered_here_train_and_report(tiny_mnist, confidence_term, max_softmax_metric,
                                                              zero_schedule):
    """A penalty on the logits and a test-set metric, each one registration in this file: the term
    changes the training (its coefficient-0 version does not, to the bit) and the metric lands in
    every run's metrics and, appended, in the metric columns."""
    data = load_mnist(tiny_mnist)
    settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=100, features=False)
    base, confident, zero = train_pack([make_spec(0), make_spec(0, 0.5, target="confidence"),
                                        make_spec(0, 0.5, zero_schedule, target="confidence")], data, settings,
                                       keep_params=True)
    assert confident["metrics"]["penalty"] < 0  # the mean negative entropy, times alpha
    assert not torch.equal(confident["params"]["fc2.weight"], base["params"]["fc2.weight"])
    assert untimed(confident["history"]) != untimed(base["history"])
    # at coefficient 0 the term changes nothing, to the bit: in the pack, and alone (where the
    # baseline's step has no penalty code at all and the zero run's step computes the term)
    [base_alone] = train_pack([make_spec(0)], data, settings, keep_params=True)
    [zero_alone] = train_pack([make_spec(0, 0.5, zero_schedule, target="confidence")], data, settings,
                              keep_params=True)
    for name in base["params"]:
        assert torch.equal(zero["params"][name], base["params"][name]), name
        assert torch.equal(zero_alone["params"][name], base_alone["params"][name]), name
    assert zero["metrics"] == base["metrics"] and zero_alone["metrics"] == base_alone["metrics"]
    assert evaluate.metric_columns()[-1] == "mean_max_softmax"
    for result in (base, confident):  # recomputed here, from the run's own final parameters
        model = ArticleCNN().eval()
        model.load_state_dict(result["params"])
        with torch.no_grad():
            expected = model(data.test_x).softmax(dim=1).amax(dim=1).mean().item()
        assert result["metrics"]["mean_max_softmax"] == pytest.approx(expected, rel=1e-5)
    assert confident["metrics"]["mean_max_softmax"] < base["metrics"]["mean_max_softmax"]  # less confident


def test_a_run_computes_only_its_terms(tiny_mnist, monkeypatch):
    """Each evaluation of a term is counted: a run of another term, and the baseline, never
    evaluate it; a run of it evaluates it once per step and per validation batch, in a pack too."""
    calls = []

    def counted(alpha, logits, labels):
        calls.append(logits.shape[0])
        return alpha * logits.square().mean()

    term = penalties.register(penalties.Term("counted-logits", "counted", ("logits", "labels"), counted))
    try:
        data = load_mnist(tiny_mnist)  # 540 training images (9 steps of 64), 60 validation (1 batch of 100)
        settings = TrainSettings(epochs=1, batch_size=64, eval_batch_size=100, features=False)
        train_pack([spec(alpha=1e-3, target="weights"), spec(seed=1)], data, settings)
        assert calls == []
        counted_spec = make_spec(2, 1e-3, target="counted")
        assert counted_spec.terms == (term,) and pack_terms([spec(alpha=1e-3), counted_spec])[-1] == term
        train_pack([counted_spec], data, settings)
        assert calls == [64] * 8 + [28, 60]  # 8 full steps, the partial one, the validation batch
        calls.clear()
        train_pack([spec(seed=1), counted_spec, spec(alpha=1e-3, target="weights")], data, settings)
        assert calls == [64] * 8 + [28, 60]  # vmapped: one evaluation for the whole pack
    finally:
        penalties.unregister(term.name)
