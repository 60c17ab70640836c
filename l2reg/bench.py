"""`l2sweep bench`: training throughput of l2sweep against a plain PyTorch DataLoader loop.

Measured in one process, on one device, on the same model and loss (cross-entropy + the L2
penalty on conv weights and activations, alpha=1e-4, target=both):
(a) the reference: torchvision MNIST with ToTensor, a DataLoader (batch 128, shuffle; on CUDA
    one worker and pinned memory, as pytorch/examples mnist), nn.Module dropout, torch.optim.Adam;
(b) l2sweep's training loop with pack size 1;
(c) l2sweep packs of several sizes, and with torch.compile: pack size 1 on a CPU (the default for
    full-length CPU runs), the largest pack on CUDA (opt-in there, train.compile=true).
Throughput counts training samples per second over timed steps only (warm-up and evaluation
excluded); runs/min is what that throughput means for full 5-epoch runs on 54 000 images.
Ratios are against (a) from the same process. Peak memory: CUDA max allocated per
measurement; on CPU the process' peak RSS growth.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from l2reg import penalties
from l2reg.config import ScheduleConfig
from l2reg.data import load_mnist
from l2reg.model import ArticleCNN
from l2reg.train import RunSpec, TrainSettings, configure_device, peak_memory_mib, reset_peak_memory, train_pack

FULL_RUN_SAMPLES = 5 * 54_000  # 5 epochs of the article's training split
ALPHA = 1e-4


def _memory_start(device: torch.device) -> float:
    reset_peak_memory(device)
    return 0.0 if device.type == "cuda" else peak_memory_mib(device)


def _memory_peak(device: torch.device, start: float) -> float:
    """CUDA: peak allocated since _memory_start; CPU: growth of the process' peak RSS."""
    return max(0.0, peak_memory_mib(device) - start)


def dataloader_reference(root: str, steps: int, device: torch.device, batch_size: int = 128,
                         warmup: int = 5) -> dict:
    """(a) The plain loop a PyTorch user writes first; returns samples/s over `steps` timed steps."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(root, train=True, transform=transforms.ToTensor())
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=1 if cuda else 0, pin_memory=cuda)
    torch.manual_seed(0)
    model = ArticleCNN().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    memory = _memory_start(device)
    started = None

    def batches():  # as many epochs as the steps need (small data sets end sooner)
        while True:
            yield from loader

    for step, (x, y) in enumerate(batches()):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        if step == warmup + steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits, activations = model(x, return_activations=True)
        loss = (F.cross_entropy(logits, y) + penalties.weight_penalty(model, ALPHA)
                + penalties.activation_penalty(activations, ALPHA))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"name": "plain DataLoader loop", "runs": 1, "samples_per_s": steps * batch_size / seconds,
            "peak_mib": _memory_peak(device, memory), "seconds": seconds}


def l2sweep_pack(root: str, steps: int, device: torch.device, pack_size: int, batch_size: int = 128,
                 compile_steps: bool = False) -> dict:
    """(b)/(c) l2sweep's one training loop on `pack_size` runs; samples/s from the 2nd epoch's steps
    (the first one warms up, and compiles when compile_steps)."""
    n_train = steps * batch_size
    data = load_mnist(root, val_fraction=0.1, train_limit=math.ceil(n_train / 0.9), test_limit=1000,
                      download=False, device=device)
    specs = [RunSpec(seed, ALPHA, "both", "l2", ScheduleConfig()) for seed in range(pack_size)]
    settings = TrainSettings(epochs=2, batch_size=batch_size, compile=compile_steps)
    memory = _memory_start(device)
    results = train_pack(specs, data, settings, device)
    seconds = results[0]["history"][1]["train_seconds"]  # epoch 2: compiled/warmed up
    trained = len(data.train_y) * pack_size
    name = f"l2sweep, pack size {pack_size}" + (", torch.compile" if compile_steps else "")
    return {"name": name, "runs": pack_size, "samples_per_s": trained / seconds,
            "peak_mib": _memory_peak(device, memory), "seconds": seconds}


def run_bench(root: str, device: torch.device, steps: int, pack_sizes: list[int], compiled: bool = True,
              progress: Callable[[str], None] = lambda message: None) -> dict:
    """All measurements in this process; returns the bench.json content."""
    configure_device(device, deterministic=False)
    progress("plain DataLoader loop")
    rows = [dataloader_reference(root, steps, device)]
    for size in pack_sizes:
        progress(f"l2sweep pack size {size}")
        rows.append(l2sweep_pack(root, steps, device, size))
    if compiled:
        size = 1 if device.type == "cpu" else max(pack_sizes)
        progress(f"l2sweep pack size {size} with torch.compile (compiles first, ~1 min)")
        rows.append(l2sweep_pack(root, steps, device, size, compile_steps=True))
    reference = rows[0]["samples_per_s"]
    for row in rows:
        row["runs_per_min"] = row["samples_per_s"] / FULL_RUN_SAMPLES * 60
        row["speedup"] = row["samples_per_s"] / reference
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "torch": torch.__version__, "steps": steps, "batch_size": 128, "alpha": ALPHA, "target": "both",
        "rows": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_bench(result: dict, path: Path) -> None:
    from l2reg.files import write_text_atomic

    write_text_atomic(Path(path), json.dumps(result, indent=1) + "\n")
