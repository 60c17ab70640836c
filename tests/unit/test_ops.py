"""l2reg.ops.max_pool_2x2 is F.max_pool2d(x, 2) to the bit: values, strides, argmax on ties and
gradients, on both of its paths (this project's C kernels and PyTorch's, forced by hiding the C
kernels). Eager: float32 and float64, NCHW and channels_last, A1's and A2's shapes, NaN and -0.0,
gradients in either layout. vmapped (packs): float32, NCHW and channels_last runs, and the
backward's vmap rule directly. Compiled: float32 and float64, channels_last. The C kernels' build:
cached on disk, and a missing compiler falls back to PyTorch's kernels with a message."""

import os

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
# CI sets it: there the C kernels must build (a machine that runs torch.compile has the compiler)
REQUIRE_C_KERNELS = os.environ.get("L2SWEEP_REQUIRE_C_KERNELS") == "1"


def c_kernels_or_skip():
    if ops.native_kernels() is None:
        if REQUIRE_C_KERNELS:
            pytest.fail("L2SWEEP_REQUIRE_C_KERNELS=1 but the C kernels cannot be built here (see stderr)")
        pytest.skip("the C kernels cannot be built here: only PyTorch's kernels run")


@pytest.fixture(params=["C kernels", "PyTorch kernels"])
def kernels(request, monkeypatch):
    """Each test on both paths: the C kernels (where this machine can build them) and PyTorch's."""
    if request.param == "C kernels":
        c_kernels_or_skip()
    else:
        monkeypatch.setattr(ops, "native_kernels", lambda: None)
    return request.param


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (NaN payloads and the sign of zero included), channels_last-free."""
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_same_values_strides_and_gradients_as_f_max_pool2d(shape, dtype, channels_last, kernels):
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
    assert ours_grad.stride() == theirs_grad.stride()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES)
def test_nan_and_negative_zero_to_the_bit(shape, dtype, grad_layout, kernels):
    """A NaN wins its window (aten: `val > max || isnan(val)`), a -0.0 input is kept as it is, and a
    -0.0 gradient arrives as +0.0 (aten zero-fills and adds), on both paths and gradient layouts."""
    x = activations(shape, dtype, channels_last=True)
    x[0, 0, 1, 1] = float("nan")  # the last of its window: still the winner
    x[1, 0, 0, 0], x[1, 0, 1, 0] = float("nan"), float("nan")  # two NaNs: aten's rule lets the later win
    x[2, 0, 0, 0], x[2, 0, 0, 1] = float("nan"), 5.0  # a NaN first, a larger number after: the NaN stays
    x[0, 1, 0, 0], x[0, 1, 0, 1], x[0, 1, 1, 0], x[0, 1, 1, 1] = -0.0, 0.0, -0.0, 0.0  # ties of signed zeros
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype)
    grad[0, 1, 0, 0], grad[1, 0, 0, 0], grad[2, 2, 1, 1] = -0.0, float("nan"), -0.0
    if grad_layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    ours_leaf, theirs_leaf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, theirs = max_pool_2x2(ours_leaf), F.max_pool2d(theirs_leaf, 2)
    assert torch.equal(bits(ours.detach()), bits(theirs.detach())) and ours.stride() == theirs.stride()
    assert torch.isnan(ours[0, 0, 0, 0]) and torch.signbit(ours[0, 1, 0, 0])  # the window's first zero: -0.0
    assert torch.isnan(ours[2, 0, 0, 0])
    (ours_grad,) = torch.autograd.grad(ours, ours_leaf, grad)
    (theirs_grad,) = torch.autograd.grad(theirs, theirs_leaf, grad)
    assert torch.equal(bits(ours_grad), bits(theirs_grad)) and ours_grad.stride() == theirs_grad.stride()
    assert not torch.signbit(ours_grad[0, 1, 0, 0])  # 0 + (-0.0) = +0.0, as aten's zero-fill and add
    assert torch.isnan(ours_grad[1, 0, 1, 0]) and ours_grad[1, 0, 0, 0] == 0  # the later NaN's (its grad: NaN)


def test_a_single_row_or_column_is_refused_as_f_max_pool2d_refuses_it(kernels):
    for shape in ((2, 3, 1, 5), (2, 3, 5, 1)):
        x = torch.rand(shape).contiguous(memory_format=torch.channels_last)
        with pytest.raises(RuntimeError, match="too small"):
            F.max_pool2d(x, 2)
        with pytest.raises(RuntimeError, match="too small"):
            max_pool_2x2(x)


def test_a_cpu_runs_activations_get_window_positions_and_everything_else_atens_indices():
    """A1 and A2 as a single CPU run makes them (channels_last float32/float64) are pooled by the C
    kernels' rules (int8 window positions); NCHW, float16 and a tensor that is NCHW- and
    channels_last-contiguous at once get aten's int64 indices. Decided by the tensor alone."""
    a1 = activations(SHAPES[0], torch.float32, channels_last=True)
    assert ops._takes_positions(a1) and ops._takes_positions(activations(SHAPES[1], torch.float64, channels_last=True))
    assert not ops._takes_positions(activations(SHAPES[0], torch.float32, channels_last=False))
    assert not ops._takes_positions(a1.half())
    assert not ops._takes_positions(torch.zeros(2, 1, 4, 4))  # C == 1: both layouts at once
    forward, _ = ops._operators()
    values, positions = forward(a1)
    assert positions.dtype == torch.int8 and positions.stride() == values.stride()
    assert int(positions.min()) >= 0 and int(positions.max()) == 3
    assert forward(activations(SHAPES[0], torch.float32, channels_last=False))[1].dtype == torch.int64


def test_a_machine_without_a_c_compiler_runs_pytorchs_kernels_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    ops.native_kernels.cache_clear()
    try:
        assert ops.native_kernels() is None
        assert "PyTorch's kernels run instead" in capsys.readouterr().err
        x = activations(SHAPES[0], torch.float32, channels_last=True)
        _, winners = ops._operators()[0](x)
        assert winners.dtype == torch.int8  # the same output as with the C kernels: any cached graph fits
        weights = torch.randn(3, 32, 13, 13)
        assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
        assert torch.equal(grads_of(max_pool_2x2, x, weights), grads_of(lambda t: F.max_pool2d(t, 2), x, weights))
    finally:
        ops.native_kernels.cache_clear()


def test_a_cache_folder_others_can_write_to_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "l2sweep").mkdir()
    (tmp_path / "l2sweep").chmod(0o777)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    ops.native_kernels.cache_clear()
    try:
        assert ops.native_kernels() is None
        assert "writable by others" in capsys.readouterr().err
    finally:
        ops.native_kernels.cache_clear()


def test_the_c_kernels_are_built_once_into_the_cache_folder(tmp_path, monkeypatch):
    c_kernels_or_skip()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    ops.native_kernels.cache_clear()
    try:
        assert ops.native_kernels() is not None
        [built] = (tmp_path / "l2sweep").glob("pool_kernels_*.so")
        first = built.stat().st_mtime_ns
        ops.native_kernels.cache_clear()
        assert ops.native_kernels() is not None  # a second process: loads it, builds nothing
        assert [p.name for p in (tmp_path / "l2sweep").iterdir()] == [built.name]
        assert built.stat().st_mtime_ns == first
    finally:
        ops.native_kernels.cache_clear()


def channels_last_runs(runs: int, shape, dtype=torch.float32) -> torch.Tensor:
    """(runs, N, C, H, W) whose every [r] is channels_last, as a CPU pack's activations are."""
    stack = torch.stack([activations(shape, dtype, False) * (r + 1) for r in range(runs)])
    return stack.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_vmapped_over_runs_as_a_pack_uses_it(layout, kernels):
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
def test_the_backward_operators_vmap_rule_equals_a_loop_over_runs(in_dims, kernels):
    """The backward's own vmap rule (folding runs into the batch; a tensor without a run dimension
    shared by every run), called directly: autograd through a vmapped forward does not reach it."""
    register()
    x = channels_last_runs(3, SHAPES[1])
    forward, backward = ops._operators()
    values, positions = vmap(forward)(x)
    grad = torch.randn(values.shape)
    args = [grad, x, positions]
    batched = [t if d is not None else t[0] for t, d in zip(args, in_dims)]
    batched = [t.movedim(0, d) if d not in (None, 0) else t for t, d in zip(batched, in_dims)]
    ours = vmap(backward, in_dims=in_dims)(*batched)
    for r in range(3):
        one = [t[r] if d is not None else t[0] for t, d in zip(args, in_dims)]
        _, indices = torch.ops.aten.max_pool2d_with_indices(one[1], [2, 2], [2, 2])
        expected = torch.ops.aten.max_pool2d_with_indices_backward(one[0], one[1], [2, 2], [2, 2], [0, 0], [1, 1],
                                                                   False, indices)
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
def test_compiled_gradients_equal_eager_and_the_backward_stays_one_operator(dtype, kernels):
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
