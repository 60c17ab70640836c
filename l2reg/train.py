"""THE training loop: one for CPU and GPU, for a single run and for a pack of runs.

A pack is a list of runs that share shapes (model, batch size, epochs, data, dropout, training
size). Their parameters are stacked along a leading run dimension and trained as one computation
with torch.func.functional_call + vmap; a pack of one takes the same code without vmap (on a CPU
the grouped convolutions vmap produces are slower than plain ones), with its conv kernels
channels_last so that oneDNN keeps the whole step in that layout. Each run keeps its own:
- seed: the init comes from a generator seeded from the run's seed; data order, dropout masks
  and (with data.train_size) the training subset from counter-based random numbers keyed by it
  (l2reg.rng: one set of kernels for the whole pack per step, the same on CPU and GPU), so a
  run's numbers never depend on which runs share its pack;
- penalty terms and schedule: folded into a per-step coefficient table (steps, runs, terms) of
  alpha(t) for every term of l2reg.penalties.TERMS, computed once up front (no host work per
  step). Every run computes every term (0 = off): the baseline and every setting go through the
  very same computation, so a context's arms never differ in code path, only in coefficients;
- optimizer state and learning rate: Adam is written out over the stacked tensors with a per-run
  lr vector, because ReduceLROnPlateau (on each run's validation objective) changes lr per run.
  The Adam form is Keras' (eps added to sqrt(v) before bias correction, eps=1e-7); decoupled
  weight decay (form=decoupled) multiplies the scoped kernels by 1 - lr * alpha(t) before the
  Adam update, as torch.optim.AdamW does.
The model owns parameter names, groups and widths (l2reg.model), the penalties their formulas
(l2reg.penalties), the schedules theirs (l2reg.schedules), the feature metrics theirs
(l2reg.features): no formula and no layer name is written here. The host synchronises once per
epoch (metrics, plateau, divergence), never per step.
"""

from __future__ import annotations

import base64
import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._pytree import tree_map

from l2reg import features, penalties, rng, schedules
from l2reg.data import MNISTTensors
from l2reg.model import DROPOUT_P, DROPOUT_SHAPE, WEIGHT_GROUPS, ArticleCNN

ADAM_BETAS = (0.9, 0.999)
KERAS_PLATEAU_MIN_DELTA = 1e-4  # absolute, as Keras' ReduceLROnPlateau
# Random streams per run, so no two runs or uses share one: the init generator is seeded with
# seed * STREAMS + INIT_STREAM; order, dropout and subset use l2reg.rng keys of (seed, stream).
STREAMS = 4
INIT_STREAM, ORDER_STREAM, DROPOUT_STREAM, SUBSET_STREAM = 0, 1, 2, 3

ProgressFn = Callable[[int, int, int], None]  # (epoch index, step in epoch, steps per epoch)


@dataclass(frozen=True)
class RunSpec:
    """What distinguishes one run inside a pack (plain values): its seed, alpha, schedule, and
    the penalty terms its setting switches on (l2reg.penalties.terms_for)."""

    seed: int
    alpha: float
    schedule: Any  # an object with the schedule's fields, e.g. l2reg.config.ScheduleConfig
    terms: tuple[penalties.Term, ...] = ()


def make_spec(seed: int, alpha: float = 0.0, schedule: Any = None, **setting) -> RunSpec:
    """A RunSpec from setting values (target, norm, form, scope); raises penalties.NotWired."""
    from l2reg.config import ScheduleConfig

    return RunSpec(seed, float(alpha), schedule or ScheduleConfig(), penalties.terms_for(setting))


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
    dropout: float = DROPOUT_P  # the article's 0.5; 0 turns dropout off
    train_size: int | None = None  # train on this many images of the training split, drawn by seed
    compile: bool = False  # torch.compile the training step (see _compiled_objective)
    features: bool = True  # feature metrics and per-image predictions after training


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
    """(epochs * steps_per_epoch, runs, len(penalties.TERMS)) float64: alpha(t) per step for each
    term a run uses, 0 elsewhere. t is the fractional epoch at the start of the step:
    epoch + step / steps_per_epoch."""
    table = torch.zeros(epochs * steps_per_epoch, len(specs), len(penalties.TERMS), dtype=torch.float64)
    times = [e + i / steps_per_epoch for e in range(epochs) for i in range(steps_per_epoch)]
    for r, spec in enumerate(specs):
        if spec.alpha == 0:
            continue
        values = torch.tensor([schedules.coefficient(spec.schedule, spec.alpha, t, epochs) for t in times],
                              dtype=torch.float64)
        for term in spec.terms:
            table[:, r, penalties.TERMS.index(term)] = values
    return table


def _objective(template: ArticleCNN):
    """Per-run training objective for params of ONE run (vmapped for packs): (ce, penalty, correct)."""

    def objective(params, x, y, mask, coef):
        logits, activations = functional_call(template, params, (x,), {"return_activations": True,
                                                                        "dropout_mask": mask})
        ce = F.cross_entropy(logits, y)
        penalty = penalties.loss_penalty(params, activations, coef)
        correct = (logits.argmax(dim=1) == y).sum()
        return ce, penalty, correct

    return objective


def _val_sums(template: ArticleCNN):
    """Evaluation batch of one run: (sum of ce, penalty * batch, correct); the penalty's activity
    terms are per-sample means, so penalty * batch sums them."""

    def sums(params, x, y, coef):
        logits, activations = functional_call(template, params, (x,), {"return_activations": True})
        penalty = penalties.loss_penalty(params, activations, coef)
        correct = (logits.argmax(dim=1) == y).sum()
        return F.cross_entropy(logits, y, reduction="sum"), penalty * len(y), correct

    return sums


def _accuracy_sums(template: ArticleCNN):
    """(sum of ce, correct) of one run on a batch (train-set and noisy test-set accuracy)."""

    def sums(params, x, y):
        logits = functional_call(template, params, (x,))
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum()

    return sums


def _test_sums(template: ArticleCNN):
    """Test batch of one run: (sum of ce, correct, predictions, exact zeros in A1 and A2,
    per-sample sum of A^2 summed, correct of each probe). `probes` holds the run's probes
    stacked on a leading probe dim (sizes of features.PROBE_SIZES)."""

    def sums(params, x, y, probes):
        logits, activations, feats = functional_call(template, params, (x,), {"return_features": True})
        predictions = logits.argmax(dim=1)
        zeros = sum((a == 0).sum() for a in activations)
        activation_sq = sum(a.square().sum() for a in activations)
        standard = (feats.unsqueeze(0) - probes["mean"].unsqueeze(1)) / probes["sd"].unsqueeze(1)
        probe_logits = torch.bmm(standard, probes["weight"]) + probes["bias"].unsqueeze(1)
        probe_correct = (probe_logits.argmax(dim=2) == y.unsqueeze(0)).sum(dim=1)
        return (F.cross_entropy(logits, y, reduction="sum"), (predictions == y).sum(), predictions, zeros,
                activation_sq, probe_correct)

    return sums


def _features_of(template: ArticleCNN):
    def feats(params, x):
        return functional_call(template, params, (x,), {"return_features": True})[2]

    return feats


@functools.cache
def _compiled_objective(dtype: torch.dtype, vmapped: bool):
    """torch.compile'd training objective, cached per process (a sweep compiles it once).

    Single run (vmapped=False): compiling takes 15-50 s on 2 CPU cores the first time (inductor
    also caches the graph on disk, so a later process takes a few seconds) and then makes a step
    faster (docs/performance.md). Every run, baseline included, uses this one graph: penalties
    are coefficients, never branches. Pack (vmapped=True): the vmapped objective compiled whole
    (params, data, masks and coefficients all batched on dim 0); on a GPU opt-in
    (train.compile=true). Shapes are static (dynamic=False): the last, partial batch of an epoch
    runs the eager objective instead of triggering another compilation. dtype is part of the key
    because a float64 graph differs."""
    import logging

    # inductor's C++ toolchain probe warns "No CUDA runtime is found" on CPU-only machines: noise
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    objective = _objective(ArticleCNN().to("meta").eval())
    if vmapped:
        objective = vmap(objective, in_dims=(0, 0, 0, 0, 0))
    return torch.compile(objective, dynamic=False)


def _channels_last_stack(stacked: torch.Tensor) -> torch.Tensor:
    """A (runs, O, I, H, W) stack of conv kernels laid out so that each [r] is channels_last."""
    runs, out_ch, in_ch, height, width = stacked.shape
    layout = torch.empty((runs, out_ch, height, width, in_ch), dtype=stacked.dtype, device=stacked.device)
    return layout.permute(0, 1, 4, 2, 3).copy_(stacked)


class _Pack:
    """Stacked parameters and the per-run / batched call of the objectives."""

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, dtype: torch.dtype = torch.float32,
                 compile_steps: bool = False, full_batch: int | None = None):
        models = []
        for spec in specs:
            init = torch.Generator().manual_seed(spec.seed * STREAMS + INIT_STREAM)
            models.append(ArticleCNN(generator=init))
        stacked, _ = stack_module_state(models)
        self.size = len(specs)
        self.names = list(stacked)
        # A single CPU run keeps its conv kernels channels_last: oneDNN then returns A1/A2
        # channels_last and the step runs without layout reorders (docs/performance.md).
        self.channels_last = self.size == 1 and device.type == "cpu"
        params = {}
        for name, tensor in stacked.items():
            tensor = tensor.detach().to(device, dtype)
            if self.channels_last and tensor.dim() == 5:
                tensor = _channels_last_stack(tensor)
            params[name] = tensor.requires_grad_(True)
        self.params = params
        self.template = ArticleCNN().to("meta").eval()  # eval: dropout only through explicit masks
        self.objective = _objective(self.template)
        self.compiled = _compiled_objective(dtype, self.size > 1) if compile_steps else None
        self.full_batch = full_batch  # the one batch size the compiled graph is made for

    def single(self) -> dict:
        return {n: p[0] for n, p in self.params.items()}

    def map(self, fn, args: tuple, batched: tuple[bool, ...]):
        """fn(params of one run, *args) for every run: args marked batched carry a leading run
        dim (a pytree of tensors), the others are shared. Outputs get a leading run dim."""
        if self.size == 1:
            one = [tree_map(lambda t: t[0], a) if b else a for a, b in zip(args, batched)]
            return tree_map(lambda t: t.unsqueeze(0), fn(self.single(), *one))
        return vmap(fn, in_dims=(0, *[0 if b else None for b in batched]))(self.params, *args)

    def train_step(self, x, y, mask, coef):
        """(ce, penalty, correct), each (runs,), for per-run batches x (runs, b, ...)."""
        full = x.shape[1] == self.full_batch
        if self.size == 1:
            if self.compiled is not None and full:
                out = self.compiled(self.single(), x[0], y[0], mask[0], coef[0])
            else:
                out = self.objective(self.single(), x[0], y[0], mask[0], coef[0])
            return tuple(o.unsqueeze(0) for o in out)
        if self.compiled is not None and full:
            return self.compiled(self.params, x, y, mask, coef)
        return vmap(self.objective, in_dims=(0, 0, 0, 0, 0))(self.params, x, y, mask, coef)


class _KerasAdam:
    """Adam over stacked per-run tensors with a per-run lr (Keras' update form), with decoupled
    weight decay on the parameters that have a decay column (per-run coefficient, 0 = none)."""

    def __init__(self, params: list[torch.Tensor], lr: torch.Tensor, eps: float,
                 decay_columns: Sequence[int | None] | None = None):
        self.params, self.lr, self.eps = params, lr, eps
        self.decay_columns = list(decay_columns) if decay_columns is not None else [None] * len(params)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], coef: torch.Tensor | None = None) -> None:
        """One update. `coef` (runs, terms): this step's coefficients, for decoupled decay."""
        beta1, beta2 = ADAM_BETAS
        self.steps += 1
        # alpha_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), per run
        step_size = self.lr * (math.sqrt(1 - beta2 ** self.steps) / (1 - beta1 ** self.steps))
        for p, g, m, v, column in zip(self.params, grads, self.m, self.v, self.decay_columns):
            shape = (-1, *([1] * (p.dim() - 1)))
            if column is not None and coef is not None:
                # AdamW: p <- p * (1 - lr * alpha(t)) before the Adam step; a 0 coefficient
                # multiplies by exactly 1.0, so runs without decay are unchanged to the bit
                p.mul_((1 - self.lr * coef[:, column]).view(shape))
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.sub_(step_size.view(shape) * m / (v.sqrt() + self.eps))


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


def _batches(n: int, size: int):
    return ((start, min(start + size, n)) for start in range(0, n, size))


@torch.inference_mode()
def _evaluate(pack: _Pack, x: torch.Tensor, y: torch.Tensor, coef: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(runs, 3) float64 sums over a shared set: ce, penalty * batch, correct."""
    fn = _val_sums(pack.template)
    totals = torch.zeros(pack.size, 3, device=x.device, dtype=torch.float64)
    for start, end in _batches(len(y), batch_size):
        out = pack.map(fn, (x[start:end], y[start:end], coef), (False, False, True))
        totals += torch.stack([o.to(torch.float64) for o in out], dim=1)
    return totals


@torch.inference_mode()
def _accuracy(pack: _Pack, x: torch.Tensor, y: torch.Tensor, batch_size: int, per_run: bool) -> torch.Tensor:
    """(runs, 2) float64 sums of ce and correct; per_run: x (runs, n, ...) and y (runs, n)."""
    fn = _accuracy_sums(pack.template)
    n = y.shape[-1]
    totals = torch.zeros(pack.size, 2, device=x.device, dtype=torch.float64)
    for start, end in _batches(n, batch_size):
        xb, yb = (x[:, start:end], y[:, start:end]) if per_run else (x[start:end], y[start:end])
        out = pack.map(fn, (xb, yb), (per_run, per_run))
        totals += torch.stack([o.to(torch.float64) for o in out], dim=1)
    return totals


@torch.inference_mode()
def _fit_probes(pack: _Pack, data: MNISTTensors, batch_size: int) -> dict:
    """Each run's probes (one per size of features.PROBE_SIZES), fitted on the frozen features of
    the fixed probe images; stacked (runs, probes, ...) on the device."""
    index = features.probe_indices(len(data.train_y)).to(data.train_x.device)
    x, y = data.train_x[index], data.train_y[index]
    fn = _features_of(pack.template)
    feats = torch.cat([pack.map(fn, (x[s:e],), (False,)) for s, e in _batches(len(y), batch_size)], dim=1)
    per_run = []
    with torch.inference_mode(False):
        for r in range(pack.size):
            fitted = [features.fit_probe(feats[r, :size].clone(), y[:size].clone()) for size in features.PROBE_SIZES]
            per_run.append({key: torch.stack([f[key] for f in fitted]) for key in fitted[0]})
    return features.stack_probes(per_run, data.train_x.device, data.train_x.dtype)


@torch.inference_mode()
def _test_metrics(pack: _Pack, data: MNISTTensors, probes: dict, batch_size: int) -> dict:
    """Per run: test ce and correct, predictions (runs, n_test) uint8, zero fraction of A1/A2,
    mean per-sample sum of A^2, probe accuracies, and accuracy under each input noise level."""
    fn = _test_sums(pack.template)
    x, y = data.test_x, data.test_y
    n = len(y)
    ce = torch.zeros(pack.size, dtype=torch.float64, device=x.device)
    correct, zeros, activation_sq = ce.clone(), ce.clone(), ce.clone()
    probe_correct = torch.zeros(pack.size, len(features.PROBE_SIZES), dtype=torch.float64, device=x.device)
    predictions = []
    for start, end in _batches(n, batch_size):
        b_ce, b_correct, b_pred, b_zeros, b_sq, b_probe = pack.map(fn, (x[start:end], y[start:end], probes),
                                                                   (False, False, True))
        ce += b_ce.double()
        correct += b_correct.double()
        zeros += b_zeros.double()
        activation_sq += b_sq.double()
        probe_correct += b_probe.double()
        predictions.append(b_pred.to(torch.uint8))
    units = sum(t.numel() for t in pack.template(torch.zeros(1, *x.shape[1:], device="meta"),
                                                 return_activations=True)[1])
    noise_started = time.perf_counter()
    noise = features.standard_noise(x)
    noise_correct = []
    for sd in features.NOISE_SDS:
        noise_correct.append(_accuracy(pack, features.noisy_inputs(x, sd, noise), y, batch_size, per_run=False)[:, 1])
    del noise
    _sync(x.device)
    noise_seconds = time.perf_counter() - noise_started
    return {"ce": ce, "correct": correct, "predictions": torch.cat(predictions, dim=1), "zeros": zeros / (units * n),
            "activation_sq": activation_sq / n, "probe_correct": probe_correct,
            "noise_correct": torch.stack(noise_correct, 1), "noise_seconds": noise_seconds}


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
    """CPU: one intra-op thread per available core (a sweep pinned with `taskset -c 1` uses one).
    CUDA: TF32 matmuls/convolutions allowed (the model is far from needing fp32 mantissas) and
    cuDNN's autotuner on (shapes are static apart from each epoch's last batch, and vmap's grouped
    convolutions are where algorithms differ most), unless determinism is asked for."""
    if device.type == "cpu" and torch.get_num_threads() != available_cores():
        torch.set_num_threads(available_cores())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        set_deterministic()


def encode_labels(labels: torch.Tensor) -> str:
    """Labels 0..9 as base64 of a uint8 array (what run JSONs keep per test image)."""
    return base64.b64encode(labels.to("cpu", torch.uint8).numpy().tobytes()).decode("ascii")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pack_optimizer(pack: _Pack, lr: torch.Tensor, eps: float) -> _KerasAdam:
    """The pack's Adam (per-run lr, shape (n_runs,)), each parameter with its decoupled-decay
    column (penalties.DECAY_COLUMNS by its WEIGHT_GROUPS group; None = never decayed). One place,
    so scripts/step_parts.py times the very optimizer train_pack steps."""
    groups = {name: group for group, names in WEIGHT_GROUPS.items() for name in names}
    return _KerasAdam([pack.params[n] for n in pack.names], lr, eps,
                      [penalties.DECAY_COLUMNS.get(groups.get(name)) for name in pack.names])


def train_pack(specs: Sequence[RunSpec], data: MNISTTensors, settings: TrainSettings,
               device: torch.device | str = "cpu", on_progress: ProgressFn | None = None,
               keep_params: bool = False) -> list[dict]:
    """Train every run of the pack; return one result dict per run (status, metrics, history,
    test predictions, timings). With keep_params, each result also holds its run's final
    parameters ("params", CPU tensors). Every result carries the pack's size, seconds, the code
    path it took (`compiled`) and peak memory (see peak_memory_mib)."""
    device = torch.device(device)
    configure_device(device, settings.deterministic)
    reset_peak_memory(device)
    started = time.perf_counter()
    n_runs, n_split, batch = len(specs), len(data.train_y), settings.batch_size
    n_train = settings.train_size or n_split
    if n_train > n_split:
        raise ValueError(f"data.train_size={n_train} exceeds the {n_split} images of the training split")
    steps_per_epoch = math.ceil(n_train / batch)  # the last, partial batch is kept (as Keras)
    dtype = data.train_x.dtype  # float32 normally; float64 data trains in float64 (equivalence tests)
    coef_table = coefficient_table(specs, settings.epochs, steps_per_epoch).to(device, dtype)
    pack = _Pack(specs, device, dtype, compile_steps=settings.compile, full_batch=batch)
    lr = torch.full((n_runs,), settings.lr, device=device, dtype=dtype)
    optimizer = pack_optimizer(pack, lr, settings.adam_eps)
    params = optimizer.params  # the pack's tensors, in pack.names order
    plateaus = [_Plateau(settings.plateau_factor, settings.plateau_patience) for _ in specs]
    seeds = [s.seed for s in specs]
    order_keys = rng.keys_tensor(seeds, ORDER_STREAM, device)
    dropout_keys = rng.keys_tensor(seeds, DROPOUT_STREAM, device)
    # data.train_size: each run's own subset of the training split (drawn by its seed); the
    # validation set stays the fixed split. None: every run sees the whole split.
    subsets = (rng.permutations(rng.keys_tensor(seeds, SUBSET_STREAM, device), 0, n_split)[:, :n_train]
               if settings.train_size else None)
    histories: list[list[dict]] = [[] for _ in specs]
    diverged_at: list[int | None] = [None] * n_runs
    last_train = None
    keep = 1.0 - settings.dropout
    train_seconds_total = 0.0

    for epoch in range(settings.epochs):
        epoch_start = time.perf_counter()
        order = rng.permutations(order_keys, epoch, n_train)
        sums = torch.zeros(n_runs, 3, device=device, dtype=torch.float64)  # ce*b, penalty*b, correct
        for step in range(steps_per_epoch):
            index = order[:, step * batch:(step + 1) * batch]
            if subsets is not None:
                index = subsets.gather(1, index)
            xb, yb = data.train_x[index], data.train_y[index]
            b = index.shape[1]
            if settings.dropout > 0:
                mask = rng.dropout_masks(dropout_keys, epoch * steps_per_epoch + step, (b, *DROPOUT_SHAPE), keep,
                                         dtype)
            else:
                mask = torch.ones(n_runs, b, *DROPOUT_SHAPE, device=device, dtype=dtype)
            coef = coef_table[epoch * steps_per_epoch + step]
            ce, penalty, correct = pack.train_step(xb, yb, mask, coef)
            grads = torch.autograd.grad((ce + penalty).sum(), params)
            optimizer.step(grads, coef)
            sums += torch.stack([ce.detach() * b, penalty.detach() * b, correct.to(ce.dtype)], dim=1).double()
            if on_progress is not None and (step % 25 == 0 or step == steps_per_epoch - 1):
                on_progress(epoch, step + 1, steps_per_epoch)
        _sync(device)  # once per epoch, so train_seconds is the real compute time
        train_seconds = time.perf_counter() - epoch_start
        train_seconds_total += train_seconds
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
            v_ce, v_pen, v_correct = val_sums[r]
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
        lr.copy_(torch.tensor(new_lrs, device=device, dtype=dtype))
        last_train = train_sums
        if all(d is not None for d in diverged_at):
            break

    eval_start = time.perf_counter()
    if subsets is None:
        train_eval = _accuracy(pack, data.train_x, data.train_y, settings.eval_batch_size, per_run=False)
    else:  # each run on the images it trained on
        train_eval = _accuracy(pack, data.train_x[subsets], data.train_y[subsets], settings.eval_batch_size,
                               per_run=True)
    train_eval = train_eval.cpu().tolist()
    # feature_seconds: what the feature metrics add (the probe fits and the noisy-input passes;
    # their zero counts and probe logits ride on the test pass, which runs anyway)
    if settings.features:
        probe_started = time.perf_counter()
        probes = _fit_probes(pack, data, settings.eval_batch_size)
        probe_seconds = time.perf_counter() - probe_started
        test = _test_metrics(pack, data, probes, settings.eval_batch_size)
        features_seconds = probe_seconds + test.pop("noise_seconds")
    else:  # test accuracy and loss only (benchmarks of the training loop)
        sums = _accuracy(pack, data.test_x, data.test_y, settings.eval_batch_size, per_run=False)
        test = {"ce": sums[:, 0], "correct": sums[:, 1]}
        features_seconds = 0.0
    test = {k: v.cpu() for k, v in test.items()}
    _sync(device)
    eval_seconds = time.perf_counter() - eval_start
    sq_norms = {group: [penalties.reported_sq_norm(pack.params[name][r] for name in names) for r in range(n_runs)]
                for group, names in WEIGHT_GROUPS.items()}
    seconds = time.perf_counter() - started
    peak_mib = peak_memory_mib(device)
    n_test = len(data.test_y)
    test_labels = encode_labels(data.test_y) if settings.features else None
    results = []
    for r in range(n_runs):
        status = "ok" if diverged_at[r] is None else "diverged"
        tr_ce, tr_correct = train_eval[r]
        last = histories[r][-1] if histories[r] else {}
        metrics = {
            "test_acc": 100.0 * test["correct"][r].item() / n_test, "test_loss": test["ce"][r].item() / n_test,
            "val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
            "train_acc": 100.0 * tr_correct / n_train, "train_loss": tr_ce / n_train,
            "penalty": (last_train[r][1] / n_train) if last_train else None,
            "weight_sq_norm": sq_norms["conv"][r], "dense_weight_sq_norm": sq_norms["dense"][r],
            "final_lr": lr[r].item() if status == "ok" else None, "n_test": n_test, "n_train": n_train,
        }
        if settings.features:
            metrics["activation_sq_norm"] = test["activation_sq"][r].item()
            for i, size in enumerate(features.PROBE_SIZES):
                metrics[f"probe_acc_{size}"] = 100.0 * test["probe_correct"][r, i].item() / n_test
            metrics["zero_fraction"] = test["zeros"][r].item()
            for i, sd in enumerate(features.NOISE_SDS):
                metrics[f"noise_acc_{sd:g}"] = 100.0 * test["noise_correct"][r, i].item() / n_test
        if status != "ok":
            metrics = {k: (v if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}
        results.append({
            "status": status, "diverged_epoch": diverged_at[r], "metrics": metrics,
            "history": histories[r], "seconds": seconds, "train_seconds": train_seconds_total,
            "eval_seconds": eval_seconds, "features_seconds": features_seconds, "pack_size": n_runs,
            "device": str(device), "compiled": bool(settings.compile), "peak_memory_mib": peak_mib,
        })
        if settings.features:
            results[-1]["test_predictions"] = encode_labels(test["predictions"][r])
            results[-1]["test_labels"] = test_labels
        if keep_params:
            results[-1]["params"] = {name: pack.params[name][r].detach().cpu().clone() for name in pack.names}
    return results
