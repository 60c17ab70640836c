"""Penalty terms as a registry over the forward pass: their formulas (DESIGN.md "Definitions")
and which setting selects which term, in one place.

Formulas, with alpha(t) the scheduled coefficient:
- weights:     P = alpha * sum over the scoped kernels of sum(W ** 2)   (biases never);
               Keras `kernel_regularizer=L2(alpha)`, which has no 1/2. Scope `conv` (W_1, W_2),
               `dense` (the two dense kernels) or `all`.
- activations: P = alpha * (1/B) * sum_c sum(A_c ** 2)   (post-ReLU conv outputs, batch of B);
               Keras `activity_regularizer=L2(alpha)` on a Conv2D with activation='relu'.
- norm="l1" replaces the squares by absolute values.
- form="decoupled" (weights only, l2): no loss term; the optimizer step multiplies the scoped
  kernels by 1 - lr(t) * alpha(t) (AdamW's decoupled weight decay, Loshchilov & Hutter).

A `Term` declares what it reads from one run's forward pass (`PARTS`: the kernels of its
parameter group of `l2reg.model.WEIGHT_GROUPS`, the activation taps, the logits, the labels), its
formula `formula(alpha, *those parts)` (alpha(t) applied inside, so each formula keeps its own
order of operations), the `target` value that selects it and the other setting axes it answers to
(`when`). The built-in terms are registrations like any other: an output-side regularizer (a
confidence penalty on the logits, say) is one `register(Term(...))`, and its target becomes a value
of the `target` axis (l2reg.axes reads `targets()`), so config validation and sweeps know it.
`terms_for(setting)` selects a setting's terms, or refuses, naming why, a value or a combination
that no term implements, so nothing declared in l2reg.axes can train as something else. A run
computes only its terms (l2reg.train keeps one coefficient column per term of its pack).
The formulas work on a single model and, unchanged, inside torch.func.vmap over a pack of runs
(there coefficients are 0-d tensors per run and shapes are per run).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from l2reg.model import WEIGHT_GROUPS

PARTS = ("params", "taps", "logits", "labels")  # what a formula can read: its group's kernels, A1/A2, (B, 10), (B,)
NORMS = ("l2", "l1")
# The kernels each `scope` value lets a weight term act on: groups of l2reg.model.WEIGHT_GROUPS.
SCOPES = {"conv": ("conv",), "dense": ("dense",), "all": ("conv", "dense")}


class NotWired(ValueError):
    """A setting value the penalties do not implement (declared in l2reg.axes but not wired here)."""


@dataclass(frozen=True)
class Term:
    """One penalty term. `formula(alpha, *parts named by reads)` gives the term's value for one
    run's batch (None for an optimizer-side term, form="decoupled", which decays `group`'s
    kernels instead). `when` maps setting axes other than target to the values that select the
    term; an axis it does not name does not change it. Terms compare by all their fields, so a
    tuple of terms is a cache key (l2reg.train compiles one objective per tuple)."""

    name: str
    target: str
    reads: tuple[str, ...] = ()
    formula: Callable[..., torch.Tensor] | None = None
    when: Mapping[str, tuple] | tuple[tuple[str, tuple], ...] = ()  # stored as a tuple of (axis, values)
    group: str | None = None  # the WEIGHT_GROUPS group that "params" reads (or a decoupled term decays)
    form: str = "loss"

    def __post_init__(self):
        unknown = [part for part in self.reads if part not in PARTS]
        if unknown:
            raise ValueError(f"term {self.name}: unknown part {unknown[0]!r}: a term reads {', '.join(PARTS)}")
        if "params" in self.reads and self.group not in WEIGHT_GROUPS:
            raise ValueError(f"term {self.name} reads params: its group must be one of {', '.join(WEIGHT_GROUPS)}")
        when = self.when.items() if isinstance(self.when, Mapping) else self.when
        object.__setattr__(self, "when", tuple((axis, tuple(values)) for axis, values in when))

    @property
    def selects(self) -> dict[str, tuple]:
        """Every setting axis (other than target) the term answers to, with the values that select it."""
        return {"form": (self.form,), **dict(self.when)}

    def value(self, alpha, params: Mapping[str, torch.Tensor], taps, logits, labels) -> torch.Tensor:
        """alpha(t) * the term, for one run's batch."""
        parts = {"taps": taps, "logits": logits, "labels": labels}
        if "params" in self.reads:
            parts["params"] = [params[name] for name in WEIGHT_GROUPS[self.group]]
        return self.formula(alpha, *(parts[part] for part in self.reads))


_TERMS: dict[str, Term] = {}
_TARGETS: dict[str, tuple[str, ...]] = {}  # target value -> the term targets it switches on
_REFUSALS: list[tuple[Callable[[Mapping[str, Any]], bool], str]] = []


def register(term: Term) -> Term:
    """Add a term (its target becomes a `target` value if new); returns it."""
    if term.name in _TERMS:
        raise ValueError(f"a penalty term named {term.name!r} is registered already")
    _TERMS[term.name] = term
    _TARGETS.setdefault(term.target, (term.target,))
    return term


def register_target(name: str, targets: tuple[str, ...]) -> None:
    """A `target` value that switches on the terms of several targets (`both`)."""
    _TARGETS[name] = tuple(targets)


def refuse(when: Callable[[Mapping[str, Any]], bool], message: str) -> None:
    """Refuse a combination of setting values that means nothing (`message` may name the values
    as {target}, {norm}, ...)."""
    _REFUSALS.append((when, message))


def unregister(name: str) -> None:
    """Remove a term (a test's own); its target goes too when no other term has it."""
    term = _TERMS.pop(name)
    if not any(t.target == term.target for t in _TERMS.values()) and _TARGETS.get(term.target) == (term.target,):
        del _TARGETS[term.target]


def terms() -> tuple[Term, ...]:
    """Every registered term, in registration order (the order a penalty sums them in)."""
    return tuple(_TERMS.values())


def term(name: str) -> Term:
    return _TERMS[name]


def targets() -> tuple[str, ...]:
    """The values of the `target` axis: every term's target and every composite, in registration order."""
    return tuple(_TARGETS)


def read_axes() -> tuple[str, ...]:
    """The setting axes the registered terms answer to (target first)."""
    found = {"target": None}
    for registered in _TERMS.values():
        found.update(dict.fromkeys(registered.selects))
    return tuple(found)


def _wired_values(axis: str) -> list:
    """The values of an axis some term answers to, in the axis' declared order (l2reg.axes)."""
    if axis == "target":
        return list(_TARGETS)
    from l2reg import axes

    found = list(dict.fromkeys(v for t in _TERMS.values() for v in t.selects.get(axis, ())))
    declared = list(axes.axis(axis).choices() or ()) if axis in {ax.key for ax in axes.AXES} else []
    return [v for v in declared if v in found] + [v for v in found if v not in declared]


def _full_setting(setting: Mapping[str, Any]) -> dict:
    """The setting with every axis the terms read, absent ones at their "off" value (l2reg.axes)."""
    from l2reg import axes

    unknown = sorted(set(setting) - set(read_axes()))
    if unknown:
        raise NotWired(f"setting axis {unknown[0]!r} is declared but not wired into the penalties "
                       f"(l2reg.penalties.terms_for)")
    off = {ax.key: ax.off for ax in axes.SETTING_AXES}
    return {axis: setting.get(axis, off.get(axis)) for axis in read_axes()}


def terms_for(setting: Mapping[str, object]) -> tuple[Term, ...]:
    """The terms a setting switches on, in registration order. `setting` holds setting axes other
    than alpha and schedule (l2reg.axes.setting_without_coefficient); absent ones are off. Raises
    NotWired for an axis or a value no term implements, and for combinations that mean nothing."""
    values = _full_setting(setting)
    for axis, value in values.items():
        wired = _wired_values(axis)
        if value not in wired:
            raise NotWired(f"{axis}={value} is not wired into the penalties: choose one of "
                           f"{', '.join(map(str, wired))}")
    for refused, message in _REFUSALS:
        if refused(values):
            raise NotWired(message.format(**values))
    chosen = []
    for target in _TARGETS[values["target"]]:
        found = [t for t in _TERMS.values() if t.target == target
                 and all(values[axis] in allowed for axis, allowed in t.selects.items())]
        if not found:
            shown = ", ".join(f"{axis}={values[axis]}" for axis in values if axis != "target")
            raise NotWired(f"target={values['target']}: no {target} penalty term is wired for {shown}")
        chosen += found
    return tuple(t for t in _TERMS.values() if t in chosen)


def unread_axes(setting: Mapping[str, object]) -> tuple[str, ...]:
    """The axes of `setting` that none of its terms answers to (they cannot change the run)."""
    read = {"target", *(axis for t in terms_for(setting) for axis in t.selects)}
    return tuple(axis for axis in setting if axis not in read)


def loss_penalty(terms: Iterable[Term], coefficients: torch.Tensor, params: Mapping[str, torch.Tensor],
                 taps: list[torch.Tensor], logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The penalty added to the loss: the sum of the loss-form `terms`, each at its coefficient
    (`coefficients[i]` for `terms[i]`; a decoupled term's column is the optimizer's). Only the
    given terms are computed; with none, exactly 0."""
    total = torch.zeros((), device=coefficients.device, dtype=coefficients.dtype)
    for column, one in enumerate(terms):
        if one.form == "loss":
            total = total + one.value(coefficients[column], params, taps, logits, labels)
    return total


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


def activation_penalty(activations: Iterable[torch.Tensor], alpha, norm: str = "l2") -> torch.Tensor:
    """alpha * (1/B) * sum over layers of sum(A**2) (or |A|), B = the batch size (dim 0)."""
    activations = list(activations)
    batch_size = activations[0].shape[0]
    return alpha * sum(norm_sum(a, norm) for a in activations) / batch_size


def reported_sq_norm(kernels: Iterable[torch.Tensor]) -> float:
    """sum over kernels of sum(W**2), for the run's report: summed in float64 by numpy, whose
    pairwise sum has one order whatever the thread count. torch's float32 sum over the 200k
    dense weights is split across threads, so its last bits would differ between a 2-thread
    in-process run and a 1-thread worker that trained the same weights to the bit."""
    import numpy as np  # numpy comes with torch; imported here to keep this module's import light

    return float(sum(np.square(k.detach().cpu().double().numpy()).sum() for k in kernels))


def _weights(alpha, kernels, norm: str):
    return weight_penalty(kernels, alpha, norm)


def _activations(alpha, taps, norm: str):
    return activation_penalty(taps, alpha, norm)


def _scopes_with(group: str) -> tuple[str, ...]:
    return tuple(scope for scope, groups in SCOPES.items() if group in groups)


# The built-in terms; their order is the order a penalty sums them in (it decides the last bits).
for _group in WEIGHT_GROUPS:
    for _norm in NORMS:
        register(Term(f"weights-{_group}-{_norm}-loss", "weights", ("params",), partial(_weights, norm=_norm),
                      {"norm": (_norm,), "scope": _scopes_with(_group)}, group=_group))
for _norm in NORMS:
    register(Term(f"activations-taps-{_norm}-loss", "activations", ("taps",), partial(_activations, norm=_norm),
                  {"norm": (_norm,)}))
register_target("both", ("weights", "activations"))
for _group in WEIGHT_GROUPS:
    register(Term(f"weights-{_group}-l2-decoupled", "weights", when={"norm": ("l2",), "scope": _scopes_with(_group)},
                  group=_group, form="decoupled"))
refuse(lambda s: s["form"] == "decoupled" and _TARGETS[s["target"]] != ("weights",),
       "form=decoupled is weight decay and acts on kernels only: it needs target=weights (got target={target})")
refuse(lambda s: s["form"] == "decoupled" and s["norm"] != "l2",
       "form=decoupled has no {norm} version: it needs norm=l2")
del _group, _norm
