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
- penalty terms and schedule: a pack computes the penalty terms its regularized runs use (the
  union, l2reg.penalties; a single run exactly its own, the baseline none), with a per-step
  coefficient table (steps, runs, terms) of alpha(t) computed once up front (no host work per
  step); a run has 0 in the columns of its pack mates' terms, which adds exactly 0.0;
- optimizer state and learning rate: Adam is written out over the stacked tensors with a per-run
  lr vector, because ReduceLROnPlateau (on each run's validation objective) changes lr per run.
  The Adam form is Keras' (eps added to sqrt(v) before bias correction, eps=1e-7); decoupled
  weight decay (form=decoupled) multiplies the scoped kernels by 1 - lr * alpha(t) before the
  Adam update, as torch.optim.AdamW does.
`train_pack` is the epoch loop (`_Loop`), the final evaluation (l2reg.evaluate's declared metrics)
and the records. The model owns parameter names, groups, widths and the data loss, the penalties,
schedules and metrics their formulas (l2reg.penalties, .schedules, .evaluate, .features): no
formula and no layer name is written here. The host synchronises once per epoch, never per step.
"""

from __future__ import annotations

import base64
import functools
import math
import time
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Callable, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._pytree import tree_map

from l2reg import axes, evaluate, penalties, rng, schedules
from l2reg.config import DataConfig, ScheduleConfig, TrainConfig
from l2reg.data import MNISTTensors
from l2reg.device import configure_device, peak_memory_mib, reset_peak_memory
from l2reg.device import sync as device_sync
from l2reg.model import DROPOUT_SHAPE, WEIGHT_GROUPS, ArticleCNN, cross_entropy

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
    return RunSpec(seed, float(alpha), schedule or ScheduleConfig(), penalties.terms_for(setting))


# TrainConfig keys that say where and how many runs train, never how they train.
PLACEMENT_KEYS = ("device", "pack_size")
# The TrainConfig keys every run of a pack shares, copied as they are (compile is resolved first:
# null = auto becomes a bool, l2reg.sweep.compile_decision).
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in (*PLACEMENT_KEYS, "compile"))


def _schema_field(schema, name: str):
    found = next(f for f in fields(schema) if f.name == name)
    return name, found.type, field(default=found.default)


TrainSettings = make_dataclass("TrainSettings", [
    *(_schema_field(TrainConfig, name) for name in TRAIN_KEYS),
    _schema_field(DataConfig, "train_size"),  # train on this many images of the split, drawn by seed
    ("compile", bool, field(default=False)),  # torch.compile the training step (see _compiled_objective)
    ("features", bool, field(default=True)),  # feature metrics and per-image predictions after training
], frozen=True, namespace={"__module__": __name__, "__doc__": (
    "What every run of a pack shares: the TrainConfig keys of TRAIN_KEYS and data.train_size, with "
    "the schema's defaults (l2reg.config writes them, once), compile resolved to a bool, and "
    "`features` (off: test accuracy and loss only, for benchmarks of the loop).")})


def pack_terms(specs: Sequence[RunSpec]) -> tuple[penalties.Term, ...]:
    """The penalty terms a pack computes: those of its regularized runs, in registration order
    (the order they are summed in); a baseline adds none."""
    used = list(dict.fromkeys(t for spec in specs if not axes.is_baseline(spec) for t in spec.terms))
    registered = penalties.terms()
    return tuple(sorted(used, key=lambda t: registered.index(t) if t in registered else len(registered)))


def coefficient_table(specs: Sequence[RunSpec], epochs: int, steps_per_epoch: int,
                      terms: Sequence[penalties.Term] | None = None) -> torch.Tensor:
    """(epochs * steps_per_epoch, runs, len(terms)) float64: alpha(t) per step for each term a
    run uses, 0 elsewhere; `terms` defaults to pack_terms(specs). t is the fractional epoch at
    the start of the step: epoch + step / steps_per_epoch."""
    terms = list(pack_terms(specs) if terms is None else terms)
    table = torch.zeros(epochs * steps_per_epoch, len(specs), len(terms), dtype=torch.float64)
    times = [e + i / steps_per_epoch for e in range(epochs) for i in range(steps_per_epoch)]
    for r, spec in enumerate(specs):
        if axes.is_baseline(spec):
            continue
        values = torch.tensor([schedules.coefficient(spec.schedule, spec.alpha, t, epochs) for t in times],
                              dtype=torch.float64)
        for term in spec.terms:
            table[:, r, terms.index(term)] = values
    return table


def _objective(template: ArticleCNN, terms: tuple[penalties.Term, ...]):
    """Per-run training objective for params of ONE run (vmapped for packs): (ce, penalty,
    correct), the penalty over `terms` with coefficients `coef` (one per term)."""

    def objective(params, x, y, mask, coef):
        logits, taps = functional_call(template, params, (x,), {"return_activations": True, "dropout_mask": mask})
        ce = cross_entropy(logits, y)
        penalty = penalties.loss_penalty(terms, coef, params, taps, logits, y)
        correct = (logits.argmax(dim=1) == y).sum()
        return ce, penalty, correct

    return objective


def _val_sums(template: ArticleCNN, terms: tuple[penalties.Term, ...]):
    """Validation batch of one run: (sum of ce, penalty * batch, correct); the penalty's activity
    terms are per-sample means, so penalty * batch sums them."""

    def sums(params, x, y, coef):
        logits, taps = functional_call(template, params, (x,), {"return_activations": True})
        penalty = penalties.loss_penalty(terms, coef, params, taps, logits, y)
        correct = (logits.argmax(dim=1) == y).sum()
        return cross_entropy(logits, y, reduction="sum"), penalty * len(y), correct

    return sums


@functools.cache
def _compiled_objective(dtype: torch.dtype, vmapped: bool, terms: tuple[penalties.Term, ...]):
    """torch.compile'd training objective, cached per process and per term set (a sweep compiles
    each once; the baseline's has no penalty at all).

    Single run (vmapped=False): compiling takes 15-50 s on 2 CPU cores the first time (inductor
    also caches the graph on disk, so a later process takes a few seconds) and then makes a step
    faster (docs/performance.md). Pack (vmapped=True): the vmapped objective compiled whole
    (params, data, masks and coefficients all batched on dim 0); on a GPU opt-in
    (train.compile=true). Shapes are static (dynamic=False): the last, partial batch of an epoch
    runs the eager objective instead of triggering another compilation. dtype is part of the key
    because a float64 graph differs."""
    import logging

    # inductor's C++ toolchain probe warns "No CUDA runtime is found" on CPU-only machines: noise
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    objective = _objective(ArticleCNN().to("meta").eval(), terms)
    if vmapped:
        objective = vmap(objective, in_dims=(0, 0, 0, 0, 0))
    return torch.compile(objective, dynamic=False)


def _channels_last_stack(stacked: torch.Tensor) -> torch.Tensor:
    """A (runs, O, I, H, W) stack of conv kernels laid out so that each [r] is channels_last."""
    runs, out_ch, in_ch, height, width = stacked.shape
    layout = torch.empty((runs, out_ch, height, width, in_ch), dtype=stacked.dtype, device=stacked.device)
    return layout.permute(0, 1, 4, 2, 3).copy_(stacked)


class _Pack:
    """Stacked parameters, the pack's penalty terms and the per-run / batched call of the objectives."""

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, dtype: torch.dtype = torch.float32,
                 compile_steps: bool = False, full_batch: int | None = None):
        models = []
        for spec in specs:
            init = torch.Generator().manual_seed(spec.seed * STREAMS + INIT_STREAM)
            models.append(ArticleCNN(generator=init))
        stacked, _ = stack_module_state(models)
        self.size = len(specs)
        self.names = list(stacked)
        self.terms = pack_terms(specs)  # the coefficient table's columns, in this order
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
        self.objective = _objective(self.template, self.terms)
        self.compiled = _compiled_objective(dtype, self.size > 1, self.terms) if compile_steps else None
        self.full_batch = full_batch  # the one batch size the compiled graph is made for

    def run_params(self, r: int) -> dict:
        """Run r's parameters (views into the stack)."""
        return {n: p[r] for n, p in self.params.items()}

    def map(self, fn, args: tuple, batched: tuple[bool, ...]):
        """fn(params of one run, *args) for every run: args marked batched carry a leading run
        dim (a pytree of tensors), the others are shared. Outputs get a leading run dim."""
        if self.size == 1:
            one = [tree_map(lambda t: t[0], a) if b else a for a, b in zip(args, batched)]
            return tree_map(lambda t: t.unsqueeze(0), fn(self.run_params(0), *one))
        return vmap(fn, in_dims=(0, *[0 if b else None for b in batched]))(self.params, *args)

    def train_step(self, x, y, mask, coef):
        """(ce, penalty, correct), each (runs,), for per-run batches x (runs, b, ...)."""
        full = x.shape[1] == self.full_batch
        if self.size == 1:
            if self.compiled is not None and full:
                out = self.compiled(self.run_params(0), x[0], y[0], mask[0], coef[0])
            else:
                out = self.objective(self.run_params(0), x[0], y[0], mask[0], coef[0])
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


@torch.inference_mode()
def _validation_sums(pack: _Pack, x: torch.Tensor, y: torch.Tensor, coef: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """(runs, 3) float64 sums over the validation set: ce, penalty * batch, correct."""
    fn = _val_sums(pack.template, pack.terms)
    totals = torch.zeros(pack.size, 3, device=x.device, dtype=torch.float64)
    for start, end in evaluate.batches(len(y), batch_size):
        out = pack.map(fn, (x[start:end], y[start:end], coef), (False, False, True))
        totals += torch.stack([o.to(torch.float64) for o in out], dim=1)
    return totals


def encode_labels(labels: torch.Tensor) -> str:
    """Labels 0..9 as base64 of a uint8 array (what run JSONs keep per test image)."""
    return base64.b64encode(labels.to("cpu", torch.uint8).numpy().tobytes()).decode("ascii")


def pack_optimizer(pack: _Pack, lr: torch.Tensor, eps: float) -> _KerasAdam:
    """The pack's Adam (per-run lr, shape (n_runs,)), each kernel that a decoupled term of the
    pack decays with that term's coefficient column (the others are never decayed). One place,
    so benchmarks/step_parts.py times the very optimizer train_pack steps."""
    decayed = {name: column for column, term in enumerate(pack.terms) if term.form == "decoupled"
               for name in WEIGHT_GROUPS[term.group]}
    return _KerasAdam([pack.params[n] for n in pack.names], lr, eps, [decayed.get(name) for name in pack.names])


class _Loop:
    """A pack's training state: its stacked runs, Adam and learning rates, coefficient table,
    random keys, training subsets, and each run's history, plateau and divergence."""

    def __init__(self, specs: Sequence[RunSpec], data: MNISTTensors, settings: TrainSettings, device: torch.device):
        n_split = len(data.train_y)
        self.n_runs, self.n_train = len(specs), settings.train_size or n_split
        if self.n_train > n_split:
            raise ValueError(f"data.train_size={self.n_train} exceeds the {n_split} images of the training split")
        self.data, self.settings, self.device = data, settings, device
        self.steps_per_epoch = math.ceil(self.n_train / settings.batch_size)  # the last, partial batch is kept (Keras)
        self.dtype = data.train_x.dtype  # float32 normally; float64 data trains in float64 (equivalence tests)
        self.coef_table = coefficient_table(specs, settings.epochs, self.steps_per_epoch).to(device, self.dtype)
        self.pack = _Pack(specs, device, self.dtype, compile_steps=settings.compile, full_batch=settings.batch_size)
        self.lr = torch.full((self.n_runs,), settings.lr, device=device, dtype=self.dtype)
        self.optimizer = pack_optimizer(self.pack, self.lr, settings.adam_eps)
        self.plateaus = [_Plateau(settings.plateau_factor, settings.plateau_patience) for _ in specs]
        seeds = [s.seed for s in specs]
        self.order_keys = rng.keys_tensor(seeds, ORDER_STREAM, device)
        self.dropout_keys = rng.keys_tensor(seeds, DROPOUT_STREAM, device)
        # data.train_size: each run's own subset of the training split (drawn by its seed); the
        # validation set stays the fixed split. None: every run sees the whole split.
        self.subsets = (rng.permutations(rng.keys_tensor(seeds, SUBSET_STREAM, device), 0, n_split)[:, :self.n_train]
                        if settings.train_size else None)
        self.histories: list[list[dict]] = [[] for _ in specs]
        self.diverged_at: list[int | None] = [None] * self.n_runs
        self.last_epoch: list[list[float]] | None = None  # per run: (ce sum, penalty sum, correct)
        self.train_seconds = 0.0

    def _mask(self, epoch: int, step: int, b: int) -> torch.Tensor:
        if self.settings.dropout > 0:
            return rng.dropout_masks(self.dropout_keys, epoch * self.steps_per_epoch + step, (b, *DROPOUT_SHAPE),
                                     1.0 - self.settings.dropout, self.dtype)
        return torch.ones(self.n_runs, b, *DROPOUT_SHAPE, device=self.device, dtype=self.dtype)

    def _steps(self, epoch: int, on_progress: ProgressFn | None) -> torch.Tensor:
        """One epoch's steps; (runs, 3) float64 sums of ce * b, penalty * b and correct."""
        batch, data = self.settings.batch_size, self.data
        order = rng.permutations(self.order_keys, epoch, self.n_train)
        sums = torch.zeros(self.n_runs, 3, device=self.device, dtype=torch.float64)
        for step in range(self.steps_per_epoch):
            index = order[:, step * batch:(step + 1) * batch]
            if self.subsets is not None:
                index = self.subsets.gather(1, index)
            xb, yb = data.train_x[index], data.train_y[index]
            b = index.shape[1]
            coef = self.coef_table[epoch * self.steps_per_epoch + step]
            ce, penalty, correct = self.pack.train_step(xb, yb, self._mask(epoch, step, b), coef)
            grads = torch.autograd.grad((ce + penalty).sum(), self.optimizer.params)
            self.optimizer.step(grads, coef)
            sums += torch.stack([ce.detach() * b, penalty.detach() * b, correct.to(ce.dtype)], dim=1).double()
            if on_progress is not None and (step % 25 == 0 or step == self.steps_per_epoch - 1):
                on_progress(epoch, step + 1, self.steps_per_epoch)
        return sums

    def epoch(self, epoch: int, on_progress: ProgressFn | None) -> None:
        """Train one epoch, validate, and update each run's history, plateau and divergence."""
        started = time.perf_counter()
        sums = self._steps(epoch, on_progress)
        device_sync(self.device)  # once per epoch, so train_seconds is the real compute time
        train_seconds = time.perf_counter() - started
        self.train_seconds += train_seconds
        end_coef = self.coef_table[min((epoch + 1) * self.steps_per_epoch, len(self.coef_table) - 1)]
        val = _validation_sums(self.pack, self.data.val_x, self.data.val_y, end_coef, self.settings.eval_batch_size)
        # One host sync per epoch.
        train_sums, val_sums, lrs = sums.cpu().tolist(), val.cpu().tolist(), self.lr.cpu().tolist()
        n_val, n_train = len(self.data.val_y), self.n_train
        new_lrs = list(lrs)
        for r in range(self.n_runs):
            if self.diverged_at[r] is not None:
                continue
            ce_sum, pen_sum, correct = train_sums[r]
            v_ce, v_pen, v_correct = val_sums[r]
            record = {
                "epoch": epoch + 1,
                "train_loss": (ce_sum + pen_sum) / n_train, "train_ce": ce_sum / n_train,
                "train_penalty": pen_sum / n_train, "train_acc": 100.0 * correct / n_train,
                "val_loss": v_ce / n_val, "val_objective": (v_ce + v_pen) / n_val,
                "val_acc": 100.0 * v_correct / n_val, "lr": lrs[r],
                "seconds": time.perf_counter() - started, "train_seconds": train_seconds,
            }
            self.histories[r].append(record)
            if not all(math.isfinite(record[k]) for k in ("train_loss", "val_objective")):
                self.diverged_at[r] = epoch + 1
                new_lrs[r] = 0.0  # freeze it: its pack mates go on unaffected
                continue
            new_lrs[r] = self.plateaus[r].new_lr(record["val_objective"], lrs[r])
        self.lr.copy_(torch.tensor(new_lrs, device=self.device, dtype=self.dtype))
        self.last_epoch = train_sums

    def all_diverged(self) -> bool:
        return all(d is not None for d in self.diverged_at)

    def run_views(self) -> list[evaluate.RunView]:
        lrs, n_test = self.lr.cpu().tolist(), len(self.data.test_y)
        return [evaluate.RunView(self.histories[r], self.last_epoch[r] if self.last_epoch else None,
                                 self.pack.run_params(r), lrs[r], self.diverged_at[r] is None, self.n_train, n_test)
                for r in range(self.n_runs)]


def _records(loop: _Loop, evaluation: evaluate.Evaluation, timings: dict, keep_params: bool) -> list[dict]:
    """One result dict per run: status, metrics, history, predictions, timings, (parameters)."""
    settings, pack = loop.settings, loop.pack
    test_labels = encode_labels(loop.data.test_y) if settings.features else None
    peak_mib = peak_memory_mib(loop.device)
    results = []
    for r in range(loop.n_runs):
        status = "ok" if loop.diverged_at[r] is None else "diverged"
        metrics = evaluation.metrics[r]
        if status != "ok":
            metrics = {k: (v if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}
        results.append({"status": status, "diverged_epoch": loop.diverged_at[r], "metrics": metrics,
                        "history": loop.histories[r], **timings, "pack_size": loop.n_runs,
                        "device": str(loop.device), "compiled": bool(settings.compile),
                        # oneDNN splits a CPU reduction by thread count: another count, other last bits
                        "threads": torch.get_num_threads() if loop.device.type == "cpu" else None,
                        "peak_memory_mib": peak_mib})
        if evaluation.predictions is not None:
            results[-1]["test_predictions"] = encode_labels(evaluation.predictions[r])
            results[-1]["test_labels"] = test_labels
        if keep_params:
            results[-1]["params"] = {name: pack.params[name][r].detach().cpu().clone() for name in pack.names}
    return results


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
    loop = _Loop(specs, data, settings, device)
    for epoch in range(settings.epochs):
        loop.epoch(epoch, on_progress)
        if loop.all_diverged():
            break
    eval_started = time.perf_counter()
    evaluation = evaluate.evaluate(loop.pack, data, loop.run_views(), loop.subsets, settings.eval_batch_size,
                                   settings.features)
    device_sync(device)
    timings = {"seconds": time.perf_counter() - started, "train_seconds": loop.train_seconds,
               "eval_seconds": time.perf_counter() - eval_started, "features_seconds": evaluation.features_seconds}
    return _records(loop, evaluation, timings, keep_params)
