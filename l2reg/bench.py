"""`l2sweep bench`: what l2sweep costs against a plain PyTorch DataLoader loop, in one process.

Everything is read from the composed config (model, loss and penalty setting, lr, eps, batch
size, epochs, dropout): nothing is restated here. Two kinds of rows, each against the plain loop
of the same process, so the shared machine's noise cancels as far as it can:
- step rows: training samples/s over `steps` timed steps (warm-up, compilation and evaluation
  excluded) of (a) the reference: torchvision MNIST with ToTensor, a DataLoader (batch from the
  config, shuffle; on CUDA one worker and pinned memory, as pytorch/examples mnist), nn.Module
  dropout, torch.optim.Adam, the same loss + penalty; (b) l2sweep's one training loop with pack
  size 1 and larger packs, eager; (c) with torch.compile: pack size 1 on a CPU, the largest pack
  on CUDA. runs/min is what that throughput means for full runs of the config's epochs.
- whole-run rows (--whole-run): what a user waits for. One complete run of the config (all its
  epochs on the full training split, per-epoch validation, ReduceLROnPlateau, the test set) as
  the plain loop does it, and as l2sweep does it (with its evaluations, feature metrics and
  per-image predictions, compiled as a sweep would decide): wall seconds, and for l2sweep the
  share of the evaluations and of the feature metrics in the run.
- planning row: what `l2sweep run --dry-run` costs before the table, for a sweep of
  PLANNING_RUNS runs (`alpha=1e-3 'seed=range(N/2)'`, baselines included): runs planned per second
  and per run, against the time of one Hydra compose (one point composed alone).
Peak memory: CUDA max allocated per measurement; on CPU the process' peak RSS growth.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from l2reg import penalties, sweep
from l2reg.config import Config
from l2reg.data import load_mnist
from l2reg.device import configure_device, peak_memory_mib, reset_peak_memory
from l2reg.model import ArticleCNN, cross_entropy
from l2reg.train import pack_terms, train_pack


def _memory_start(device: torch.device) -> float:
    reset_peak_memory(device)
    return 0.0 if device.type == "cuda" else peak_memory_mib(device)


def _memory_peak(device: torch.device, start: float) -> float:
    """CUDA: peak allocated since _memory_start; CPU: growth of the process' peak RSS."""
    return max(0.0, peak_memory_mib(device) - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _penalty(cfg: Config, device: torch.device) -> tuple[tuple[penalties.Term, ...], torch.Tensor]:
    """The config's penalty terms as its run computes them and their coefficients (constant
    alpha: the reference has no schedule; a decoupled term is the optimizer's, left out here)."""
    spec = sweep.run_spec(cfg)
    terms = pack_terms([spec])
    return terms, torch.full((len(terms),), spec.alpha, device=device)


def _plain_loader(cfg: Config, device: torch.device, train: bool):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    dataset = datasets.MNIST(cfg.data.root, train=True, transform=transforms.ToTensor())
    n_val = int(round(len(dataset) * cfg.data.val_fraction))
    cuda = device.type == "cuda"
    split = Subset(dataset, range(len(dataset) - n_val) if train else range(len(dataset) - n_val, len(dataset)))
    return DataLoader(split, batch_size=cfg.train.batch_size if train else cfg.train.eval_batch_size, shuffle=train,
                      num_workers=1 if cuda else 0, pin_memory=cuda)


def _plain_step(model, optimizer, x, y, penalty):
    terms, coef = penalty
    logits, taps = model(x, return_activations=True)
    params = dict(model.named_parameters())
    loss = cross_entropy(logits, y) + penalties.loss_penalty(terms, coef, params, taps, logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def dataloader_reference(cfg: Config, steps: int, device: torch.device, warmup: int = 5) -> dict:
    """(a) The plain loop a PyTorch user writes first; samples/s over `steps` timed steps."""
    loader = _plain_loader(cfg, device, train=True)
    torch.manual_seed(0)
    model = ArticleCNN(dropout=cfg.train.dropout).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, eps=cfg.train.adam_eps)
    penalty = _penalty(cfg, device)
    memory = _memory_start(device)
    started = None

    def batches():  # as many epochs as the steps need (small data sets end sooner)
        while True:
            yield from loader

    for step, (x, y) in enumerate(batches()):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        if step == warmup + steps:
            break
        _plain_step(model, optimizer, x.to(device, non_blocking=True), y.to(device, non_blocking=True), penalty)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"name": "plain DataLoader loop", "runs": 1, "samples_per_s": steps * cfg.train.batch_size / seconds,
            "peak_mib": _memory_peak(device, memory), "seconds": seconds}


def plain_whole_run(cfg: Config, device: torch.device) -> dict:
    """The plain loop's whole run: every epoch of the config, validation loss per epoch for
    ReduceLROnPlateau, then test accuracy (its DataLoaders made inside, as a script would)."""
    from torchvision import datasets, transforms

    started = time.perf_counter()
    train_loader, val_loader = _plain_loader(cfg, device, train=True), _plain_loader(cfg, device, train=False)
    test = datasets.MNIST(cfg.data.root, train=False, transform=transforms.ToTensor())
    test_loader = torch.utils.data.DataLoader(test, batch_size=cfg.train.eval_batch_size)
    torch.manual_seed(cfg.seed or 0)
    model = ArticleCNN(dropout=cfg.train.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, eps=cfg.train.adam_eps)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.train.plateau_factor,
                                                         patience=cfg.train.plateau_patience)
    penalty = _penalty(cfg, device)

    def evaluate(loader):
        model.eval()
        loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss += cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
        return loss / n, 100.0 * correct / n

    for _ in range(cfg.train.epochs):
        model.train()
        for x, y in train_loader:
            _plain_step(model, optimizer, x.to(device), y.to(device), penalty)
        plateau.step(evaluate(val_loader)[0])
    _, test_acc = evaluate(test_loader)
    _sync(device)
    return {"name": "plain DataLoader loop, whole run", "runs": 1, "seconds": time.perf_counter() - started,
            "test_acc": test_acc}


def l2sweep_pack(cfg: Config, steps: int, device: torch.device, pack_size: int, compile_steps: bool = False) -> dict:
    """(b)/(c) l2sweep's one training loop on `pack_size` runs of the config's setting (seeds
    0..pack_size-1); samples/s from the 2nd epoch's steps (the first warms up, and compiles)."""
    n_train = steps * cfg.train.batch_size
    data = load_mnist(cfg.data.root, val_fraction=cfg.data.val_fraction, train_limit=math.ceil(n_train / 0.9),
                      test_limit=1000, download=False, device=device)
    specs = [sweep.run_spec(replace(cfg, seed=seed)) for seed in range(pack_size)]
    settings = replace(sweep.train_settings(cfg, device.type, len(data.train_y)), epochs=2, train_size=None,
                       compile=compile_steps, features=False)
    memory = _memory_start(device)
    results = train_pack(specs, data, settings, device)
    seconds = results[0]["history"][1]["train_seconds"]  # epoch 2: compiled/warmed up
    name = f"l2sweep, pack size {pack_size}" + (", torch.compile" if compile_steps else "")
    return {"name": name, "runs": pack_size, "samples_per_s": len(data.train_y) * pack_size / seconds,
            "peak_mib": _memory_peak(device, memory), "seconds": seconds}


def l2sweep_whole_run(cfg: Config, device: torch.device) -> dict:
    """One complete run as a sweep trains it (data loading, compile decision, evaluations,
    feature metrics, predictions), timed from data loading to the last metric."""
    started = time.perf_counter()
    data = sweep.load_data(cfg, device)
    settings = sweep.train_settings(cfg, device.type, len(data.train_y))
    [result] = train_pack([sweep.run_spec(cfg)], data, settings, device)
    seconds = time.perf_counter() - started
    return {"name": "l2sweep, whole run" + (" (torch.compile)" if settings.compile else ""), "runs": 1,
            "seconds": seconds, "test_acc": result["metrics"]["test_acc"], "train_seconds": result["train_seconds"],
            "eval_seconds": result["eval_seconds"], "features_seconds": result["features_seconds"],
            "features_share": result["features_seconds"] / seconds, "compiled": settings.compile}


PLANNING_RUNS = 100_000  # the planning row's sweep: alpha=1e-3 'seed=range(PLANNING_RUNS // 2)', baselines included


def planning(runs: int = PLANNING_RUNS) -> dict:
    """The planning row: `runs` runs planned as `l2sweep run --dry-run` plans them (compose, expand,
    validate, run ids, input checks; not the table it prints), and one point composed alone (warm)."""
    from l2reg.compose import expand_and_compose
    from l2reg.runner import plan_sweep

    overrides = ["alpha=1e-3", f"seed=range({max(1, runs // 2)})"]
    expand_and_compose(["alpha=1e-3", "seed=0"])  # Hydra's first use in a process costs more: warm up
    started = time.perf_counter()
    expand_and_compose(["alpha=1e-3", "seed=0"])
    compose_seconds = time.perf_counter() - started
    started = time.perf_counter()
    planned = len(plan_sweep(overrides).planned)
    seconds = time.perf_counter() - started
    return {"name": "planning, " + " ".join(overrides), "runs": planned, "seconds": seconds,
            "runs_per_s": planned / seconds, "us_per_run": seconds / planned * 1e6,
            "compose_seconds": compose_seconds}


DEFAULT_OVERRIDES = ("alpha=1e-4", "target=both")  # the setting timed unless the overrides name another
DEFAULT_SEED = 1


def bench_config(overrides: list[str], pack_sizes: str = "") -> tuple[Config, torch.device, list[int]]:
    """The one config the bench times (DEFAULT_OVERRIDES where the overrides do not set those keys,
    seed DEFAULT_SEED unless given), its device, and the pack sizes (`pack_sizes`, a comma list;
    default 1,2 on a CPU and 1..256 on CUDA). Checks the data files are there. Raises ConfigError
    (a sweep, a bad size, a bad key) or DataError, each with a one-line message."""
    from l2reg.compose import expand_and_compose
    from l2reg.config import ConfigError, validate
    from l2reg.data import check_files
    from l2reg.device import resolve_device

    given = {item.split("=", 1)[0].lstrip("+~") for item in overrides}
    defaults = [item for item in DEFAULT_OVERRIDES if item.split("=")[0] not in given]
    points = expand_and_compose(defaults + list(overrides))
    if len(points) != 1:
        raise ConfigError(f"bench takes plain overrides, not sweeps ({len(points)} points)")
    cfg = points[0][1]
    cfg = replace(cfg, seed=DEFAULT_SEED if cfg.seed is None else cfg.seed)
    validate(cfg)
    device = resolve_device(cfg.train.device)
    try:
        sizes = [int(v) for v in pack_sizes.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--pack-sizes={pack_sizes}: give comma-separated integers, e.g. 1,2") from None
    sizes = sizes or ([1, 8, 32, 64, 128, 256] if device.type == "cuda" else [1, 2])
    if any(size < 1 for size in sizes):
        raise ConfigError(f"--pack-sizes={pack_sizes}: sizes must be >= 1")
    check_files(cfg.data.root, download=False)
    return cfg, device, sizes


def run_bench(cfg: Config, device: torch.device, steps: int, pack_sizes: list[int], compiled: bool = True,
              whole_run: bool = False, progress: Callable[[str], None] = lambda message: None,
              planning_runs: int = PLANNING_RUNS) -> dict:
    """All measurements in this process; returns the bench.json content (`planning_runs=0`: no
    planning row)."""
    configure_device(device, deterministic=False)
    planned = []
    if planning_runs:
        progress(f"planning {planning_runs:,} runs")
        planned.append(planning(planning_runs))
    progress("plain DataLoader loop")
    rows = [dataloader_reference(cfg, steps, device)]
    for size in pack_sizes:
        progress(f"l2sweep pack size {size}")
        rows.append(l2sweep_pack(cfg, steps, device, size))
    if compiled:
        size = 1 if device.type == "cpu" else max(pack_sizes)
        progress(f"l2sweep pack size {size} with torch.compile (compiles first, up to a minute)")
        rows.append(l2sweep_pack(cfg, steps, device, size, compile_steps=True))
    reference = rows[0]["samples_per_s"]
    samples_per_run = cfg.train.epochs * 54_000
    for row in rows:
        row["runs_per_min"] = row["samples_per_s"] / samples_per_run * 60
        row["speedup"] = row["samples_per_s"] / reference
    whole = []
    if whole_run:
        progress(f"plain DataLoader loop, a whole {cfg.train.epochs}-epoch run")
        whole.append(plain_whole_run(cfg, device))
        progress(f"l2sweep, a whole {cfg.train.epochs}-epoch run")
        whole.append(l2sweep_whole_run(cfg, device))
        for row in whole:
            row["speedup"] = whole[0]["seconds"] / row["seconds"]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.machine()}, {platform.processor() or 'unknown'}, {torch.get_num_threads()} threads)"
    return {
        "device": name, "torch": torch.__version__, "steps": steps, "batch_size": cfg.train.batch_size,
        "epochs": cfg.train.epochs, "setting": sweep.setting_columns(cfg), "rows": rows, "whole_run": whole,
        "planning": planned,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_bench(result: dict, path: Path) -> None:
    from l2reg.files import write_text_atomic

    write_text_atomic(Path(path), json.dumps(result, indent=1) + "\n")
