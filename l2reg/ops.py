"""The model's 2x2 max-pool as one opaque operator, so that torch.compile keeps PyTorch's own kernels.

Why (docs/performance.md, "CPU speed, seventh session"): torch 2.14's inductor decomposes
`max_pool2d_with_indices_backward` into a scatter-add; on CPU, per training step of the article's
model, that rebuilds int64 indices from the pooling offsets, transposes channels_last to NCHW
rows for the scatter and runs an unfused `scatter_reduce_`, on top of the zero-fill of A1's
gradient (11 MB at batch 128) that any max-pool backward does. PyTorch's own kernel routes each
pooled gradient to its argmax in one pass. Wrapped as a custom operator (torch.library), inductor
calls it as it is instead of decomposing it: training steps 7-13 % faster on this project's CPU.
It runs on every device (the same aten kernels on CUDA; there inductor would otherwise generate
Triton code: the GPU speed effect is unmeasured).

Same numbers: the forward is `aten.max_pool2d_with_indices` (F.max_pool2d's kernel: same values,
same argmax on ties) and the backward is `aten.max_pool2d_with_indices_backward`: the 2x2 windows
do not overlap, so each input gets at most one pooled gradient, added to zero, and the gradients
equal F.max_pool2d's to the bit (tests/unit/test_ops.py; scripts/same_training.py compares a
whole short training with an earlier commit's). vmap (packs of runs) folds the run dimension into
the batch.

Limits: torch.func's grad/jacrev/jvp through the model and double backward are not supported
(torch.library custom operators with a Python autograd formula do not compose with them); the
project uses neither. The operators are registered when a model is built (ArticleCNN.__init__)
or on first eager use, not at import: a model compiled in a fresh process without being built
there (an unpickled one) would meet an unregistered operator.

Cache trap: inductor's on-disk AOTAutograd cache keys a compiled graph by the operator's name,
not by the Python formula registered for its gradient. After changing `gradient` or `save` below,
bump OPERATOR_VERSION, or compiled runs in a process that finds the old graph in the cache keep
the old backward.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

_KERNEL, _STRIDE, _PADDING, _DILATION = [2, 2], [2, 2], [0, 0], [1, 1]
OPERATOR_VERSION = 1  # part of the operators' names: bump it when their code changes (cache trap above)
FORWARD = f"l2sweep::max_pool_2x2_v{OPERATOR_VERSION}"
BACKWARD = f"l2sweep::max_pool_2x2_backward_v{OPERATOR_VERSION}"


def _fold(tensor: Tensor, dim: int | None, runs: int) -> Tensor:
    """(runs, N, ...) with the run dimension first, folded into the batch: (runs * N, ...). A tensor
    without a run dimension (dim None) is the same for every run: expanded."""
    tensor = tensor.movedim(dim, 0) if dim is not None else tensor.expand(runs, *tensor.shape)
    return tensor.flatten(0, 1)


@functools.cache
def _operators():
    """Register the forward and backward operators (once per process) and return both."""

    @torch.library.custom_op(FORWARD, mutates_args=())
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        values, indices = torch.ops.aten.max_pool2d_with_indices(x, _KERNEL, _STRIDE, _PADDING, _DILATION, False)
        return values, indices

    @forward.register_fake
    def _(x):  # aten's shape function: the same sizes and strides (memory format) as the real kernel
        return torch.ops.aten.max_pool2d_with_indices(x, _KERNEL, _STRIDE, _PADDING, _DILATION, False)

    @torch.library.custom_op(BACKWARD, mutates_args=())
    def backward(grad: Tensor, x: Tensor, indices: Tensor) -> Tensor:
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, _KERNEL, _STRIDE, _PADDING, _DILATION,
                                                               False, indices)

    @backward.register_fake
    def _(grad, x, indices):
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, _KERNEL, _STRIDE, _PADDING, _DILATION,
                                                               False, indices)

    def save(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[1])

    def gradient(ctx, grad_values, grad_indices):
        x, indices = ctx.saved_tensors
        return backward(grad_values, x, indices)

    forward.register_autograd(gradient, setup_context=save)

    @forward.register_vmap
    def _(info, in_dims, x):
        values, indices = forward(_fold(x, in_dims[0], info.batch_size))
        runs = info.batch_size
        return (values.unflatten(0, (runs, -1)), indices.unflatten(0, (runs, -1))), (0, 0)

    @backward.register_vmap
    def _(info, in_dims, grad, x, indices):
        runs = info.batch_size
        folded = [_fold(t, d, runs) for t, d in zip((grad, x, indices), in_dims)]
        return backward(*folded).unflatten(0, (runs, -1)), 0

    return forward, backward


def register() -> None:
    """Register the operators in this process (idempotent). ArticleCNN does it when built, so that
    a compiled model never meets an unregistered operator: dynamo must not trace a registration."""
    _operators()


def max_pool_2x2(x: Tensor) -> Tensor:
    """F.max_pool2d(x, 2) for (N, C, H, W) x: the same values and gradients, one opaque operator
    for torch.compile (module docstring)."""
    if not torch.compiler.is_compiling():  # eager: register on first use; compiled: done before tracing
        register()
    return getattr(torch.ops.l2sweep, FORWARD.split("::")[1])(x)[0]
