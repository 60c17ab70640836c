"""The penalty formulas, pinned with hand-computed numbers (DESIGN.md "Definitions")."""

import pytest
import torch

from l2reg.model import ArticleCNN
from l2reg.penalties import activation_penalty, norm_sum, reported_sq_norm, uses, weight_penalty


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


def test_targets_and_unknown_norm():
    assert uses("weights") == (True, False)
    assert uses("activations") == (False, True)
    assert uses("both") == (True, True)
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        norm_sum(torch.ones(2), "l3")


def test_terms_for_maps_settings_to_terms_and_refuses_what_is_not_wired():
    from l2reg.penalties import NotWired, Term, terms_for

    assert terms_for({"target": "both", "norm": "l2", "form": "loss", "scope": "conv"}) == (
        Term("weights", "conv", "l2", "loss"), Term("activations", "taps", "l2", "loss"))
    assert terms_for({"target": "weights", "norm": "l1", "scope": "all"}) == (
        Term("weights", "conv", "l1", "loss"), Term("weights", "dense", "l1", "loss"))
    assert terms_for({"target": "weights", "form": "decoupled", "scope": "dense"}) == (
        Term("weights", "dense", "l2", "decoupled"),)
    for setting, message in [({"target": "bias"}, "target=bias is not wired"),
                             ({"scope": "everything"}, "scope=everything is not wired"),
                             ({"target": "both", "form": "decoupled"}, "needs target=weights"),
                             ({"target": "weights", "form": "decoupled", "norm": "l1"}, "needs norm=l2"),
                             ({"depth": 3}, "setting axis 'depth' is declared but not wired")]:
        with pytest.raises(NotWired, match=message):
            terms_for(setting)


def test_loss_penalty_sums_the_terms_with_their_coefficients(model):
    from l2reg.penalties import TERMS, Term, loss_penalty

    params = dict(model.named_parameters())
    a1 = torch.full((2, 3, 2, 2), 3.0)  # sum of squares 216, of |a| 72
    coef = torch.zeros(len(TERMS), dtype=torch.float64)
    coef[TERMS.index(Term("weights", "conv", "l2", "loss"))] = 0.01  # 0.01 * 256.32
    coef[TERMS.index(Term("weights", "dense", "l1", "loss"))] = 1e-4  # fc1 only non-trivial: 3 * 1600 * 64
    coef[TERMS.index(Term("activations", "taps", "l1", "loss"))] = 0.5  # 0.5 * 72 / 2
    coef[TERMS.index(Term("weights", "conv", "l2", "decoupled"))] = 99.0  # not a loss term: ignored
    fc2 = params["fc2.weight"].abs().sum().item()
    expected = 2.5632 + 1e-4 * (3.0 * 1600 * 64 + fc2) + 18.0
    assert loss_penalty(params, [a1], coef).item() == pytest.approx(expected, rel=1e-6)
    assert loss_penalty(params, [a1], torch.zeros(len(TERMS))).item() == 0.0


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
