"""Penalty schedules: alpha(t) = alpha * s(t), t in (fractional) epochs, T = total epochs.

The one place the schedule formulas live (DESIGN.md "Definitions"). Each s(t) is registered by
name; `coefficient` is the public entry point and takes any object with the schedule's fields
(`name`, and `gamma`, `every`, `factor` where used), such as `l2reg.config.ScheduleConfig`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

ScheduleFn = Callable[[Any, float, float], float]
_REGISTRY: dict[str, ScheduleFn] = {}
# Which fields of the schedule config each schedule reads (the rest do not change a run).
PARAMETERS: dict[str, tuple[str, ...]] = {}


def register(name: str, parameters: tuple[str, ...] = ()) -> Callable[[ScheduleFn], ScheduleFn]:
    def add(fn: ScheduleFn) -> ScheduleFn:
        _REGISTRY[name] = fn
        PARAMETERS[name] = parameters
        return fn

    return add


@register("constant")
def constant(cfg: Any, t: float, total: float) -> float:
    return 1.0


@register("exponential", ("gamma",))
def exponential(cfg: Any, t: float, total: float) -> float:
    return math.exp(-cfg.gamma * t)


@register("linear")
def linear(cfg: Any, t: float, total: float) -> float:
    return 1.0 - t / total


@register("cosine")
def cosine(cfg: Any, t: float, total: float) -> float:
    return (1.0 + math.cos(math.pi * t / total)) / 2.0


@register("step", ("every", "factor"))
def step(cfg: Any, t: float, total: float) -> float:
    return cfg.factor ** math.floor(t / cfg.every)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def scale(schedule_cfg: Any, t: float, total: float) -> float:
    """s(t) for the named schedule; t and total in epochs."""
    try:
        fn = _REGISTRY[schedule_cfg.name]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule_cfg.name!r}: choose one of {', '.join(_REGISTRY)}") from None
    return fn(schedule_cfg, t, total)


def coefficient(schedule_cfg: Any, alpha: float, t: float, total: float) -> float:
    """alpha(t) = alpha * s(t): the penalty coefficient at training time t (epochs) of `total`."""
    return alpha * scale(schedule_cfg, t, total)


def label(schedule_cfg: Any) -> str:
    """A readable name with the parameters that matter, e.g. `exponential(gamma=1)`."""
    params = PARAMETERS.get(schedule_cfg.name, ())
    if not params:
        return schedule_cfg.name
    inner = ",".join(f"{p}={getattr(schedule_cfg, p):g}" for p in params)
    return f"{schedule_cfg.name}({inner})"
