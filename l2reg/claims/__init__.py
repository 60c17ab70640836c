"""The article's claims as a registry, as l2reg.axes is for the setting axes: one declaration
each, everything that lists claims derives from it.

A claim (a subclass of :class:`Claim`, one module each: accuracy, overfitting, stability, churn,
features) owns its metrics, its per-setting summary columns, its family corrections (Holm across
the settings of one context), its verdict with reasons, its section and caption in report.md,
its part of the by-axis reading and the article's words. l2reg.analysis runs the registered
claims in order over each context; l2reg.report renders their sections; verdict.json,
summary.csv and the overview list them. Order matters: a claim may read the columns of the
claims before it (overfitting reads accuracy's call).

A new claim is one module with a Claim subclass and one line: ``claims.register(MyClaim())``.
"""

from __future__ import annotations

from l2reg.claims.base import Claim, Context, SectionView, Setting

__all__ = ["Claim", "Context", "SectionView", "Setting", "all_claims", "get", "names", "register", "unregister"]

_EXTRA: list[Claim] = []  # claims registered after the built-in ones, in registration order


def _builtin() -> tuple[Claim, ...]:
    from l2reg.claims import accuracy, churn, features, overfitting, stability

    return accuracy.CLAIM, overfitting.CLAIM, stability.CLAIM, churn.CLAIM, features.CLAIM


def all_claims() -> tuple[Claim, ...]:
    """Every claim, the built-in five first, in the order their columns and sections appear."""
    return (*_builtin(), *_EXTRA)


def names() -> tuple[str, ...]:
    return tuple(claim.name for claim in all_claims())


def get(name: str) -> Claim:
    for claim in all_claims():
        if claim.name == name:
            return claim
    raise KeyError(f"no claim {name!r}: the claims are {', '.join(names())}")


def register(claim: Claim) -> Claim:
    """Add a claim after the registered ones. Its name and columns must be new, and the run metrics
    it reads must be registered (l2reg.evaluate): a claim of a metric no run records would read
    NaN forever."""
    from l2reg import evaluate

    unknown = [m for m in claim.metrics if m not in {metric.name for metric in evaluate.metrics()}]
    if unknown:
        raise ValueError(f"claim {claim.name!r} reads metric(s) {', '.join(unknown)} that no run records: "
                         "register them first (l2reg.evaluate.register)")
    if claim.name in names():
        raise ValueError(f"a claim named {claim.name!r} is registered already")
    taken = {column for other in all_claims() for column in other.columns}
    clash = sorted(taken & set(claim.columns))
    if clash:
        raise ValueError(f"claim {claim.name!r}: column(s) {', '.join(clash)} belong to another claim")
    _EXTRA.append(claim)
    return claim


def unregister(name: str) -> None:
    """Remove a claim added by :func:`register` (the built-in five stay)."""
    _EXTRA[:] = [claim for claim in _EXTRA if claim.name != name]
