"""THE training loop: one for CPU and GPU, for a single run and for a pack of runs.

A pack is a list of runs that share shapes (model, batch size, epochs, data). Their parameters
are stacked along a leading run dimension and trained as one computation with
torch.func.functional_call + vmap; a pack of one takes the same code without vmap (on a CPU the
grouped convolutions vmap produces are slower than plain ones). Each run keeps its own:
- seed: the init comes from a generator seeded from the run's seed; data order and dropout masks
  from counter-based random numbers keyed by it (l2reg.rng: one set of kernels for the whole pack
  per step, the same on CPU and GPU), so a run's numbers never depend on which runs share its pack;
- alpha, target, norm, schedule: folded into a per-step coefficient table (steps, runs, 4) =
  alpha(t) for [weights-l2, weights-l1, activations-l2, activations-l1], computed once up front
  (no host work per step);
- optimizer state and learning rate: Adam is written out over the stacked tensors with a per-run
  lr vector, because ReduceLROnPlateau (on each run's validation objective) changes lr per run.
  The Adam form is Keras' (eps added to sqrt(v) before bias correction, eps=1e-7).
The penalties come from l2reg.penalties and the coefficients from l2reg.schedules: no formula is
written here. The host synchronises once per epoch (metrics, plateau, divergence), never per step.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from l2reg import penalties, rng, schedules
from l2reg.data import MNISTTensors
from l2reg.model import DROPOUT_P, ArticleCNN

ADAM_BETAS = (0.9, 0.999)
KERAS_PLATEAU_MIN_DELTA = 1e-4  # absolute, as Keras' ReduceLROnPlateau
# Random streams per run, so no two runs or uses share one: the init generator is seeded with
# seed * STREAMS + INIT_STREAM; order and dropout use l2reg.rng keys of (seed, stream).
STREAMS = 4
INIT_STREAM, ORDER_STREAM, DROPOUT_STREAM = 0, 1, 2

ProgressFn = Callable[[int, int, int], None]  # (epoch index, step in epoch, steps per epoch)


@dataclass(frozen=True)
class RunSpec:
    """What distinguishes one run inside a pack (plain values)."""

    seed: int
    alpha: float
    target: str
    norm: str
    schedule: Any  # an object with the schedule's fields, e.g. l2reg.config.ScheduleConfig


@dataclass(frozen=True)
class TrainSettings:
    """What every run of a pack shares."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    adam_eps: float = 1e-7
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    eval_batch_size: int = 250
    deterministic: bool = False  # ask cuDNN/cuBLAS for deterministic kernels (GPU); CPU always is
    dropout: float = DROPOUT_P  # the article's 0.5; 0 turns dropout off (equivalence tests)
    compile: bool = False  # torch.compile the training step (see _compiled_objective)


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


def coefficient_table(specs: Sequence[RunSpec], epochs: int, steps_per_epoch: int) -> torch.Tensor:
    """(epochs * steps_per_epoch, runs, 4) float32: alpha(t) per step for each penalty term.

    t is the fractional epoch at the start of the step: epoch + step / steps_per_epoch.
    """
    table = torch.zeros(epochs * steps_per_epoch, len(specs), 4, dtype=torch.float64)
    times = [e + i / steps_per_epoch for e in range(epochs) for i in range(steps_per_epoch)]
    for r, spec in enumerate(specs):
        on_weights, on_activations = penalties.uses(spec.target)
        norm_column = 0 if spec.norm == "l2" else 1
        if spec.alpha == 0:
            continue
        values = torch.tensor([schedules.coefficient(spec.schedule, spec.alpha, t, epochs) for t in times],
                              dtype=torch.float64)
        if on_weights:
            table[:, r, norm_column] = values
        if on_activations:
            table[:, r, 2 + norm_column] = values
    return table.to(torch.float32)


def _objective(template: ArticleCNN, norms: tuple[str, ...]):
    """Per-run batch objective for params of ONE run (vmapped for packs).

    Returns (ce, penalty, correct, activation norm): the activation norm is the l2 activity term
    with coefficient 1, sum(A**2)/B, detached (a diagnostic, never a gradient), computed in
    evaluation (mask None) and 0 in training steps.
    """

    def objective(params, x, y, mask, coef):
        logits, activations = functional_call(template, params, (x,), {"return_activations": True,
                                                                        "dropout_mask": mask})
        ce = F.cross_entropy(logits, y)
        kernels = [params["conv1.weight"], params["conv2.weight"]]
        penalty = torch.zeros((), device=x.device)
        for column, norm in enumerate(("l2", "l1")):
            if norm in norms:
                penalty = penalty + penalties.weight_penalty(kernels, coef[column], norm)
                penalty = penalty + penalties.activation_penalty(activations, coef[2 + column], norm)
        correct = (logits.argmax(dim=1) == y).sum()
        if mask is None:  # evaluation only: another pass over A1 costs ~15 % of a CPU training step
            activation_norm = penalties.activation_penalty([a.detach() for a in activations], 1.0, "l2")
        else:
            activation_norm = torch.zeros((), device=x.device)
        return ce, penalty, correct, activation_norm

    return objective


@functools.cache
def _compiled_objective(norms: tuple[str, ...], pool_channels_last: bool, dtype: torch.dtype, vmapped: bool):
    """torch.compile'd training objective, cached per process (a sweep compiles once per kind).

    Single run (vmapped=False): compiling takes 30-50 s on 2 CPU cores and then makes a penalised
    step 1.3-1.5x faster (docs/performance.md), so it pays for runs of >= ~1000 steps.
    Pack (vmapped=True): the vmapped objective compiled whole (params, data, masks and
    coefficients all batched on dim 0); on 2 CPU cores a pack of 2 compiled in ~25 s and then
    ran 1.2x faster; on a GPU it is opt-in (train.compile=true) until `l2sweep bench` measures it.
    Shapes are static (dynamic=False): the last, partial batch of an epoch runs the eager
    objective instead of triggering another compilation. dtype is part of the key because a
    float64 graph differs."""
    import logging

    # inductor's C++ toolchain probe warns "No CUDA runtime is found" on CPU-only machines: noise
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    template = ArticleCNN().to("meta").eval()
    template.pool_channels_last = pool_channels_last
    objective = _objective(template, norms)
    if vmapped:
        objective = vmap(objective, in_dims=(0, 0, 0, 0, 0))
    return torch.compile(objective, dynamic=False)


class _Pack:
    """Stacked parameters and the per-run / batched call of the objective."""

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, dtype: torch.dtype = torch.float32,
                 compile_steps: bool = False, full_batch: int | None = None):
        models = []
        for spec in specs:
            init = torch.Generator().manual_seed(spec.seed * STREAMS + INIT_STREAM)
            models.append(ArticleCNN(generator=init))
        stacked, _ = stack_module_state(models)
        self.names = list(stacked)
        self.params = {n: t.detach().to(device, dtype).requires_grad_(True) for n, t in stacked.items()}
        self.template = ArticleCNN().to("meta").eval()  # eval: dropout only through explicit masks
        self.size = len(specs)
        self.template.pool_channels_last = self.size == 1 and device.type == "cpu"
        norms = tuple(sorted({s.norm for s in specs if s.alpha > 0}))
        self.objective = _objective(self.template, norms)
        self.compiled = None
        # A single run only with a penalty: the compiled graph of a penalty-free (baseline) run
        # measured 2x SLOWER than eager on the CPU (1,341 vs 2,928 samples/s), while with a penalty
        # it is ~1.3-1.5x faster. Packs compile whenever asked.
        if compile_steps and (norms or self.size > 1):
            self.compiled = _compiled_objective(norms, self.template.pool_channels_last, dtype, self.size > 1)
        self.full_batch = full_batch  # the one batch size the compiled graph is made for

    def __call__(self, x, y, mask, coef, shared_data: bool):
        if self.size == 1:  # the same objective, without vmap's grouped convolutions
            params = {n: p[0] for n, p in self.params.items()}
            if shared_data:
                out = self.objective(params, x, y, mask, coef[0])
            elif self.compiled is not None and x.shape[1] == self.full_batch:
                out = self.compiled(params, x[0], y[0], mask[0], coef[0])
            else:
                out = self.objective(params, x[0], y[0], None if mask is None else mask[0], coef[0])
            return tuple(o.unsqueeze(0) for o in out)
        if self.compiled is not None and not shared_data and mask is not None and x.shape[1] == self.full_batch:
            return self.compiled(self.params, x, y, mask, coef)
        data_dim = None if shared_data else 0
        mask_dim = None if mask is None else 0
        return vmap(self.objective, in_dims=(0, data_dim, data_dim, mask_dim, 0))(self.params, x, y, mask, coef)


class _KerasAdam:
    """Adam over stacked per-run tensors with a per-run lr (Keras' update form)."""

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, eps: float):
        self.params, self.lr, self.eps = params, lr, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        beta1, beta2 = ADAM_BETAS
        self.steps += 1
        # alpha_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), per run
        step_size = self.lr * (math.sqrt(1 - beta2 ** self.steps) / (1 - beta1 ** self.steps))
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            scale = step_size.view(-1, *([1] * (p.dim() - 1)))
            p.sub_(scale * m / (v.sqrt() + self.eps))


class _Plateau:
    """Keras ReduceLROnPlateau(monitor=val_loss, min_delta=1e-4 absolute, cooldown 0) for one run."""

    def __init__(self, factor: float, patience: int):
        self.factor, self.patience = factor, patience
        self.best, self.wait = math.inf, 0

    def new_lr(self, value: float, lr: float) -> float:
        if value < self.best - KERAS_PLATEAU_MIN_DELTA:
            self.best, self.wait = value, 0
            return lr
        self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            return lr * self.factor
        return lr


@torch.inference_mode()
def _evaluate(pack: _Pack, x: torch.Tensor, y: torch.Tensor, coef: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(runs, 4) sums over the set: ce*b, penalty*b, correct, per-sample sum of A^2 (l2 activity)."""
    totals = torch.zeros(pack.size, 4, device=x.device, dtype=torch.float64)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        ce, penalty, correct, activation_norm = pack(xb, yb, None, coef, shared_data=True)
        b = len(yb)
        totals += torch.stack([ce * b, penalty * b, correct.to(ce.dtype), activation_norm * b], dim=1).double()
    return totals


def available_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    """CPU: one intra-op thread per available core. CUDA: TF32 matmuls/convolutions allowed (the
    model is far from needing fp32 mantissas) and cuDNN's autotuner on (shapes are static apart
    from each epoch's last batch, and vmap's grouped convolutions are where algorithms differ
    most), unless determinism is asked for."""
    if device.type == "cpu" and torch.get_num_threads() != available_cores():
        torch.set_num_threads(available_cores())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        set_deterministic()


def train_pack(specs: Sequence[RunSpec], data: MNISTTensors, settings: TrainSettings,
               device: torch.device | str = "cpu", on_progress: ProgressFn | None = None,
               keep_params: bool = False) -> list[dict]:
    """Train every run of the pack; return one result dict per run (status, metrics, history).

    With keep_params, each result also holds its run's final parameters ("params", CPU tensors).
    Every result carries the pack's size, seconds and peak memory (see peak_memory_mib).
    """
    device = torch.device(device)
    configure_device(device, settings.deterministic)
    reset_peak_memory(device)
    started = time.perf_counter()
    n_runs, n_train, batch = len(specs), len(data.train_y), settings.batch_size
    steps_per_epoch = math.ceil(n_train / batch)  # the last, partial batch is kept (as Keras)
    dtype = data.train_x.dtype  # float32 normally; float64 data trains in float64 (equivalence tests)
    coef_table = coefficient_table(specs, settings.epochs, steps_per_epoch).to(device, dtype)
    pack = _Pack(specs, device, dtype, compile_steps=settings.compile, full_batch=batch)
    params = [pack.params[n] for n in pack.names]
    lr = torch.full((n_runs,), settings.lr, device=device)
    optimizer = _KerasAdam(params, lr, settings.adam_eps)
    plateaus = [_Plateau(settings.plateau_factor, settings.plateau_patience) for _ in specs]
    seeds = [s.seed for s in specs]
    order_keys = rng.keys_tensor(seeds, ORDER_STREAM, device)
    dropout_keys = rng.keys_tensor(seeds, DROPOUT_STREAM, device)
    histories: list[list[dict]] = [[] for _ in specs]
    diverged_at: list[int | None] = [None] * n_runs
    last_train = None
    keep = 1.0 - settings.dropout

    for epoch in range(settings.epochs):
        epoch_start = time.perf_counter()
        order = rng.permutations(order_keys, epoch, n_train)
        sums = torch.zeros(n_runs, 3, device=device, dtype=torch.float64)  # ce*b, penalty*b, correct
        for step in range(steps_per_epoch):
            index = order[:, step * batch:(step + 1) * batch]
            xb, yb = data.train_x[index], data.train_y[index]
            b = index.shape[1]
            if settings.dropout > 0:
                mask = rng.dropout_masks(dropout_keys, epoch * steps_per_epoch + step, (b, 64), keep, dtype)
            else:
                mask = torch.ones(n_runs, b, 64, device=device, dtype=dtype)
            coef = coef_table[epoch * steps_per_epoch + step]
            ce, penalty, correct, _ = pack(xb, yb, mask, coef, shared_data=False)
            grads = torch.autograd.grad((ce + penalty).sum(), params)
            optimizer.step(grads)
            sums += torch.stack([ce.detach() * b, penalty.detach() * b, correct.to(ce.dtype)], dim=1).double()
            if on_progress is not None and (step % 25 == 0 or step == steps_per_epoch - 1):
                on_progress(epoch, step + 1, steps_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per epoch, so train_seconds is the real compute time
        train_seconds = time.perf_counter() - epoch_start
        end_coef = coef_table[min((epoch + 1) * steps_per_epoch, len(coef_table) - 1)]
        val = _evaluate(pack, data.val_x, data.val_y, end_coef, settings.eval_batch_size)
        # One host sync per epoch.
        train_sums, val_sums, lrs = sums.cpu().tolist(), val.cpu().tolist(), lr.cpu().tolist()
        n_val = len(data.val_y)
        new_lrs = list(lrs)
        for r in range(n_runs):
            if diverged_at[r] is not None:
                continue
            ce_sum, pen_sum, correct = train_sums[r]
            v_ce, v_pen, v_correct, _ = val_sums[r]
            record = {
                "epoch": epoch + 1,
                "train_loss": (ce_sum + pen_sum) / n_train, "train_ce": ce_sum / n_train,
                "train_penalty": pen_sum / n_train, "train_acc": 100.0 * correct / n_train,
                "val_loss": v_ce / n_val, "val_objective": (v_ce + v_pen) / n_val,
                "val_acc": 100.0 * v_correct / n_val, "lr": lrs[r],
                "seconds": time.perf_counter() - epoch_start, "train_seconds": train_seconds,
            }
            histories[r].append(record)
            if not all(math.isfinite(record[k]) for k in ("train_loss", "val_objective")):
                diverged_at[r] = epoch + 1
                new_lrs[r] = 0.0  # freeze it: its pack mates go on unaffected
                continue
            new_lrs[r] = plateaus[r].new_lr(record["val_objective"], lrs[r])
        lr.copy_(torch.tensor(new_lrs, device=device))
        last_train = train_sums
        if all(d is not None for d in diverged_at):
            break

    final_coef = coef_table[-1]
    test = _evaluate(pack, data.test_x, data.test_y, final_coef, settings.eval_batch_size).cpu().tolist()
    train_eval = _evaluate(pack, data.train_x, data.train_y, final_coef, settings.eval_batch_size).cpu().tolist()
    with torch.no_grad():
        kernel_sq = [penalties.weight_penalty([pack.params["conv1.weight"][r], pack.params["conv2.weight"][r]],
                                              1.0, "l2").item() for r in range(n_runs)]
    seconds = time.perf_counter() - started
    peak_mib = peak_memory_mib(device)
    n_test = len(data.test_y)
    results = []
    for r in range(n_runs):
        status = "ok" if diverged_at[r] is None else "diverged"
        t_ce, _, t_correct, t_act = test[r]
        tr_ce, _, tr_correct, _ = train_eval[r]
        last = histories[r][-1] if histories[r] else {}
        metrics = {
            "test_acc": 100.0 * t_correct / n_test, "test_loss": t_ce / n_test,
            "val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
            "train_acc": 100.0 * tr_correct / n_train, "train_loss": tr_ce / n_train,
            "penalty": (last_train[r][1] / n_train) if last_train else None,
            "weight_sq_norm": kernel_sq[r], "activation_sq_norm": t_act / n_test,
            "final_lr": lr[r].item() if status == "ok" else None, "n_test": n_test,
        }
        if status != "ok":
            metrics = {k: (v if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}
        results.append({
            "status": status, "diverged_epoch": diverged_at[r], "metrics": metrics,
            "history": histories[r], "seconds": seconds, "pack_size": n_runs, "device": str(device),
            "peak_memory_mib": peak_mib,
        })
        if keep_params:
            results[-1]["params"] = {name: pack.params[name][r].detach().cpu().clone() for name in pack.names}
    return results
