"""The penalty formulas, pinned with hand-computed numbers (DESIGN.md "Definitions")."""

import pytest
import torch

from l2reg import penalties
from l2reg.model import ArticleCNN
from l2reg.penalties import activation_penalty, norm_sum, reported_sq_norm, terms_for, weight_penalty


@pytest.fixture
def model():
    net = ArticleCNN()
    with torch.no_grad():
        net.conv1.weight.fill_(0.5)  # 32*1*3*3 = 288 values
        net.conv2.weight.fill_(-0.1)  # 64*32*3*3 = 18432 values
        for layer in (net.conv1, net.conv2):
            layer.bias.fill_(7.0)  # must not count
        net.fc1.weight.fill_(3.0)  # dense kernels must not count either
    return net


def test_weight_penalty_l2_is_alpha_times_sum_of_squares_of_conv_kernels(model):
    # 288 * 0.25 + 18432 * 0.01 = 72 + 184.32 = 256.32
    assert weight_penalty(model, 0.01).item() == pytest.approx(2.5632, rel=1e-6)


def test_weight_penalty_l1_uses_absolute_values(model):
    # 288 * 0.5 + 18432 * 0.1 = 144 + 1843.2 = 1987.2
    assert weight_penalty(model, 0.01, norm="l1").item() == pytest.approx(19.872, rel=1e-6)


def test_weight_penalty_accepts_kernels_and_zero_alpha(model):
    assert weight_penalty([torch.full((2, 2), 3.0)], 0.5).item() == pytest.approx(0.5 * 4 * 9)
    assert weight_penalty(model, 0.0).item() == 0.0


def test_weight_penalty_gradient_equals_sgd_weight_decay_of_two_alpha(model):
    alpha = 1e-3
    weight_penalty(model, alpha).backward()
    assert torch.allclose(model.conv1.weight.grad, 2 * alpha * model.conv1.weight)
    assert model.conv1.bias.grad is None and model.fc1.weight.grad is None


def test_activation_penalty_divides_by_batch_size():
    a1 = torch.full((2, 3, 2, 2), 3.0)  # sum of squares 2*12*9 = 216
    a2 = torch.full((2, 1, 1, 1), -2.0)  # 2*4 = 8
    assert activation_penalty([a1, a2], 0.1).item() == pytest.approx(0.1 * 224 / 2)
    # l1: (2*12*3 + 2*2) / 2 = 38
    assert activation_penalty([a1, a2], 0.1, norm="l1").item() == pytest.approx(3.8)


def test_activation_penalty_is_per_sample_mean_so_doubling_the_batch_changes_nothing():
    a = torch.rand(4, 32, 26, 26)
    assert activation_penalty([torch.cat([a, a])], 1e-3).item() == pytest.approx(
        activation_penalty([a], 1e-3).item(), rel=1e-5)


def names(setting):
    return [term.name for term in terms_for(setting)]


def test_targets_and_unknown_norm():
    assert penalties.targets() == ("weights", "activations", "both")
    assert {t.target for t in terms_for({"target": "both"})} == {"weights", "activations"}
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        norm_sum(torch.ones(2), "l3")


def test_terms_for_maps_settings_to_terms_and_refuses_what_is_not_wired():
    from l2reg.penalties import NotWired

    assert names({"target": "both", "norm": "l2", "form": "loss", "scope": "conv"}) == [
        "weights-conv-l2-loss", "activations-taps-l2-loss"]
    assert names({"target": "weights", "norm": "l1", "scope": "all"}) == ["weights-conv-l1-loss",
                                                                          "weights-dense-l1-loss"]
    assert names({"target": "weights", "form": "decoupled", "scope": "dense"}) == ["weights-dense-l2-decoupled"]
    assert names({"target": "activations", "scope": "all"}) == ["activations-taps-l2-loss"]  # scope: not read
    assert names({}) == names({"target": "both", "norm": "l2", "form": "loss", "scope": "conv"})  # axes off
    assert penalties.unread_axes({"target": "activations", "norm": "l1", "form": "loss", "scope": "dense"}) == (
        "scope",)
    assert penalties.unread_axes({"target": "weights", "norm": "l1", "form": "loss", "scope": "dense"}) == ()
    for setting, message in [({"target": "bias"}, "target=bias is not wired"),
                             ({"scope": "everything"}, "scope=everything is not wired"),
                             ({"target": "both", "form": "decoupled"}, "needs target=weights"),
                             ({"target": "weights", "form": "decoupled", "norm": "l1"}, "needs norm=l2"),
                             ({"depth": 3}, "setting axis 'depth' is declared but not wired")]:
        with pytest.raises(NotWired, match=message):
            terms_for(setting)


def test_loss_penalty_sums_the_given_terms_with_their_coefficients(model):
    from l2reg.penalties import loss_penalty, term

    params = dict(model.named_parameters())
    a1 = torch.full((2, 3, 2, 2), 3.0)  # sum of squares 216, of |a| 72
    logits, labels = torch.zeros(2, 10), torch.zeros(2, dtype=torch.long)
    terms = [term("weights-conv-l2-loss"), term("weights-dense-l1-loss"), term("activations-taps-l1-loss"),
             term("weights-conv-l2-decoupled")]
    # 0.01 * 256.32; fc1 only non-trivial: 3 * 1600 * 64; 0.5 * 72 / 2; a decoupled term is the optimizer's
    coef = torch.tensor([0.01, 1e-4, 0.5, 99.0], dtype=torch.float64)
    fc2 = params["fc2.weight"].abs().sum().item()
    expected = 2.5632 + 1e-4 * (3.0 * 1600 * 64 + fc2) + 18.0
    assert loss_penalty(terms, coef, params, [a1], logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert loss_penalty(terms, torch.zeros(4), params, [a1], logits, labels).item() == 0.0
    assert loss_penalty((), torch.zeros(0), params, [a1], logits, labels).item() == 0.0  # no term: exactly 0


def test_a_registered_term_on_the_logits_is_a_target_config_and_sweeps_know():
    from dataclasses import replace

    from l2reg import axes, sweep
    from l2reg.config import Config, ConfigError, validate

    def confidence(alpha, logits):  # a confidence penalty: alpha * the mean negative entropy
        return alpha * (logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()

    term = penalties.register(penalties.Term("confidence-logits", "confidence", ("logits",), confidence))
    try:
        assert penalties.targets()[-1] == "confidence" and "confidence" in axes.axis("target").choices()
        assert terms_for({"target": "confidence", "norm": "l1", "scope": "all"}) == (term,)  # reads neither
        cfg = replace(Config(), alpha=1e-2, target="confidence", norm="l1", seed=0)
        validate(cfg)
        assert sweep.run_id(cfg).startswith("confidence-l2-a0.01-constant-s0-")  # norm canonical: it is unread
        assert sweep.run_id(cfg) == sweep.run_id(replace(cfg, norm="l2"))
        with pytest.raises(ConfigError, match="form=decoupled is weight decay"):
            validate(replace(cfg, form="decoupled"))
        logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
        value = term.value(torch.tensor(1.0), {}, [], logits, torch.zeros(2, dtype=torch.long))
        p = torch.tensor([2.0, 0.0]).softmax(0)
        assert value.item() == pytest.approx(((p * p.log()).sum() + torch.tensor(0.5).log()).item() / 2)
        with pytest.raises(ValueError, match="registered already"):
            penalties.register(term)
    finally:
        penalties.unregister(term.name)
    assert "confidence" not in penalties.targets()
    with pytest.raises(ConfigError, match="target=confidence is unknown"):
        validate(replace(Config(), alpha=1e-2, target="confidence"))


def test_a_term_declares_what_it_reads():
    with pytest.raises(ValueError, match="unknown part 'gradients'"):
        penalties.Term("bad", "bad", ("gradients",), lambda alpha, g: g)
    with pytest.raises(ValueError, match="its group must be one of conv, dense"):
        penalties.Term("bad", "bad", ("params",), lambda alpha, kernels: kernels, group="biases")


def test_reported_sq_norm_is_the_float64_sum_of_squares_whatever_the_thread_count():
    # 3136 x 64 like the dense kernel: big enough that torch splits a float32 sum across threads
    kernels = [torch.randn(64, 3136, generator=torch.Generator().manual_seed(0)), torch.randn(10, 64)]
    exact = sum(float((k.double() ** 2).sum()) for k in kernels)
    threads = torch.get_num_threads()
    try:
        values = set()
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            values.add(reported_sq_norm(kernels))
    finally:
        torch.set_num_threads(threads)
    assert len(values) == 1
    assert values.pop() == pytest.approx(exact, rel=1e-12)
