"""The model's 2x2 max-pool as one opaque operator, so that torch.compile keeps the kernels chosen here.

Why (docs/performance.md "The max-pool as one operator" and "The max-pool's C kernels"): torch 2.14's inductor
decomposes `max_pool2d_with_indices_backward` into a scatter-add; on CPU, per training step of the
article's model, that rebuilds int64 indices from the pooling offsets, transposes channels_last to
NCHW rows for the scatter and runs an unfused `scatter_reduce_`, on top of the zero-fill of A1's
gradient (11 MB at batch 128). Wrapped as a custom operator (torch.library), inductor calls it as
it is instead of decomposing it (7-13 % faster steps than the scatter). Inside the operator, a
channels_last float32/float64 CPU tensor goes to this project's C kernels (`pool_kernels.c`,
built once per machine with the C compiler that torch.compile needs anyway, and loaded through
ctypes): one pass per direction, the backward writing each input's gradient once (no zero-fill,
no layout copies) and the window positions kept in one byte instead of aten's 8-byte indices
(6-12 % faster steps than PyTorch's kernels, measured in one process). Any other tensor (NCHW,
other dtypes, CUDA, a pack's vmapped runs folded NCHW) runs PyTorch's own max-pool kernels. On a
machine where the C kernels cannot be built (no C compiler: a line on stderr
says so), a CPU run's activations run PyTorch's kernels too, their indices turned into the same
window positions: which output the operator has depends on the tensor only, never on the machine,
so that a compiled graph (and inductor's on-disk cache of it) fits every machine.

Same numbers on every path, to the bit: values and argmax on ties are F.max_pool2d's (first maximum
in scan order; NaN wins), and since the 2x2 windows do not overlap each input gets at most one
pooled gradient, added to zero, so the gradients equal F.max_pool2d's (tests/unit/test_ops.py: both
paths, float32 and float64, NCHW and channels_last, ties, NaN and -0.0; vmapped; compiled;
scripts/same_training.py compares a whole short training with an earlier commit's).

Limits: torch.func's grad/jacrev/jvp through the model and double backward are not supported
(torch.library custom operators with a Python autograd formula do not compose with them); the
project uses neither. The operators are registered when a model is built (ArticleCNN.__init__)
or on first eager use, not at import: a model compiled in a fresh process without being built
there (an unpickled one) would meet an unregistered operator.

Cache traps: inductor's on-disk AOTAutograd cache keys a compiled graph by the operator's name, not
by the Python code behind it: after changing the operators' signatures or formulas, bump
OPERATOR_VERSION, or compiled runs in a process that finds the old graph in the cache keep the old
code. The built kernels are cached under inductor's cache folder (TORCHINDUCTOR_CACHE_DIR, default
/tmp/torchinductor_$USER) in `l2sweep/`, keyed by the C source, the compiler and its flags, so an
edit of pool_kernels.c builds anew.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor

_KERNEL, _STRIDE, _PADDING, _DILATION = [2, 2], [2, 2], [0, 0], [1, 1]
OPERATOR_VERSION = 2  # part of the operators' names: bump it when their code changes (cache trap above)
FORWARD = f"l2sweep::max_pool_2x2_v{OPERATOR_VERSION}"
BACKWARD = f"l2sweep::max_pool_2x2_backward_v{OPERATOR_VERSION}"
KERNEL_SOURCE = Path(__file__).with_name("pool_kernels.c")
# Portable code (no -march=native): a cached .so never meets a CPU it was not built for; the kernels
# are memory-bound, AVX-512 measured no faster. -fopenmp: the loops share torch's OpenMP threads.
COMPILE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-fno-strict-aliasing")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _private_folder(folder: Path) -> Path:
    """folder, made if missing (mode 0700); refused unless this user owns it and nobody else may
    write there: a shared-library path others can write to would run their code in this process."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if hasattr(os, "getuid") and (status.st_uid != os.getuid() or status.st_mode & 0o022):
        raise RuntimeError(f"{folder} belongs to another user or is writable by others")
    return folder


def _build(command: list[str], source: Path, target: Path) -> None:
    """Compile source into the shared library target, atomically (a parallel build never shows a
    half-written file: each builds its own temporary file, then renames)."""
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(handle)
    try:
        subprocess.run([*command, *COMPILE_FLAGS, "-o", partial, str(source)], check=True, capture_output=True,
                       text=True, timeout=120)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


@functools.cache
def native_kernels() -> ctypes.CDLL | None:
    """The C kernels of pool_kernels.c, built on first use (cached on disk), or None where they cannot
    be built or loaded (no C compiler, a failed build, a cache folder others could write to): PyTorch's
    kernels then run, with the same numbers, and a line on stderr says so once. $CC may hold
    arguments (`ccache gcc`)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if not compiler:
            raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
        command = shlex.split(compiler)
        version = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([KERNEL_SOURCE.read_text(), compiler, version, *COMPILE_FLAGS,
                                        platform.machine()]).encode()).hexdigest()[:20]
        # beside inductor's code (TORCHINDUCTOR_CACHE_DIR or its default; the module comes with torchvision)
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        library = _private_folder(Path(cache_dir()) / "l2sweep") / f"pool_kernels_{key}.so"
        if not library.is_file():
            _build(command, KERNEL_SOURCE, library)
        kernels = ctypes.CDLL(str(library))
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        for suffix in _SUFFIX.values():
            forward, backward = getattr(kernels, f"pool_fwd_{suffix}"), getattr(kernels, f"pool_bwd_{suffix}")
            forward.argtypes = [pointer, pointer, pointer, size, size, size, size]
            backward.argtypes = [pointer, pointer, pointer, pointer, size, size, size, size]
            forward.restype = backward.restype = None
    except (OSError, RuntimeError, AttributeError, ValueError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error  # a failed build: the compiler's own words
        print(f"l2sweep: the max-pool's C kernels are not available ({str(detail).strip()[:300]}); PyTorch's "
              f"kernels run instead (the same numbers, slower CPU training steps)", file=sys.stderr)
        return None
    return kernels


def _takes_positions(x: Tensor) -> bool:
    """Whether x is pooled by the C kernels' rules: a dense channels_last 4-D float32/float64 CPU
    tensor (a CPU run's A1 and A2). Decided from x's metadata alone, never from whether the kernels
    could be built: the operator's second output (int8 window positions here, aten's int64 indices
    otherwise) is part of every compiled graph, and inductor's on-disk caches must not hand a graph
    made on one kind of machine to another. One that is NCHW-contiguous as well (C == 1, ...) is
    left to aten, which lays its output out NCHW; one with a single row or column too (aten raises
    its "output size is too small" error for it)."""
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and x.dim() == 4 and x.shape[-2] >= 2
            and x.shape[-1] >= 2 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())


def _pool_forward(x: Tensor) -> tuple[Tensor, Tensor]:
    """(values, where each window's winner is): for a CPU run's activations its position in the
    window (0-3, int8), otherwise aten's flat index into the (H, W) plane (int64). Both shaped and
    strided as aten's output; the backward tells them apart by dtype."""
    if not _takes_positions(x):
        return torch.ops.aten.max_pool2d_with_indices(x, _KERNEL, _STRIDE, _PADDING, _DILATION, False)
    kernels = native_kernels()
    if kernels is None:  # no C compiler: aten's kernel, its indices turned into positions (slower, same numbers)
        values, indices = torch.ops.aten.max_pool2d_with_indices(x, _KERNEL, _STRIDE, _PADDING, _DILATION, False)
        width = x.shape[-1]
        return values, ((indices // width % 2) * 2 + indices % width % 2).to(torch.int8)
    n, c, h, w = x.shape
    values = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=torch.channels_last)
    positions = torch.empty(values.shape, dtype=torch.int8, memory_format=torch.channels_last)
    getattr(kernels, f"pool_fwd_{_SUFFIX[x.dtype]}")(x.data_ptr(), values.data_ptr(), positions.data_ptr(), n, c, h, w)
    return values, positions


def _pool_backward(grad: Tensor, x: Tensor, winners: Tensor) -> Tensor:
    """The gradient of x, shaped and strided as aten's max-pool backward gives it; `winners` is the
    forward's second output (int8 window positions or aten's int64 indices)."""
    # the C kernel writes channels_last: only for an x laid out as the forward's (a vmap rule may
    # hand over an x copied NCHW, whose gradient aten lays out NCHW, as the fake kernel says)
    kernels = native_kernels() if winners.dtype == torch.int8 and _takes_positions(x) else None
    if winners.dtype == torch.int8 and kernels is None:  # positions back into aten's indices
        rows = torch.arange(winners.shape[-2], device=winners.device).view(-1, 1)
        cols = torch.arange(winners.shape[-1], device=winners.device)
        position = winners.long()
        winners = (2 * rows + position // 2) * x.shape[-1] + 2 * cols + position % 2
    if kernels is None:
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, _KERNEL, _STRIDE, _PADDING, _DILATION,
                                                               False, winners)
    n, c, h, w = x.shape  # x's values are not read: the positions say where each gradient goes
    # named, not temporaries: a tensor made inside the call's arguments could be freed before the
    # kernel reads it (ctypes passes only the address)
    winners = winners.contiguous(memory_format=torch.channels_last)
    grad_x = torch.empty(x.shape, dtype=x.dtype, memory_format=torch.channels_last)
    strides = (ctypes.c_int64 * 4)(*grad.stride())  # any layout of grad: the kernel reads it strided
    getattr(kernels, f"pool_bwd_{_SUFFIX[x.dtype]}")(grad.data_ptr(), strides, winners.data_ptr(), grad_x.data_ptr(),
                                                     n, c, h, w)
    return grad_x


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
        return _pool_forward(x)

    @forward.register_fake
    def _(x):  # aten's shape function: the same sizes and strides (memory format) as the real kernels
        values, indices = torch.ops.aten.max_pool2d_with_indices(x, _KERNEL, _STRIDE, _PADDING, _DILATION, False)
        return values, (torch.empty_like(values, dtype=torch.int8) if _takes_positions(x) else indices)

    @torch.library.custom_op(BACKWARD, mutates_args=())
    def backward(grad: Tensor, x: Tensor, winners: Tensor) -> Tensor:
        return _pool_backward(grad, x, winners)

    @backward.register_fake
    def _(grad, x, winners):
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, _KERNEL, _STRIDE, _PADDING, _DILATION,
                                                               False, torch.empty_like(winners, dtype=torch.int64))

    def save(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[1])

    def gradient(ctx, grad_values, grad_winners):
        x, winners = ctx.saved_tensors
        return backward(grad_values, x, winners)

    forward.register_autograd(gradient, setup_context=save)

    @forward.register_vmap
    def _(info, in_dims, x):
        values, winners = forward(_fold(x, in_dims[0], info.batch_size))
        runs = info.batch_size
        return (values.unflatten(0, (runs, -1)), winners.unflatten(0, (runs, -1))), (0, 0)

    @backward.register_vmap
    def _(info, in_dims, grad, x, winners):
        runs = info.batch_size
        folded = [_fold(t, d, runs) for t, d in zip((grad, x, winners), in_dims)]
        return backward(*folded).unflatten(0, (runs, -1)), 0

    return forward, backward


def register() -> None:
    """Register the operators in this process (idempotent), so that it never happens while
    torch.compile traces. ArticleCNN does it when built. The C kernels are built or loaded when a
    CPU tensor first needs them (the fake kernels, all that tracing runs, do not)."""
    _operators()


def max_pool_2x2(x: Tensor) -> Tensor:
    """F.max_pool2d(x, 2) for (N, C, H, W) x: the same values and gradients, one opaque operator
    for torch.compile (module docstring)."""
    if not torch.compiler.is_compiling():  # eager: register on first use; compiled: done before tracing
        register()
    return getattr(torch.ops.l2sweep, FORWARD.split("::")[1])(x)[0]
