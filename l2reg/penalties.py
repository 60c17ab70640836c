"""The penalty formulas (DESIGN.md "Definitions") and the penalty terms as data, in one place.

Formulas, with alpha(t) the scheduled coefficient:
- weights:     P = alpha * sum over the scoped kernels of sum(W ** 2)   (biases never);
               Keras `kernel_regularizer=L2(alpha)`, which has no 1/2. Scope `conv` (W_1, W_2),
               `dense` (the two dense kernels) or `all`.
- activations: P = alpha * (1/B) * sum_c sum(A_c ** 2)   (post-ReLU conv outputs, batch of B);
               Keras `activity_regularizer=L2(alpha)` on a Conv2D with activation='relu'.
- norm="l1" replaces the squares by absolute values.
- form="decoupled" (weights only, l2): no loss term; the optimizer step multiplies the scoped
  kernels by 1 - lr(t) * alpha(t) (AdamW's decoupled weight decay, Loshchilov & Hutter).

A term is data: what it acts on (weights of a parameter group the model declares in
`l2reg.model.WEIGHT_GROUPS`, or the activation taps), its norm and its form. `TERMS` is the
fixed catalogue; the training loop keeps one coefficient per term per run per step (0 = off), so
every run, baseline included, goes through the same computation (the same code path) and only
the coefficients differ. `terms_for` maps a run's setting to its terms and refuses what is not
wired, so a value declared in l2reg.axes but unknown here can never train as something else.
The functions work on a single model and, unchanged, inside torch.func.vmap over a pack of runs
(there coefficients are 0-d tensors per run and shapes are per run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from l2reg.model import WEIGHT_GROUPS

NORMS = ("l2", "l1")
TARGET_KINDS = {"weights": ("weights",), "activations": ("activations",), "both": ("weights", "activations")}
SCOPES = {"conv": ("conv",), "dense": ("dense",), "all": ("conv", "dense")}
FORMS = ("loss", "decoupled")
TAPS = "taps"  # the group name of the activation terms (the model's ACTIVATION_TAPS)


class NotWired(ValueError):
    """A setting value the penalties do not implement (declared in l2reg.axes but not wired here)."""


@dataclass(frozen=True)
class Term:
    """One penalty term: kind (weights | activations), the group it acts on, norm and form."""

    kind: str
    group: str
    norm: str
    form: str

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.group}-{self.norm}-{self.form}"


# The catalogue: one coefficient column per term in the training loop's table, in this order.
TERMS: tuple[Term, ...] = (
    *(Term("weights", group, norm, "loss") for group in WEIGHT_GROUPS for norm in NORMS),
    *(Term("activations", TAPS, norm, "loss") for norm in NORMS),
    *(Term("weights", group, "l2", "decoupled") for group in WEIGHT_GROUPS),
)
LOSS_COLUMNS = tuple(i for i, term in enumerate(TERMS) if term.form == "loss")
DECAY_COLUMNS = {term.group: i for i, term in enumerate(TERMS) if term.form == "decoupled"}


def terms_for(setting: Mapping[str, object]) -> tuple[Term, ...]:
    """The terms a setting switches on. `setting` holds the values of every setting axis other
    than alpha and schedule (l2reg.axes): target, norm, form, scope. Raises NotWired for a value
    or an axis this module does not implement, and for combinations that mean nothing."""
    known = {"target", "norm", "form", "scope"}
    unknown = sorted(set(setting) - known)
    if unknown:
        raise NotWired(f"setting axis {unknown[0]!r} is declared but not wired into the penalties "
                       f"(l2reg.penalties.terms_for)")
    target, norm = setting.get("target", "both"), setting.get("norm", "l2")
    form, scope = setting.get("form", "loss"), setting.get("scope", "conv")
    if target not in TARGET_KINDS:
        raise NotWired(f"target={target} is not wired into the penalties: choose one of {', '.join(TARGET_KINDS)}")
    if norm not in NORMS:
        raise NotWired(f"norm={norm} is not wired into the penalties: choose one of {', '.join(NORMS)}")
    if scope not in SCOPES:
        raise NotWired(f"scope={scope} is not wired into the penalties: choose one of {', '.join(SCOPES)}")
    if form not in FORMS:
        raise NotWired(f"form={form} is not wired into the penalties: choose one of {', '.join(FORMS)}")
    kinds = TARGET_KINDS[target]
    if form == "decoupled" and kinds != ("weights",):
        raise NotWired(f"form=decoupled is weight decay and acts on kernels only: it needs target=weights "
                       f"(got target={target})")
    if form == "decoupled" and norm != "l2":
        raise NotWired(f"form=decoupled has no {norm} version: it needs norm=l2")
    terms = []
    for kind in kinds:
        if kind == "weights":
            terms += [Term("weights", group, norm, form) for group in SCOPES[scope]]
        else:
            terms.append(Term("activations", TAPS, norm, form))
    return tuple(terms)


def norm_sum(tensor: torch.Tensor, norm: str) -> torch.Tensor:
    """sum(x ** 2) for l2, sum(|x|) for l1."""
    if norm == "l2":
        return tensor.square().sum()
    if norm == "l1":
        return tensor.abs().sum()
    raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")


def weight_penalty(model: nn.Module | Iterable[torch.Tensor], alpha, norm: str = "l2") -> torch.Tensor:
    """alpha * sum over kernels of sum(W**2) (or |W|). `model` is an ArticleCNN (its conv kernels)
    or an iterable of kernels."""
    kernels = model.conv_kernels() if isinstance(model, nn.Module) else list(model)
    return alpha * sum(norm_sum(kernel, norm) for kernel in kernels)


def reported_sq_norm(kernels: Iterable[torch.Tensor]) -> float:
    """sum over kernels of sum(W**2), for the run's report: summed in float64 by numpy, whose
    pairwise sum has one order whatever the thread count. torch's float32 sum over the 200k
    dense weights is split across threads, so its last bits would differ between a 2-thread
    in-process run and a 1-thread worker that trained the same weights to the bit."""
    import numpy as np  # numpy comes with torch; imported here to keep this module's import light

    return float(sum(np.square(k.detach().cpu().double().numpy()).sum() for k in kernels))


def activation_penalty(activations: Iterable[torch.Tensor], alpha, norm: str = "l2") -> torch.Tensor:
    """alpha * (1/B) * sum over layers of sum(A**2) (or |A|), B = the batch size (dim 0)."""
    activations = list(activations)
    batch_size = activations[0].shape[0]
    return alpha * sum(norm_sum(a, norm) for a in activations) / batch_size


def loss_penalty(params: Mapping[str, torch.Tensor], activations: list[torch.Tensor],
                 coefficients: torch.Tensor) -> torch.Tensor:
    """The penalty added to the loss: sum over the loss-form terms of coefficient * term, with
    `coefficients` indexed like TERMS (0 for the terms a run does not use). Every term is
    computed for every run: a zero coefficient adds exactly 0.0 to the loss and the gradient."""
    total = torch.zeros((), device=coefficients.device, dtype=coefficients.dtype)
    for column in LOSS_COLUMNS:
        term = TERMS[column]
        if term.kind == "weights":
            value = weight_penalty([params[name] for name in WEIGHT_GROUPS[term.group]], coefficients[column],
                                   term.norm)
        else:
            value = activation_penalty(activations, coefficients[column], term.norm)
        total = total + value
    return total


def uses(target: str) -> tuple[bool, bool]:
    """(penalize weights?, penalize activations?) for a target; NotWired for an unknown one."""
    kinds = terms_for({"target": target})
    return any(t.kind == "weights" for t in kinds), any(t.kind == "activations" for t in kinds)
