"""Composition with the real conf/, Hydra sweep expansion (private API, pinned < 1.4), validation."""

import dataclasses
import re

import pytest

from l2reg.compose import expand_and_compose
from l2reg.config import Config, ConfigError, from_dict, to_dict, validate


def compose(*overrides):
    return expand_and_compose(list(overrides))


def test_defaults_are_the_articles_setup():
    [(point, cfg)] = compose()
    assert point == []
    assert isinstance(cfg, Config)
    assert (cfg.alpha, cfg.target, cfg.norm, cfg.schedule.name, cfg.seeds, cfg.seed) == (0.0, "both", "l2",
                                                                                         "constant", 3, None)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.adam_eps) == (5, 128, 1e-3, 1e-7)
    assert (cfg.train.plateau_factor, cfg.train.plateau_patience, cfg.data.val_fraction) == (0.1, 3, 0.1)


def test_data_root_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("L2SWEEP_DATA", "/somewhere/mnist")
    [(_, cfg)] = compose()
    assert cfg.data.root == "/somewhere/mnist"
    [(_, cfg)] = compose("data.root=/elsewhere")
    assert cfg.data.root == "/elsewhere"


def test_comma_lists_make_a_cartesian_product():
    points = compose("alpha=0.0,1e-4,1e-3", "target=weights,both")
    assert len(points) == 6
    assert sorted({(c.alpha, c.target) for _, c in points}) == sorted(
        (a, t) for a in (0.0, 1e-4, 1e-3) for t in ("weights", "both"))


def test_range_and_choice():
    points = compose("seed=range(4)")
    assert [c.seed for _, c in points] == [0, 1, 2, 3]
    assert [c.alpha for _, c in compose("alpha=choice(1e-4,1e-3)")] == [1e-4, 1e-3]


def test_group_sweep_and_glob():
    points = compose("schedule=constant,exponential", "schedule.gamma=0.5")
    assert [(c.schedule.name, c.schedule.gamma) for _, c in points] == [("constant", 0.5), ("exponential", 0.5)]
    names = sorted(c.schedule.name for _, c in compose("schedule=glob(*)"))
    assert names == ["constant", "cosine", "exponential", "linear", "step"]
    [(_, step)] = compose("schedule=step")
    assert (step.schedule.every, step.schedule.factor) == (2, 0.5)


def test_experiment_sweep_axes_and_command_line_precedence():
    points = compose("experiment=smoke")
    assert sorted(c.alpha for _, c in points) == [0.0, 1e-3]
    assert all(c.name == "smoke" and c.train.epochs == 1 and c.data.train_limit == 3000 for _, c in points)
    points = compose("experiment=smoke", "alpha=5e-4")  # the command line wins over the file's axis
    assert [c.alpha for _, c in points] == [5e-4]


@pytest.mark.parametrize("overrides,message", [
    (["nonsense=1"], "nonsense"),
    (["train.epoch=3"], "epoch"),
    (["alpha=abc"], "alpha"),
    (["schedule=sawtooth"], "sawtooth"),
    (["alpha=[1,"], "alpha"),
])
def test_composition_errors_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose(*overrides)


@pytest.mark.parametrize("change,message", [
    ({"alpha": -1.0}, "alpha=-1.0 is not allowed"),
    ({"alpha": float("nan")}, "alpha=nan"),
    ({"alpha": float("inf")}, "alpha=inf"),
    ({"target": "bias"}, "target=bias is unknown: choose one of weights, activations, both"),
    ({"norm": "l3"}, "norm=l3 is unknown: choose one of l2, l1"),
    ({"seeds": 0}, "seeds=0: must be >= 1"),
    ({"form": "penalty"}, "form=penalty is unknown: choose one of loss, decoupled"),
    ({"scope": "bias"}, "scope=bias is unknown: choose one of conv, dense, all"),
    ({"form": "decoupled", "target": "both"}, "form=decoupled is weight decay and acts on kernels only: it needs "
                                             "target=weights"),
    ({"form": "decoupled", "target": "weights", "norm": "l1"}, "form=decoupled has no l1 version"),
    ({"name": "../../elsewhere"}, "name=../../elsewhere: must be one plain folder name"),
    ({"name": "a/b"}, "name=a/b: must be one plain folder name"),
    ({"name": ".."}, "name=..: must be one plain folder name"),
])
def test_validation_names_the_value_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(dataclasses.replace(Config(), **change))


@pytest.mark.parametrize("section,change,message", [
    ("train", {"epochs": 0}, "train.epochs=0: must be >= 1"),
    ("train", {"batch_size": 0}, "train.batch_size=0"),
    ("train", {"device": "tpu"}, "train.device=tpu is unknown"),
    ("data", {"val_fraction": 1.0}, "data.val_fraction=1.0: must be in"),
    ("data", {"train_limit": 100}, "leaves 90 training images, fewer than one batch"),
    ("data", {"train_size": 100}, "data.train_size=100: must be at least one batch"),
    ("train", {"dropout": 1.0}, "train.dropout=1.0: must be in [0, 1)"),
    ("train", {"dropout": -0.1}, "train.dropout=-0.1: must be in [0, 1)"),
])
def test_validation_of_nested_values(section, change, message):
    cfg = Config()
    cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **change)})
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["seed=range(0)", "alpha=1e-4"], "seed=range(0) is an empty sweep"),
    (["alpha=1e-4", "seed=range(5,2)"], "seed=range(5,2) is an empty sweep"),
])
def test_empty_sweeps_are_refused_instead_of_dropping_every_override(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose(*overrides)


def test_new_axes_compose_and_sweep():
    points = compose("form=loss,decoupled", "scope=conv,all", "train.dropout=0,0.5", "data.train_size=1000")
    assert len(points) == 8
    assert {(c.form, c.scope, c.train.dropout) for _, c in points} == {
        (f, s, d) for f in ("loss", "decoupled") for s in ("conv", "all") for d in (0.0, 0.5)}
    assert all(c.data.train_size == 1000 for _, c in points)


def test_dict_round_trip():
    [(_, cfg)] = compose("schedule=step", "alpha=1e-4", "seed=3")
    assert from_dict(to_dict(cfg)) == cfg


def test_the_schema_writes_every_default_once(monkeypatch):
    """conf/config.yaml holds the defaults list and only what is not a schema default (data.root
    from the environment); composing nothing gives the schema; the training loop's settings take
    the schema's defaults and sweeps copy the same keys."""
    from omegaconf import OmegaConf

    from l2reg import sweep
    from l2reg.config import TrainConfig, default_config_dir
    from l2reg.train import TRAIN_KEYS, TrainSettings

    yaml = OmegaConf.load(default_config_dir() / "config.yaml")
    assert set(yaml) == {"defaults", "data"} and set(yaml.data) == {"root"}
    monkeypatch.setenv("L2SWEEP_DATA", "/mnist")
    [(_, cfg)] = compose()
    assert cfg == dataclasses.replace(Config(), data=dataclasses.replace(Config().data, root="/mnist"))
    assert set(TRAIN_KEYS) == {f.name for f in dataclasses.fields(TrainConfig)} - {"device", "pack_size", "compile"}
    assert all(getattr(TrainSettings(), key) == getattr(TrainConfig(), key) for key in TRAIN_KEYS)
    assert (TrainSettings().train_size, TrainSettings().compile, TrainSettings().features) == (None, False, True)
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=0.5, plateau_patience=7, dropout=0.25),
                                  data=dataclasses.replace(cfg.data, train_size=1000))
    settings = sweep.train_settings(changed, "cpu", 54_000)
    assert (settings.lr, settings.plateau_patience, settings.dropout, settings.train_size) == (0.5, 7, 0.25, 1000)
    assert settings.compile is False  # auto: 5 epochs x 8 steps of 1,000 images, too few to pay for compiling
