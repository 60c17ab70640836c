"""The final evaluation of a trained pack, as declared metrics: one declaration per metric.

A `Metric` says what it is computed from and how it reduces; its name is the run record's
`metrics` key and (unless column=False) its runs.csv column, in registration order:
`metric_columns()` is the one list l2reg.report's run columns come from. Two kinds:
- pass metrics (`per_batch`): computed on every batch of one image set (`over`) from what one
  forward pass of the run gives (`Batch`: logits, labels, predictions, activation taps, features,
  the run's fitted probes), summed over the batches in float64, then `reduce(total, images)`.
  Image sets: "test" (the test images), "train" (each run's own training images: all of the
  split, or its data.train_size subset), and `noise_set(sd)` (the test images with Gaussian
  input noise of that sd, l2reg.features). Each set takes one forward pass per batch, whatever
  the number of its metrics.
- run metrics (`value`): read from the trained run (`RunView`: its history, last epoch, final
  parameters and learning rate, sizes).
`features=True` marks the feature metrics: computed only with TrainSettings.features (their
cost, the probe fits and the noisy passes, is the record's `features_seconds`). A new metric is
one `register(Metric(...))`, from anywhere (a test file too): it lands in every run record
trained afterwards and, appended, in metric_columns(). Importing this module is cheap and does
nothing: torch is imported by the functions that evaluate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Callable, Sequence

from l2reg import features

TEST, TRAIN = "test", "train"


def noise_set(sd: float) -> str:
    """The image set of the test images with Gaussian input noise of this sd."""
    return f"noise_{sd:g}"


def image_sets() -> tuple[str, ...]:
    return (TEST, TRAIN, *(noise_set(sd) for sd in features.NOISE_SDS))


# Reductions: (float64 total over the image set, its number of images) -> the metric's value.
def mean(total: float, images: int) -> float:
    return total / images


def percent(total: float, images: int) -> float:
    return 100.0 * total / images


def per_tap_value(total: float, images: int) -> float:
    """A count over every activation-tap value of every image, as a fraction of them."""
    from l2reg.model import activation_units

    return total / (activation_units() * images)


class Batch:
    """What one forward pass of one run on one batch gives a pass metric (inside vmap for a pack):
    logits (B, 10), labels (B,), predictions (B,), taps [A1, A2] (post-ReLU conv outputs),
    features (B, 1600: pool2, the probes' input) and probe_correct (one count per probe of
    PROBES, when the run's probes were fitted). Derived values are computed once per batch."""

    def __init__(self, template, params: dict, images, labels, probes: dict | None = None):
        from torch.func import functional_call

        self.logits, self.taps, self.features = functional_call(template, params, (images,),
                                                                {"return_features": True})
        self.labels, self.probes = labels, probes

    @cached_property
    def predictions(self):
        return self.logits.argmax(dim=1)

    @cached_property
    def correct(self):
        return (self.predictions == self.labels).sum()

    @cached_property
    def probe_correct(self):
        return features.probe_correct(self.features, self.labels, self.probes)


@dataclass
class RunView:
    """What a trained run gives a run metric."""

    history: list[dict]  # per-epoch records up to the end (or the epoch it diverged)
    last_epoch: list[float] | None  # (ce sum, penalty sum, correct) over the pack's last epoch
    params: dict  # name -> the run's final parameter tensor (on the device)
    lr: float  # its final learning rate
    ok: bool  # trained to the end without diverging
    n_train: int
    n_test: int

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


@dataclass(frozen=True)
class Metric:
    """One metric: `per_batch(Batch)` on the image set `over` and `reduce(total, images)`, or
    `value(RunView)`. reduce gets a float for a scalar per_batch and a float64 CPU tensor (the
    summed shape) otherwise, and returns a float (None: not available)."""

    name: str
    per_batch: Callable[[Batch], Any] | None = None
    over: str = TEST
    reduce: Callable[[Any, int], float | None] = mean
    value: Callable[[RunView], Any] | None = None
    features: bool = False  # a feature metric: only with TrainSettings.features
    probes: bool = False  # reads Batch.probe_correct: the probes are fitted first
    column: bool = True  # a runs.csv column (final_lr is in the record only)

    def __post_init__(self):
        if (self.per_batch is None) == (self.value is None):
            raise ValueError(f"metric {self.name}: give per_batch (a pass metric) or value (a run metric)")
        if self.per_batch is not None and self.over not in image_sets():
            raise ValueError(f"metric {self.name}: over={self.over!r} is not an image set ({', '.join(image_sets())})")


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in _METRICS:
        raise ValueError(f"a metric named {metric.name!r} is registered already")
    _METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    del _METRICS[name]


def metrics() -> tuple[Metric, ...]:
    return tuple(_METRICS.values())


def metric_columns() -> list[str]:
    """The runs.csv metric columns, in registration order."""
    return [m.name for m in _METRICS.values() if m.column]


def batches(n: int, size: int):
    """(start, end) of consecutive batches of `size` over n items, the last one partial."""
    return ((start, min(start + size, n)) for start in range(0, n, size))


@dataclass
class Evaluation:
    metrics: list[dict]  # per run: name -> value, in registration order
    predictions: Any  # (runs, n_test) uint8 CPU tensor of test predictions, or None (features off)
    features_seconds: float  # the probe fits and the passes only feature metrics need


def _features_of(template):
    def feats(params, x):
        from torch.func import functional_call

        return functional_call(template, params, (x,), {"return_features": True})[2]

    return feats


PROBES = (*(f"fixed_{size}" for size in features.PROBE_SIZES),
          *(f"cv_{r}" for r in range(features.CV_SUBSETS)))  # Batch.probe_correct's order


def _frozen_features(pack, data, index, batch_size: int):
    """(runs, len(index), 1600) pool2 features of the training images `index` (a CPU index tensor),
    and their labels."""
    import torch

    index = index.to(data.train_x.device)
    x, y = data.train_x[index], data.train_y[index]
    fn = _features_of(pack.template)
    return torch.cat([pack.map(fn, (x[s:e],), (False,)) for s, e in batches(len(y), batch_size)], dim=1), y


def fit_probes(pack, data, batch_size: int) -> dict:
    """Each run's probes, in PROBES' order: one per size of features.PROBE_SIZES on the fixed probe
    images, then one per resampled subset with its cross-validated ridge (features.py); fitted on the
    frozen features, stacked (runs, probes, ...) on the device. `pack` maps a function over its runs
    (l2reg.train's pack). The fixed probes' features are a pass of their own, batched as always."""
    import torch

    with torch.inference_mode():
        feats, y = _frozen_features(pack, data, features.probe_indices(len(data.train_y)), batch_size)
        subsets = features.cv_subset_indices(len(data.train_y))
        cv_feats, cv_y = _frozen_features(pack, data, subsets.reshape(-1), batch_size)
        cv_feats = cv_feats.reshape(pack.size, *subsets.shape, -1)
        cv_y = cv_y.reshape(subsets.shape)
        per_run = []
        with torch.inference_mode(False):
            for r in range(pack.size):
                fitted = [features.fit_probe(feats[r, :size].clone(), y[:size].clone())
                          for size in features.PROBE_SIZES]
                fitted += [features.fit_ridge_probe(cv_feats[r, s], cv_y[s],
                                                    features.cross_validated_ridge(cv_feats[r, s], cv_y[s]))
                           for s in range(len(subsets))]
                per_run.append({key: torch.stack([f[key] for f in fitted]) for key in fitted[0]})
        return features.stack_probes(per_run, data.train_x.device, data.train_x.dtype)


def _images(data, subsets, over: str, noise: dict):
    """(images, labels, per_run) of an image set; per_run: a leading run dim (each run's own)."""
    if over == TEST:
        return data.test_x, data.test_y, False
    if over == TRAIN:
        if subsets is None:
            return data.train_x, data.train_y, False
        return data.train_x[subsets], data.train_y[subsets], True
    if "z" not in noise:  # one draw for every noise level
        noise["z"] = features.standard_noise(data.test_x)
    sd = next(sd for sd in features.NOISE_SDS if noise_set(sd) == over)
    return features.noisy_inputs(data.test_x, sd, noise["z"]), data.test_y, False


def _pass(pack, declared: Sequence[Metric], x, y, per_run: bool, probes, batch_size: int, predictions: bool):
    """Float64 totals (runs, ...) of each metric's per_batch over an image set, and the
    predictions (runs, n) uint8 when asked for."""
    import torch

    def per_run_batch(params, xb, yb, *run_probes):
        batch = Batch(pack.template, params, xb, yb, *run_probes)
        out = tuple(m.per_batch(batch) for m in declared)
        return (*out, batch.predictions) if predictions else out

    extra, extra_batched = ((probes,), (True,)) if probes is not None else ((), ())
    totals, kept = None, []
    with torch.inference_mode():
        for start, end in batches(y.shape[-1], batch_size):
            xb, yb = (x[:, start:end], y[:, start:end]) if per_run else (x[start:end], y[start:end])
            out = pack.map(per_run_batch, (xb, yb, *extra), (per_run, per_run, *extra_batched))
            if predictions:
                *out, batch_predictions = out
                kept.append(batch_predictions.to(torch.uint8))
            if totals is None:
                totals = [torch.zeros(o.shape, dtype=torch.float64, device=o.device) for o in out]
            for total, o in zip(totals, out):
                total += o.double()
    return totals, torch.cat(kept, dim=1) if predictions else None


def evaluate(pack, data, runs: Sequence[RunView], subsets, batch_size: int, with_features: bool) -> Evaluation:
    """Every registered metric (the feature metrics only with_features) of every run of a trained
    pack. `subsets` (runs, n_train) holds each run's training images, or None for the whole split."""
    from l2reg.device import sync

    active = [m for m in _METRICS.values() if with_features or not m.features]
    features_seconds = 0.0
    probes = None
    if any(m.probes for m in active):
        started = time.perf_counter()
        probes = fit_probes(pack, data, batch_size)
        features_seconds += time.perf_counter() - started
    totals, sizes, predictions, noise = {}, {}, None, {}
    for over in dict.fromkeys(m.over for m in active if m.per_batch is not None):
        declared = [m for m in active if m.per_batch is not None and m.over == over]
        started = time.perf_counter()
        x, y, per_run = _images(data, subsets, over, noise)
        keep = with_features and over == TEST
        sums, kept = _pass(pack, declared, x, y, per_run, probes if any(m.probes for m in declared) else None,
                           batch_size, keep)
        totals.update({m.name: s.cpu() for m, s in zip(declared, sums)})
        sizes[over] = y.shape[-1]
        predictions = kept.cpu() if keep else predictions
        if all(m.features for m in declared):
            sync(data.test_x.device)
            features_seconds += time.perf_counter() - started
    values = []
    for r, run in enumerate(runs):
        row = {}
        for m in active:
            if m.value is not None:
                row[m.name] = m.value(run)
            else:
                total = totals[m.name][r]
                row[m.name] = m.reduce(total.item() if total.dim() == 0 else total, sizes[m.over])
        values.append(row)
    return Evaluation(values, predictions, features_seconds)


def _cross_entropy_sum(batch: Batch):
    from l2reg.model import cross_entropy

    return cross_entropy(batch.logits, batch.labels, reduction="sum")


def _correct(batch: Batch):
    return batch.correct


def _sq_norm(run: RunView, group: str) -> float:
    from l2reg.model import WEIGHT_GROUPS
    from l2reg.penalties import reported_sq_norm

    return reported_sq_norm(run.params[name] for name in WEIGHT_GROUPS[group])


def _tap_sq_sum(batch: Batch):
    """Sum over the batch of each image's sum of A^2 (A1 and A2)."""
    return sum(tap.square().sum() for tap in batch.taps)


def _tap_zeros(batch: Batch):
    return sum((tap == 0).sum() for tap in batch.taps)


def _probe_correct(batch: Batch, index: int):
    return batch.probe_correct[index]


def _cv_probes_correct(batch: Batch):
    """The resampled probes' correct predictions, summed over the subsets."""
    return batch.probe_correct[len(features.PROBE_SIZES):].sum()


def _mean_percent_of_subsets(total: float, images: int) -> float:
    return 100.0 * total / (images * features.CV_SUBSETS)


def _last_penalty(run: RunView) -> float | None:
    """The training penalty per image over the last epoch (alpha(t) * P, averaged over its steps)."""
    return run.last_epoch[1] / run.n_train if run.last_epoch else None


# The built-in metrics, in runs.csv column order.
register(Metric("test_acc", _correct, reduce=percent))
register(Metric("test_loss", _cross_entropy_sum))
register(Metric("val_acc", value=lambda run: run.last.get("val_acc")))
register(Metric("val_loss", value=lambda run: run.last.get("val_loss")))
register(Metric("train_acc", _correct, over=TRAIN, reduce=percent))
register(Metric("train_loss", _cross_entropy_sum, over=TRAIN))
register(Metric("penalty", value=_last_penalty))
register(Metric("weight_sq_norm", value=partial(_sq_norm, group="conv")))
register(Metric("dense_weight_sq_norm", value=partial(_sq_norm, group="dense")))
register(Metric("final_lr", value=lambda run: run.lr if run.ok else None, column=False))
register(Metric("activation_sq_norm", _tap_sq_sum, features=True))
for _index, _size in enumerate(features.PROBE_SIZES):
    register(Metric(f"probe_acc_{_size}", partial(_probe_correct, index=_index), reduce=percent, features=True,
                    probes=True))
register(Metric("probe_acc_100_cv", _cv_probes_correct, reduce=_mean_percent_of_subsets, features=True,
                probes=True))
register(Metric("zero_fraction", _tap_zeros, reduce=per_tap_value, features=True))
for _sd in features.NOISE_SDS:
    register(Metric(f"noise_acc_{_sd:g}", _correct, over=noise_set(_sd), reduce=percent, features=True))
register(Metric("n_test", value=lambda run: run.n_test))
register(Metric("n_train", value=lambda run: run.n_train))
del _index, _size, _sd
