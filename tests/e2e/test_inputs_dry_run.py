"""`l2sweep run --dry-run` as a check of the inputs: the committed runs are still found done, the new
axes sweep together, every experiment file composes, and a value declared in l2reg.axes but not wired
into l2reg.penalties is refused before anything trains."""

import dataclasses
import itertools
import math
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import l2reg.axes
import l2reg.train
from l2reg.cli.main import app
from l2reg.config import default_config_dir

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
TITLE = re.compile(r"^(\d+) planned runs -> (.+) \((\d+) done\)$")
EXPERIMENTS = sorted((default_config_dir() / "experiment").glob("*.yaml"))


# Rich wraps at 80 columns when the output is not a terminal: whole lines for the asserts
pytestmark = pytest.mark.usefixtures("wide_console")


def dry_run(*args):
    result = CliRunner().invoke(app, ["run", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    title = TITLE.match(result.output.splitlines()[0])
    assert title, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("┃"))
    columns = [cell.strip() for cell in header.split("┃")[1:-1]]
    rows = [dict(zip(columns, (cell.strip() for cell in line.split("│")[1:-1])))
            for line in result.output.splitlines() if line.startswith("│")]
    return int(title.group(1)), Path(title.group(2)), int(title.group(3)), rows


@pytest.mark.parametrize("name,seeds,runs", [("ablation-quick", None, 12), ("ablation-quick-12", 12, 36)])
def test_the_committed_runs_are_still_found_done(name, seeds, runs):
    """Adding axes must not change the ids of runs whose new axes are off: every committed run is done."""
    folder = RESULTS / name
    if not (folder / "runs").is_dir():
        pytest.skip(f"no committed results/{name}")
    args = ["experiment=ablation-quick", f"results_dir={RESULTS}"]
    if seeds:
        args += [f"seeds={seeds}", f"name={name}"]
    planned, where, done, rows = dry_run(*args)
    assert (planned, where, done) == (runs, folder, runs)
    assert {row["run_id"] for row in rows} == {path.stem for path in (folder / "runs").glob("*.json")}
    assert all(row["done"] == "yes" for row in rows)


def test_the_new_axes_sweep_together(tmp_path):
    planned, where, done, rows = dry_run("form=loss,decoupled", "scope=conv,all", "train.dropout=0,0.5",
                                         "alpha=1e-4", "target=weights", "seed=0", f"results_dir={tmp_path}",
                                         "name=axes")
    assert (planned, where, done) == (10, tmp_path / "axes", 0)  # 8 settings + a baseline per dropout value
    baselines = [row for row in rows if row["alpha"] == "0"]
    settings = [row for row in rows if row["alpha"] != "0"]
    assert sorted(row["dropout"] for row in baselines) == ["0", "0.5"]
    assert all(row["form"] == row["scope"] == "none" for row in baselines)
    assert sorted((row["form"], row["scope"], row["dropout"]) for row in settings) == sorted(
        itertools.product(("loss", "decoupled"), ("conv", "all"), ("0", "0.5")))
    assert len({row["run_id"] for row in rows}) == 10 and all(row["seed"] == "0" for row in rows)
    assert not (tmp_path / "axes").exists()


def expected_runs(experiment: Path) -> int:
    """Runs an experiment file plans, from its YAML alone (expected_runs_of)."""
    return expected_runs_of(yaml.safe_load(experiment.read_text()))


def expected_runs_of(values: dict) -> int:
    """Each combination of the context keys (any swept key that is not a setting axis, e.g.
    data.train_size) is a family with one baseline per seed, plus one run per seed for each
    combination of its setting values with alpha != 0; with point sets, the union of each set's
    regularized runs (a set's keys replacing the sweep's) and the shared baselines. Assumes comma
    lists (no range()/glob()) and swept schedule parameters that the schedule uses."""
    if values.get("points"):
        regularized = 0
        for point in values["points"]:
            one = {**values, "points": [], "sweep": {**(values.get("sweep") or {}), **point}}
            regularized += expected_runs_of(one) - expected_runs_of({**one, "alpha": 0, "sweep": {
                k: v for k, v in one["sweep"].items() if k != "alpha"}})
        return regularized + expected_runs_of({**values, "points": [], "alpha": 0, "sweep": {
            k: v for k, v in (values.get("sweep") or {}).items() if k != "alpha"}})
    sweep = {}
    for key, value in (values.get("sweep") or {}).items():
        bounds = re.fullmatch(r"range\((\d+),\s*(\d+)\)", str(value))  # e.g. the pilot's seed: range(100,103)
        sweep[key] = [str(v) for v in range(int(bounds[1]), int(bounds[2]))] if bounds else str(value).split(",")
    assert not any(re.search(r"[()]", v) for vs in sweep.values() for v in vs), "extend expected_runs: glob()"
    seeds = len(sweep.pop("seed")) if "seed" in sweep else values.get("seeds", 3)
    setting_keys = {ax.key for ax in l2reg.axes.SETTING_AXES}
    is_setting = [key in setting_keys or key.startswith("schedule.") for key in sweep]
    contexts = math.prod(len(v) for v, setting in zip(sweep.values(), is_setting) if not setting)
    keys = [key for key, setting in zip(sweep, is_setting) if setting]
    regularized = [p for p in (dict(zip(keys, point)) for point in itertools.product(*[sweep[k] for k in keys]))
                   if float(p.get("alpha", values.get("alpha", 0))) != 0]
    return contexts * seeds * (len(regularized) + 1)


def test_the_literal_control_is_one_experiment_of_two_point_sets_and_its_runs_are_done():
    """controls-literal's slower decays and its L1 penalty, once two experiment files (Hydra sweeps
    are cartesian products), are now two point sets of one: the same 70 runs, found done."""
    folder = RESULTS / "controls-literal"
    if not (folder / "runs").is_dir():
        pytest.skip("no committed results/controls-literal")
    planned, where, done, rows = dry_run("experiment=controls-literal", f"results_dir={RESULTS}")
    assert (planned, where, done) == (70, folder, 70)
    assert {row["run_id"] for row in rows} == {path.stem for path in (folder / "runs").glob("*.json")}
    # the same sweep from the command line: --point replaces the file's point sets
    by_hand = CliRunner().invoke(app, ["run", "--dry-run", "experiment=controls-literal", f"results_dir={RESULTS}",
                                       "--point", "schedule=exponential schedule.gamma=0.1,0.3",
                                       "--point", "norm=l1"])
    assert by_hand.exit_code == 0 and by_hand.output == CliRunner().invoke(
        app, ["run", "--dry-run", "experiment=controls-literal", f"results_dir={RESULTS}"]).output
    one_set = dry_run("experiment=controls-literal", f"results_dir={RESULTS}", "--point", "norm=l1")
    assert one_set[0] == 30  # 10 baselines and 2 x 10 L1 runs
    bad = CliRunner().invoke(app, ["run", "--dry-run", "alpha=1e-4", "--point", "norm=l1 schedule=exp(("])
    assert bad.exit_code == 2 and "malformed override" in bad.output and "in point" in bad.output


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_every_experiment_file_composes_and_plans(experiment, tmp_path):
    """A typo in an experiment file shows here, in `make test`, not hours into `make ablation`."""
    planned, where, done, rows = dry_run(f"experiment={experiment.stem}", f"results_dir={tmp_path}")
    assert where == tmp_path / yaml.safe_load(experiment.read_text())["name"]
    assert planned == len(rows) == expected_runs(experiment) and done == 0
    assert not where.exists()


def test_there_are_experiment_files():
    assert {"ablation", "ablation-quick", "smoke"} <= {path.stem for path in EXPERIMENTS}


@pytest.fixture
def bias_declared(monkeypatch):
    """`target=bias` declared in l2reg.axes (as a half-finished change would) but not in l2reg.penalties."""
    target = l2reg.axes.axis("target")
    declared = dataclasses.replace(target, allowed=(*target.choices(), "bias"))
    new_axes = tuple(declared if ax is target else ax for ax in l2reg.axes.AXES)
    monkeypatch.setattr(l2reg.axes, "AXES", new_axes)
    monkeypatch.setattr(l2reg.axes, "SETTING_AXES", tuple(ax for ax in new_axes if ax.role == "setting"))
    trained = []
    monkeypatch.setattr(l2reg.train, "train_pack", lambda *args, **kwargs: trained.append(args) or [])
    return trained


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_a_declared_but_unwired_value_is_refused_before_training(dry, bias_declared, tiny_mnist, tmp_path):
    assert "bias" in l2reg.axes.axis("target").choices()  # declared: validation of the choices passes it
    args = ["run", *(["--dry-run"] if dry else []), "target=bias", "alpha=1e-3", "seeds=1",
            f"data.root={tiny_mnist}", f"results_dir={tmp_path / 'res'}", "name=x", "train.epochs=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: target=bias is not wired into the penalties: choose one of weights, "
                                     "activations, both")
    assert bias_declared == [] and not (tmp_path / "res").exists()
