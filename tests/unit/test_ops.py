"""l2reg.ops.max_pool_2x2 is F.max_pool2d(x, 2) to the bit: values, strides, argmax on ties and
gradients. Eager: float32 and float64, NCHW and channels_last, A1's and A2's shapes. vmapped (packs):
float32, NCHW and channels_last runs, and the backward's vmap rule directly. Compiled: float32 and
float64, channels_last."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from l2reg import ops
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


def channels_last_runs(runs: int, shape, dtype=torch.float32) -> torch.Tensor:
    """(runs, N, C, H, W) whose every [r] is channels_last, as a CPU pack's activations are."""
    stack = torch.stack([activations(shape, dtype, False) * (r + 1) for r in range(runs)])
    return stack.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_vmapped_over_runs_as_a_pack_uses_it(layout):
    """A pack vmaps the model over runs (dim 0) and takes autograd gradients of the stacked inputs."""
    register()
    xs = channels_last_runs(2, SHAPES[0]) if layout == "channels_last" else torch.stack(
        [activations(SHAPES[0], torch.float32, False), activations(SHAPES[0], torch.float32, False) * 2])
    assert (xs[0].stride()[1] == 1) == (layout == "channels_last")
    weights = torch.randn(2, 3, 32, 13, 13)
    assert torch.equal(vmap(max_pool_2x2)(xs), vmap(lambda t: F.max_pool2d(t, 2))(xs))
    ours = grads_of(lambda t: vmap(max_pool_2x2)(t), xs, weights)
    theirs = grads_of(lambda t: vmap(lambda u: F.max_pool2d(u, 2))(t), xs, weights)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("in_dims", [(0, 0, 0), (0, None, None), (None, 0, 0), (1, 1, 1)])
def test_the_backward_operators_vmap_rule_equals_a_loop_over_runs(in_dims):
    """The backward's own vmap rule (folding runs into the batch; a tensor without a run dimension
    shared by every run), called directly: autograd through a vmapped forward does not reach it."""
    register()
    x = channels_last_runs(3, SHAPES[1])
    values, indices = vmap(lambda t: torch.ops.aten.max_pool2d_with_indices(t, [2, 2], [2, 2]))(x)
    grad = torch.randn(values.shape)
    backward = getattr(torch.ops.l2sweep, ops.BACKWARD.split("::")[1])
    args = [grad, x, indices]
    batched = [t if d is not None else t[0] for t, d in zip(args, in_dims)]
    batched = [t.movedim(0, d) if d not in (None, 0) else t for t, d in zip(batched, in_dims)]
    ours = vmap(backward, in_dims=in_dims)(*batched)
    for r in range(3):
        one = [t[r] if d is not None else t[0] for t, d in zip(args, in_dims)]
        expected = torch.ops.aten.max_pool2d_with_indices_backward(one[0], one[1], [2, 2], [2, 2], [0, 0], [1, 1],
                                                                   False, one[2])
        assert torch.equal(ours[r], expected)


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


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")  # the caches off, on purpose
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_gradients_equal_eager_and_the_backward_stays_one_operator(dtype):
    """Under torch.compile (one graph, fullgraph) the backward is PyTorch's max-pool kernel (not
    inductor's scatter decomposition, which F.max_pool2d gets) and the gradients are F.max_pool2d's
    to the bit. Caches off: a graph compiled by an earlier version of the operator must not answer."""
    register()
    x = activations(SHAPES[0], dtype, True)
    weights = torch.randn(3, 32, 13, 13, dtype=dtype)
    with torch._inductor.config.patch(force_disable_caches=True):
        torch._dynamo.reset()
        compiled = torch.compile(lambda t: max_pool_2x2(t.relu()), dynamic=False, fullgraph=True)
        assert torch.equal(grads_of(compiled, x, weights),
                           grads_of(lambda t: F.max_pool2d(t.relu(), 2), x, weights))
        ours = aot_graph_calls(lambda t: max_pool_2x2(t.relu()), x, weights)
        theirs = aot_graph_calls(lambda t: F.max_pool2d(t.relu(), 2), x, weights)
    assert ops.BACKWARD.replace("::", ".") + ".default" in ours and not any("scatter" in op for op in ours)
    assert any("scatter" in op for op in theirs)  # what the operator avoids (torch 2.14)
