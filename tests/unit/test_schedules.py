"""Each schedule's s(t) at chosen t (epochs), T = total epochs."""

import math

import pytest

from l2reg.config import ScheduleConfig
from l2reg.schedules import coefficient, label, names, scale


@pytest.mark.parametrize("cfg,t,total,expected", [
    (ScheduleConfig("constant"), 3.7, 5, 1.0),
    (ScheduleConfig("exponential", gamma=0.5), 0.0, 5, 1.0),
    (ScheduleConfig("exponential", gamma=0.5), 2.0, 5, math.exp(-1.0)),
    (ScheduleConfig("linear"), 1.25, 5, 0.75),
    (ScheduleConfig("linear"), 0.0, 5, 1.0),
    (ScheduleConfig("cosine"), 2.5, 5, 0.5),
    (ScheduleConfig("cosine"), 0.0, 5, 1.0),
    (ScheduleConfig("cosine"), 5.0, 5, 0.0),
    (ScheduleConfig("step", every=2, factor=0.5), 1.99, 5, 1.0),
    (ScheduleConfig("step", every=2, factor=0.5), 3.9, 5, 0.5),
    (ScheduleConfig("step", every=2, factor=0.5), 4.0, 5, 0.25),
])
def test_scale(cfg, t, total, expected):
    assert scale(cfg, t, total) == pytest.approx(expected, abs=1e-12)


def test_coefficient_is_alpha_times_scale():
    cfg = ScheduleConfig("exponential", gamma=1.0)
    assert coefficient(cfg, 1e-3, 1.0, 5) == pytest.approx(1e-3 * math.exp(-1.0))


def test_registry_and_labels():
    assert set(names()) == {"constant", "exponential", "linear", "cosine", "step"}
    assert label(ScheduleConfig("exponential", gamma=0.5)) == "exponential(gamma=0.5)"
    assert label(ScheduleConfig("step", every=2, factor=0.5)) == "step(every=2,factor=0.5)"
    assert label(ScheduleConfig("cosine")) == "cosine"
    with pytest.raises(ValueError, match="unknown schedule"):
        scale(ScheduleConfig("sawtooth"), 0, 5)
