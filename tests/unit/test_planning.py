"""Planning that scales: one Hydra compose per setting and per-setting work in sweep.plan give the
run ids, configs and order of composing and planning every point from scratch (the reference
below is the planner as it was, rebuilt from Hydra directly); inputs checked at planning
(data.train_size against the split). Speed is `l2sweep bench`'s planning row, never a timed test."""

from __future__ import annotations

from dataclasses import replace

import hydra
import pytest
from typer.testing import CliRunner

from l2reg import axes, runner, sweep
from l2reg.bench import planning
from l2reg.cli.main import app
from l2reg.compose import _one_line, expand_and_compose
from l2reg.config import ConfigError, default_config_dir, validate


def compose_every_point(overrides: list[str]) -> list[tuple[list[str], object]]:
    """The reference: every point of BasicSweeper's product composed by Hydra, as the planner did
    before composing once per setting (the sweep file's axes appended as expand_and_compose does)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from l2reg.compose import _register_schema

    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(default_config_dir()), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())

            def cartesian(items):
                batches = BasicSweeper.split_arguments(parser.parse_overrides(items), None)
                return [list(point) for point in batches[0]] if batches and batches[0] else [[]]

            overrides = list(overrides)
            first = compose(config_name="config", overrides=cartesian(overrides)[0])
            given = {parsed.key_or_group for parsed in parser.parse_overrides(overrides)}
            overrides += [f"{key}={values}" for key, values in first.sweep.items() if key not in given]
            return [(point, OmegaConf.to_object(compose(config_name="config", overrides=point)))
                    for point in cartesian(overrides)]
    finally:
        GlobalHydra.instance().clear()


def plan_every_run(configs) -> list[sweep.PlannedRun]:
    """The reference plan: every run validated, canonicalised and hashed from scratch."""
    planned, baselines = {}, {}
    for cfg in configs:
        validate(cfg)
        for seed in [cfg.seed] if cfg.seed is not None else list(range(cfg.seeds)):
            run = sweep.canonical(replace(cfg, seed=seed))
            base = sweep.canonical(replace(run, alpha=0.0))
            baselines.setdefault(sweep.run_id(base), sweep.PlannedRun(sweep.run_id(base), base))
            if not axes.is_baseline(run):
                planned.setdefault(sweep.run_id(run), sweep.PlannedRun(sweep.run_id(run), run))
    return list(baselines.values()) + list(planned.values())


@pytest.fixture
def composes(monkeypatch):
    """Counts Hydra composes (expand_and_compose imports hydra.compose when called)."""
    calls = []
    real = hydra.compose

    def counting(*args, **kwargs):
        calls.append(kwargs.get("overrides"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hydra, "compose", counting)
    return calls


SWEEPS = {
    "ablation": ["experiment=ablation"],  # 24 settings x seeds=10, the sweep file's axes
    # a config-group axis and a nested key (controls-literal's first point set, written out)
    "literal-decay": ["alpha=1e-4,1e-3", "target=both", "schedule=exponential", "schedule.gamma=0.1,0.3", "seeds=10"],
    "seed-range": ["alpha=1e-3", "seed=range(50)"],
    "seeds-and-axes": ["alpha=1e-4,1e-3", "target=weights,both", "schedule=constant,exponential",
                       "train.dropout=0.0,0.5", "seeds=3"],
    "choice-glob": ["alpha=choice(1e-4,1e-3)", "schedule=glob(c*)", "seed=range(3)"],
    "seed-first": ["seed=range(4)", "alpha=1e-4,1e-3", "target=weights,both"],  # seed varies slowest
    "file-seeds": ["experiment=controls-decay-pilot"],  # seed=range(100,103) from the experiment file
    "seed-null": ["alpha=1e-3", "seed=0,null,2"],
    "interpolated-seed": ["alpha=1e-4,1e-3", "seed=range(3)", "name='run-${seed}'"],  # reads the seed elsewhere
}


@pytest.mark.parametrize("overrides", SWEEPS.values(), ids=SWEEPS.keys())
def test_one_compose_per_setting_plans_what_composing_every_point_planned(overrides):
    fast, slow = expand_and_compose(list(overrides)), compose_every_point(overrides)
    assert [point for point, _ in fast] == [point for point, _ in slow]  # BasicSweeper's order
    assert [cfg for _, cfg in fast] == [cfg for _, cfg in slow]
    reference = plan_every_run([cfg for _, cfg in slow])
    for configs in ([cfg for _, cfg in fast], [cfg for _, cfg in slow]):  # shared settings, and none shared
        runs = sweep.plan(configs)
        assert [run.run_id for run in runs] == [run.run_id for run in reference]
        assert [run.config for run in runs] == [run.config for run in reference]
        assert all(run.run_id == sweep.run_id(run.config) for run in runs)


def test_point_sets_plan_the_union_of_their_cartesian_sweeps_with_one_baseline():
    """controls-literal's two point sets plan what its two cartesian halves planned together: the
    same runs, each once, the baselines shared (and --point gives the same as the file)."""
    common = ["alpha=1e-4,1e-3", "target=both", "seeds=10", "name=controls-literal"]
    halves = [[*common, "schedule=exponential", "schedule.gamma=0.1,0.3"], [*common, "norm=l1"]]
    reference = plan_every_run([cfg for half in halves for _, cfg in compose_every_point(half)])
    from_file = sweep.plan([cfg for _, cfg in expand_and_compose(["experiment=controls-literal"])])
    by_hand = sweep.plan([cfg for _, cfg in expand_and_compose(
        common, None, [["schedule=exponential", "schedule.gamma=0.1,0.3"], ["norm=l1"]])])
    assert len(reference) == 70 and sum(run.is_baseline for run in reference) == 10
    for planned in (from_file, by_hand):  # the configs differ only in the non-semantic sweep/points keys
        assert [run.run_id for run in planned] == [run.run_id for run in reference]
        assert [sweep.semantic(run.config) for run in planned] == [sweep.semantic(run.config) for run in reference]
    # the command line's own keys win over a point's: norm=l2 collapses the L1 set onto L2 runs
    overruled = sweep.plan([cfg for _, cfg in expand_and_compose(["experiment=controls-literal", "norm=l2"])])
    assert {run.config.norm for run in overruled} == {"l2"}


def test_the_seed_is_substituted_only_where_nothing_else_reads_it(composes):
    points = expand_and_compose(["alpha=1e-4,1e-3", "seed=range(50)"])
    assert len(points) == 100 and len(composes) == 2  # one per alpha
    assert [cfg.seed for _, cfg in points[:3]] == [0, 1, 2] and points[0][1].train is points[1][1].train
    composes.clear()
    points = expand_and_compose(["alpha=1e-3", "seed=range(4)", "name='run-${seed}'"])
    assert [cfg.name for _, cfg in points] == ["run-0", "run-1", "run-2", "run-3"]
    assert len(composes) == 4  # the name reads the seed: every point composed
    composes.clear()
    expand_and_compose(["experiment=ablation"])
    assert len(composes) == 1 + 24  # the file's sweep axes read first, then each setting once


@pytest.mark.parametrize("overrides,message", [
    (["alpha=1e-3", "seed=3,-1"], "seed=-1: must be >= 0"),  # a substituted point, refused as before
    (["alpha=1e-3,-1", "seed=range(3)"], "alpha=-1.0 is not allowed"),
    (["alpha=1e-3", "seed=0,abc"], "seed"),  # not a plain seed: composed, Hydra's error
])
def test_errors_are_those_of_planning_every_run(overrides, message):
    with pytest.raises(ConfigError, match=message) as fast:
        sweep.plan([cfg for _, cfg in expand_and_compose(overrides)])
    with pytest.raises(Exception) as slow:
        plan_every_run([cfg for _, cfg in compose_every_point(overrides)])
    expected = str(slow.value) if isinstance(slow.value, ConfigError) else _one_line(slow.value)
    assert str(fast.value) == expected


def test_the_bench_planning_row_plans_a_seed_sweep():
    row = planning(200)
    assert row["runs"] == 200 and row["name"] == "planning, alpha=1e-3 seed=range(100)"
    assert row["runs_per_s"] == pytest.approx(200 / row["seconds"])
    assert row["us_per_run"] == pytest.approx(row["seconds"] / 200 * 1e6) and row["compose_seconds"] > 0


@pytest.mark.parametrize("extra,split", [
    ([], 540),  # 600 images less 60 for validation
    (["data.train_limit=300"], 270),
    (["data.val_fraction=0.5"], 300),
])
def test_a_train_size_larger_than_the_split_is_refused_at_planning(tiny_mnist, tmp_path, extra, split):
    base = [f"data.root={tiny_mnist}", f"results_dir={tmp_path / 'results'}", "alpha=1e-3", "seed=0", *extra]
    assert runner.plan_sweep([*base, f"data.train_size={split}"]).planned
    with pytest.raises(ConfigError) as refused:
        runner.plan_sweep([*base, f"data.train_size={split},{split + 1}"])
    message = str(refused.value)
    assert message.startswith(f"data.train_size={split + 1} is larger than the training split: {split} images")
    assert "\n" not in message and f"choose at most {split}" in message
    assert not (tmp_path / "results").exists()


def test_the_split_size_comes_from_the_idx_header_without_loading(tiny_mnist, tmp_path, monkeypatch):
    import l2reg.data

    monkeypatch.setattr(l2reg.data, "load_mnist", lambda *a, **k: pytest.fail("MNIST loaded to plan"))
    assert sweep.raw_train_images(tiny_mnist) == 600
    assert sweep.raw_train_images(tmp_path / "nowhere") == 60_000  # what torchvision would download
    (tmp_path / "bad" / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "bad" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not idx")
    assert sweep.raw_train_images(tmp_path / "bad") is None  # the loader says what is wrong
    missing = [f"data.root={tmp_path / 'nowhere'}", "alpha=1e-3", "seed=0"]
    assert runner.plan_sweep([*missing, "data.train_size=54000"]).planned
    with pytest.raises(ConfigError, match="training split: 54,000 images"):
        runner.plan_sweep([*missing, "data.train_size=54001"])


def test_the_cli_refuses_a_train_size_larger_than_the_split_before_writing(tiny_mnist, tmp_path):
    results = tmp_path / "results"
    result = CliRunner().invoke(app, ["run", f"data.root={tiny_mnist}", f"results_dir={results}", "name=big",
                                      "alpha=1e-3", "seed=0", "train.epochs=1", "data.train_size=541"])
    assert result.exit_code == 2, result.output
    assert "data.train_size=541 is larger than the training split: 540 images" in result.output
    assert not results.exists()
