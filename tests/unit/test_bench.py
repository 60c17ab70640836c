"""`l2sweep bench` on tiny data: every measurement present, ratios against the reference computed
from the timed seconds, the config read (not restated), the file written."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from l2reg.bench import run_bench
from l2reg.cli.main import app
from l2reg.compose import expand_and_compose


def config(tiny_mnist, *overrides):
    [(_, cfg)] = expand_and_compose([f"data.root={tiny_mnist}", "alpha=1e-4", "target=both", "train.epochs=1",
                                     "train.eval_batch_size=100", *overrides])
    return replace(cfg, seed=1)


def test_run_bench_measures_reference_packs_and_whole_runs(tiny_mnist):
    cfg = config(tiny_mnist, "train.batch_size=32")
    result = run_bench(cfg, torch.device("cpu"), steps=3, pack_sizes=[1, 2], compiled=False, whole_run=True)
    names = [row["name"] for row in result["rows"]]
    assert names == ["plain DataLoader loop", "l2sweep, pack size 1", "l2sweep, pack size 2"]
    assert result["batch_size"] == 32 and result["epochs"] == 1  # from the config, not restated
    plain = result["rows"][0]
    assert plain["samples_per_s"] == pytest.approx(3 * 32 / plain["seconds"])
    for row in result["rows"][1:]:
        # samples/s = the training images of the pack's 2nd epoch over its timed seconds
        assert row["samples_per_s"] * row["seconds"] == pytest.approx(row["runs"] * 3 * 32, rel=1e-9)  # steps x batch
        assert row["speedup"] == pytest.approx(row["samples_per_s"] / plain["samples_per_s"])
        assert row["runs_per_min"] == pytest.approx(row["samples_per_s"] / 54_000 * 60)
    whole = {row["name"]: row for row in result["whole_run"]}
    assert set(whole) == {"plain DataLoader loop, whole run", "l2sweep, whole run"}
    ours = whole["l2sweep, whole run"]
    assert 0 < ours["features_seconds"] < ours["eval_seconds"] < ours["seconds"]
    assert ours["features_share"] == pytest.approx(ours["features_seconds"] / ours["seconds"])
    assert ours["speedup"] == pytest.approx(whole["plain DataLoader loop, whole run"]["seconds"] / ours["seconds"])
    assert 0 <= ours["test_acc"] <= 100


def test_bench_command_writes_json_and_prints_a_table(tiny_mnist, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "train.batch_size=32", "--steps", "10",
                                      "--pack-sizes", "1", "--out", str(out), "--no-compile", "--no-whole-run"])
    assert result.exit_code == 0, result.output
    assert "plain DataLoader loop" in result.output and "x plain" in result.output
    written = json.loads(out.read_text())
    assert [row["runs"] for row in written["rows"]] == [1, 1] and written["whole_run"] == []
    assert written["setting"]["alpha"] == 1e-4 and written["setting"]["target"] == "both"


def test_bench_rejects_a_sweep_and_bad_pack_sizes(tiny_mnist):
    sweep = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "alpha=1,2"])
    assert sweep.exit_code == 2 and "bench takes plain overrides, not sweeps (2 points)" in sweep.output
    sizes = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "--pack-sizes", "0"])
    assert sizes.exit_code == 2 and "sizes must be >= 1" in sizes.output
