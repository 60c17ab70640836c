"""Feature metrics at the end of every run, for the article's "extracts better features" claim.

- `probe_acc_100`, `probe_acc_1000`: test accuracy (%) of a multinomial logistic-regression probe
  on the frozen pool2 features (1,600 per image), standardised with the mean and sd of the probe's
  own training images, fitted on 100 and 1,000 labelled training images. The images are a fixed
  selection (the same for every run and seed: a fixed-key permutation of the training split;
  the 100 are the first 100 of the 1,000). The probe is sklearn's `LogisticRegression(C=1)`
  objective (sum of cross-entropies + ||W||^2 / (2C), intercept unpenalised), minimised in its
  mean form with L-BFGS in float64 on the CPU to a gradient tolerance of 1e-5, at most 200
  iterations (sklearn stops at 1e-4 after at most 100; measured on real features: the weights
  agree with a 600-iteration solve to 3-4 digits and the probe's test accuracy to 0.05 pp, in
  0.1-0.2 s per probe).
- `probe_acc_100_cv`: the 100-label probe without its two arbitrary choices (one fixed subset,
  one fixed penalty). CV_SUBSETS label subsets of 100 training images, each a fixed-key draw (the
  same for every run and seed, none the fixed probe's), and for each subset a ridge classifier
  (sklearn's RidgeClassifier: least squares on one-hot targets) whose penalty is chosen from
  CV_RIDGES by CV_FOLDS-fold cross-validation on the subset's own 100 images (the highest
  held-out accuracy; ties to the stronger penalty), then refitted on all 100: the metric is the
  mean test accuracy (%) of the CV_SUBSETS probes. A ridge probe because its cross-validation is
  exact and nearly free (one eigendecomposition per fold gives every penalty's solution); the
  logistic probe's would take 21 L-BFGS fits per subset, about a minute per run on this
  project's CPU.
- `zero_fraction`: the share of exact zeros in the post-ReLU conv activations A1 and A2 over
  the test set (sparsity; descriptive).
- `noise_acc_0.1`, `noise_acc_0.2`, `noise_acc_0.3`: test accuracy (%) with Gaussian input noise of
  that sd (inputs in [0, 1]) added and clipped to [0, 1]. The noise is one fixed draw (seed
  NOISE_SEED, CPU generator) scaled by each sd, so every run sees the very same noisy images.
Their cost is measured by `l2sweep bench` (a whole-run row); the forward passes they need run
in the same evaluation code as the test set, where each is one declared metric (l2reg.evaluate).
The constants import without torch (l2reg.evaluate names its metrics from them); the functions
import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PROBE_SIZES = (100, 1000)
PROBE_C = 1.0  # sklearn's inverse regularisation strength
PROBE_STREAM_SEED = 20_261_126  # fixed: the probe's images never depend on a run's seed
CV_SIZE = 100  # labelled images per resampled subset
CV_SUBSETS = 5  # resampled label subsets (fixed-key streams 1..5 of PROBE_STREAM_SEED; 0 is the fixed probe's)
CV_FOLDS = 5
# the ridge penalties the cross-validation chooses from, half-decades: on standardised pool2
# features (1,600 of them, so a Gram diagonal of about 1,600) they span nearly no penalty to a
# probe that barely moves from the class means
CV_RIDGES = tuple(float(10 ** (e / 2)) for e in range(-2, 11))
NOISE_SDS = (0.1, 0.2, 0.3)
NOISE_SEED = 1_000_003


def probe_indices(n_train: int, size: int = max(PROBE_SIZES)) -> torch.Tensor:
    """(min(size, n_train),) fixed indices into the training split (CPU, int64)."""
    from l2reg import rng

    keys = rng.keys_tensor([PROBE_STREAM_SEED], 0, "cpu")
    return rng.permutations(keys, 0, n_train)[0, :min(size, n_train)]


def cv_subset_indices(n_train: int) -> torch.Tensor:
    """(CV_SUBSETS, min(CV_SIZE, n_train)) fixed indices into the training split (CPU, int64): row r
    is the start of the fixed-key permutation of stream r + 1 (stream 0 is the fixed probe's)."""
    import torch

    from l2reg import rng

    rows = [rng.permutations(rng.keys_tensor([PROBE_STREAM_SEED], r + 1, "cpu"), 0, n_train)[0, :min(CV_SIZE, n_train)]
            for r in range(CV_SUBSETS)]
    return torch.stack(rows)


def standard_noise(x: torch.Tensor) -> torch.Tensor:
    """z: one fixed standard-normal draw of x's shape (CPU generator, so CPU and GPU runs see the
    same images), on x's device."""
    import torch

    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(NOISE_SEED), dtype=torch.float32)
    return noise.to(x.device, x.dtype)


def noisy_inputs(x: torch.Tensor, sd: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """x + sd * z clipped to [0, 1] (z = standard_noise(x) unless given)."""
    noise = standard_noise(x) if noise is None else noise
    return (x + sd * noise).clamp_(0.0, 1.0)


def standardise(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sd) over dim 0; an sd of 0 (a dead unit) becomes 1, so the feature stays 0."""
    import torch

    with torch.no_grad():
        mean = features.mean(dim=0)
        sd = features.std(dim=0, unbiased=False)
        return mean, torch.where(sd > 0, sd, torch.ones_like(sd))


def fit_probe(features: torch.Tensor, labels: torch.Tensor, c: float = PROBE_C, classes: int = 10,
              max_iter: int = 200, tolerance: float = 1e-5) -> dict:
    """Multinomial logistic regression on standardised features (sklearn's objective with C=c):
    minimise sum_i CE(W f_i + b, y_i) + ||W||^2 / (2c), here divided by n (same minimiser, a
    gradient scale on which one tolerance fits every n). Returns CPU float64 tensors
    {weight (d, classes), bias (classes,), mean (d,), sd (d,)}."""
    import torch
    import torch.nn.functional as F

    x = features.detach().to("cpu", torch.float64)
    y = labels.detach().to("cpu")
    mean, sd = standardise(x)
    z = (x - mean) / sd
    weight = torch.zeros(z.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + weight.square().sum() / (2 * c * len(y))
        loss.backward()
        return loss

    optimizer.step(objective)
    return {"weight": weight.detach(), "bias": bias.detach(), "mean": mean, "sd": sd}


def _standard_targets(features: torch.Tensor, labels: torch.Tensor, classes: int):
    """Standardised features (float64, with their mean and sd) and centred one-hot targets."""
    import torch

    x = features.detach().to("cpu", torch.float64)
    mean, sd = standardise(x)
    targets = torch.nn.functional.one_hot(labels.detach().to("cpu"), classes).double()
    return (x - mean) / sd, mean, sd, targets - targets.mean(dim=0), targets.mean(dim=0)


def fit_ridge_probe(features: torch.Tensor, labels: torch.Tensor, ridge: float, classes: int = 10) -> dict:
    """A ridge classifier (sklearn's RidgeClassifier: least squares on one-hot targets, penalty
    ridge * ||W||^2, intercept unpenalised) on standardised features, solved exactly in its kernel
    form (n <= d here): W = Z^T (Z Z^T + ridge I)^-1 (Y - mean Y). Returns CPU float64 tensors
    {weight (d, classes), bias (classes,), mean (d,), sd (d,)}, as fit_probe."""
    import torch

    z, mean, sd, centred, bias = _standard_targets(features, labels, classes)
    gram = z @ z.T
    dual = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), centred)
    return {"weight": z.T @ dual, "bias": bias, "mean": mean, "sd": sd}


def cross_validated_ridge(features: torch.Tensor, labels: torch.Tensor, ridges=CV_RIDGES, folds: int = CV_FOLDS,
                          classes: int = 10) -> float:
    """The ridge of `ridges` with the highest mean held-out accuracy over `folds` folds of one
    labelled set (n, d), (n,) (fold f: the images at positions i with i % folds == f; the set is in
    random order already); ties go to the larger ridge (the stronger penalty). Each fold's probe is
    standardised on its own training part, so nothing of a held-out fold leaks into it; one
    eigendecomposition per fold gives every ridge's solution. With fewer than 2 images per fold,
    the middle of the grid."""
    import torch

    n = len(labels) - len(labels) % folds  # equal folds (a remainder, with under 100 training images, sits out)
    if n < 2 * folds:
        return float(ridges[len(ridges) // 2])
    positions = torch.arange(n)
    correct = torch.zeros(len(ridges), dtype=torch.float64)
    for fold in range(folds):
        train, held = positions[positions % folds != fold], positions[positions % folds == fold]
        z, mean, sd, centred, bias = _standard_targets(features[train], labels[train], classes)
        values, vectors = torch.linalg.eigh(z @ z.T)
        projected = vectors.T @ centred
        held_z = (features[held].detach().to("cpu", torch.float64) - mean) / sd
        cross = held_z @ z.T @ vectors  # (held, n): held-out features against the eigenbasis
        for r, ridge in enumerate(ridges):
            scores = cross @ (projected / (values + ridge).unsqueeze(1)) + bias
            correct[r] += (scores.argmax(dim=1) == labels[held].to("cpu")).sum()
    best = correct.max()
    return float(max(ridge for ridge, c in zip(ridges, correct) if c == best))


def stack_probes(probes: list[dict], device: torch.device, dtype: torch.dtype) -> dict:
    """Per-run probes -> one dict of (runs, ...) tensors on the device (vmap's batched inputs)."""
    import torch

    return {key: torch.stack([p[key] for p in probes]).to(device, dtype) for key in probes[0]}


def probe_correct(features: torch.Tensor, labels: torch.Tensor, probes: dict) -> torch.Tensor:
    """(probes,) correct predictions of one run's fitted probes, stacked on a leading probe dim
    (one per size of PROBE_SIZES), on a batch of its features (n, d) with labels (n,)."""
    import torch

    standard = (features.unsqueeze(0) - probes["mean"].unsqueeze(1)) / probes["sd"].unsqueeze(1)
    logits = torch.bmm(standard, probes["weight"]) + probes["bias"].unsqueeze(1)
    return (logits.argmax(dim=2) == labels.unsqueeze(0)).sum(dim=1)
