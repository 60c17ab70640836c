"""The article's CNN: shapes, Keras-faithful init, activations, explicit dropout masks."""

import math

import pytest
import torch

from l2reg.model import ArticleCNN


def test_shapes_and_activations():
    model = ArticleCNN().eval()
    x = torch.rand(4, 1, 28, 28)
    logits, (a1, a2) = model(x, return_activations=True)
    assert logits.shape == (4, 10)
    assert a1.shape == (4, 32, 26, 26) and a2.shape == (4, 64, 11, 11)
    assert (a1 >= 0).all() and (a2 >= 0).all()  # post-ReLU
    assert torch.equal(model(x), logits)


def test_glorot_uniform_kernels_and_zero_biases():
    model = ArticleCNN(generator=torch.Generator().manual_seed(0))
    # conv2: fan_in = 32*9, fan_out = 64*9 -> limit sqrt(6/864)
    limit = math.sqrt(6 / (32 * 9 + 64 * 9))
    w = model.conv2.weight
    assert w.abs().max() <= limit and w.abs().max() > 0.95 * limit
    assert abs(w.std().item() - limit / math.sqrt(3)) < 0.01 * limit  # uniform's std
    assert all((layer.bias == 0).all() for layer in (model.conv1, model.conv2, model.fc1, model.fc2))
    fc1_limit = math.sqrt(6 / (1600 + 64))
    assert model.fc1.weight.abs().max() <= fc1_limit


def test_init_is_a_function_of_the_generator_seed():
    a = ArticleCNN(generator=torch.Generator().manual_seed(3))
    b = ArticleCNN(generator=torch.Generator().manual_seed(3))
    c = ArticleCNN(generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_dropout_mask_replaces_module_dropout():
    model = ArticleCNN().train()
    x = torch.rand(3, 1, 28, 28)
    ones = torch.ones(3, 64)
    assert torch.equal(model(x, dropout_mask=ones), model.eval()(x))
    zeros = torch.zeros(3, 64)
    assert torch.allclose(model(x, dropout_mask=zeros), model.fc2.bias.expand(3, 10))


def test_the_data_loss_and_the_tap_sizes():
    from l2reg.model import activation_units, cross_entropy

    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    each = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]  # -log softmax of the label
    assert cross_entropy(logits, labels).item() == pytest.approx(sum(each) / 2)
    assert cross_entropy(logits, labels, reduction="sum").item() == pytest.approx(sum(each))
    state = torch.random.get_rng_state()
    assert activation_units() == 32 * 26 * 26 + 64 * 11 * 11  # A1 and A2 of one 28x28 image
    assert torch.equal(torch.random.get_rng_state(), state)  # shapes only: no draw from the global generator
