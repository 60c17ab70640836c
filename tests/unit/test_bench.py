"""`l2sweep bench` on tiny data: every measurement present, ratios against the reference, file written."""

import json

import torch
from typer.testing import CliRunner

from cli.main import app
from l2reg.bench import FULL_RUN_SAMPLES, run_bench


def test_run_bench_measures_reference_and_packs(tiny_mnist):
    result = run_bench(str(tiny_mnist), torch.device("cpu"), steps=3, pack_sizes=[1, 2], compiled=False)
    names = [row["name"] for row in result["rows"]]
    assert names == ["plain DataLoader loop", "l2sweep, pack size 1", "l2sweep, pack size 2"]
    assert result["rows"][0]["speedup"] == 1.0
    for row in result["rows"]:
        assert row["samples_per_s"] > 0 and row["peak_mib"] >= 0
        assert row["runs_per_min"] == row["samples_per_s"] / FULL_RUN_SAMPLES * 60
        assert row["speedup"] == row["samples_per_s"] / result["rows"][0]["samples_per_s"]


def test_bench_command_writes_json_and_prints_a_table(tiny_mnist, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "--steps", "10", "--pack-sizes", "1",
                                      "--out", str(out), "--no-compile"])
    assert result.exit_code == 0, result.output
    assert "plain DataLoader loop" in result.output and "x plain" in result.output
    assert [row["runs"] for row in json.loads(out.read_text())["rows"]] == [1, 1]


def test_bench_rejects_a_sweep_and_bad_pack_sizes(tiny_mnist):
    sweep = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "alpha=1,2"])
    assert sweep.exit_code == 2
    sizes = CliRunner().invoke(app, ["bench", f"data.root={tiny_mnist}", "--pack-sizes", "0"])
    assert sizes.exit_code == 2 and "sizes must be >= 1" in sizes.output
