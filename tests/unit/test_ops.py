"""l2reg.ops.max_pool_2x2 is F.max_pool2d(x, 2) to the bit: values, strides, argmax on ties and
gradients, eager, vmapped (packs) and compiled, in float32 and float64, NCHW and channels_last."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from l2reg.ops import max_pool_2x2, register


def activations(shape, dtype, channels_last):
    """Post-ReLU-like input (many exact zeros) with a positive tie in one window."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype).relu()
    x[0, 0, :2, :2] = 0.75  # four equal maxima: the gradient must go to the first, as F.max_pool2d's
    x[1, 1, 2:4, 2:4] = 0.0  # an all-zero window
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def grads_of(fn, x, weights):
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((fn(leaf) * weights).sum(), leaf)
    return grad


# A1 (26x26: pooled exactly) and A2 (11x11: the last row and column dropped, as Keras' 'valid')
SHAPES = [(3, 32, 26, 26), (3, 64, 11, 11)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_same_values_strides_and_gradients_as_f_max_pool2d(shape, dtype, channels_last):
    x = activations(shape, dtype, channels_last)
    weights = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype)
    ours, theirs = max_pool_2x2(x), F.max_pool2d(x, 2)
    assert ours.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    assert torch.equal(ours, theirs) and ours.stride() == theirs.stride() and ours.dtype == dtype
    ours_grad, theirs_grad = grads_of(max_pool_2x2, x, weights), grads_of(lambda t: F.max_pool2d(t, 2), x, weights)
    assert torch.equal(ours_grad, theirs_grad)
    if shape == SHAPES[0]:  # the tie: the whole gradient on the window's first element, none on the others
        assert ours_grad[0, 0, 0, 0] == weights[0, 0, 0, 0] and not ours_grad[0, 0, :2, :2].flatten()[1:].any()
    assert (ours_grad != 0).sum() <= weights.numel()  # one input per window gets a gradient, at most


def test_vmapped_over_runs_as_a_pack_uses_it():
    """A pack vmaps the model over runs (dim 0) and takes autograd gradients of the stacked inputs."""
    register()
    xs = torch.stack([activations(SHAPES[0], torch.float32, True), activations(SHAPES[0], torch.float32, False) * 2])
    weights = torch.randn(2, 3, 32, 13, 13)
    assert torch.equal(vmap(max_pool_2x2)(xs), vmap(lambda t: F.max_pool2d(t, 2))(xs))
    ours = grads_of(lambda t: vmap(max_pool_2x2)(t), xs, weights)
    theirs = grads_of(lambda t: vmap(lambda u: F.max_pool2d(u, 2))(t), xs, weights)
    assert torch.equal(ours, theirs)
    # an input shared by every run (not batched) against batched gradients
    shared = activations(SHAPES[1], torch.float32, False).requires_grad_(True)
    (grad,) = torch.autograd.grad(vmap(lambda w: (max_pool_2x2(shared) * w).sum())(torch.ones(2, 3, 64, 5, 5)).sum(),
                                  shared)
    assert torch.equal(grad, 2 * grads_of(lambda t: F.max_pool2d(t, 2), shared.detach(), torch.ones(3, 64, 5, 5)))


def aot_graph_calls(fn, x, weights) -> list[str]:
    """The ops of the forward and backward graphs that torch.compile hands to inductor (after
    inductor's own decompositions), from one forward and backward of fn."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=keep, bw_compiler=keep, decompositions=select_decomp_table())
    grads_of(torch.compile(fn, dynamic=False, backend=backend), x, weights)
    return [str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]


def test_compiled_gradients_equal_eager_and_the_backward_stays_one_operator():
    """Under torch.compile the backward is PyTorch's max-pool kernel (not inductor's scatter
    decomposition, which F.max_pool2d gets) and the gradients are F.max_pool2d's to the bit."""
    register()
    x = activations(SHAPES[0], torch.float32, True)
    weights = torch.randn(3, 32, 13, 13)
    compiled = torch.compile(lambda t: max_pool_2x2(t.relu()), dynamic=False)
    assert torch.equal(grads_of(compiled, x, weights), grads_of(lambda t: F.max_pool2d(t.relu(), 2), x, weights))
    ours = aot_graph_calls(lambda t: max_pool_2x2(t.relu()), x, weights)
    theirs = aot_graph_calls(lambda t: F.max_pool2d(t.relu(), 2), x, weights)
    assert "l2sweep.max_pool_2x2_backward.default" in ours and not any("scatter" in op for op in ours)
    assert any("scatter" in op for op in theirs)  # what the operator avoids (torch 2.14)
