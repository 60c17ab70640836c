"""The device a run trains on: which one, how it is set up (threads, TF32, cuDNN, determinism),
and its memory peaks. One place for what CPU and GPU runs do differently outside the training
step itself."""

from __future__ import annotations

import torch

from l2reg.cpus import available_cores


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu. Raises ValueError for cuda without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available here: use train.device=cpu or auto")
    return torch.device(name)


def set_deterministic() -> None:
    """Deterministic kernels on GPU (slower). CPU training here is deterministic already."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA; a CPU process' peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the most memory PyTorch held allocated on the device since reset_peak_memory (data
    included). CPU: the process' peak resident set size so far (Linux ru_maxrss is in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure_device(device: torch.device, deterministic: bool) -> None:
    """CPU: one intra-op thread per available core (a sweep pinned with `taskset -c 1` uses one).
    CUDA: TF32 matmuls/convolutions allowed (the model is far from needing fp32 mantissas) and
    cuDNN's autotuner on (shapes are static apart from each epoch's last batch, and vmap's grouped
    convolutions are where algorithms differ most), unless determinism is asked for."""
    cores = len(available_cores())
    if device.type == "cpu" and torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        set_deterministic()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
