"""`l2sweep export tensorboard`, read back with tensorboard's own reader: EventAccumulator for the
scalars (equal to the run files' history and final metrics, to float32 precision) and the HParams
plugin's data (metadata.parse_*) for each run's hyperparameters and status and the experiment's
hyperparameters and metrics. On a tiny real sweep (ok, diverged and failed runs) and on a copy of
a committed results folder; the missing-package error, refused folders, a second export that
replaces the first, and a real `tensorboard` server answering the HParams dashboard's queries."""

from __future__ import annotations

import builtins
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_mnist
from typer.testing import CliRunner

from l2reg import evaluate, runner
from l2reg.cli.main import app
from l2reg.export_tensorboard import MARKER, NEEDS_TENSORBOARD

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.plugins.hparams import api_pb2, metadata  # noqa: E402

COMMITTED = Path(__file__).resolve().parents[2] / "results" / "controls-dropout"
QUICK = ["train.batch_size=64", "train.eval_batch_size=100", "train.compile=false", "train.epochs=2"]
HISTORY = ("train_loss", "train_acc", "val_loss", "val_objective", "val_acc", "lr")
SETTING = ("alpha", "target", "norm", "schedule", "form", "scope")


def export(*args):
    return CliRunner().invoke(app, ["export", "tensorboard", *map(str, args)])


def records_of(results_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results_dir / "runs").glob("*.json"))}


def accumulator(folder: Path):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0,
                                                                         event_accumulator.TENSORS: 0})
    return acc.Reload()


def f32(value) -> float:
    return float(np.float32(value))


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def expected_hparams(record: dict) -> dict:
    """A run's hyperparameters as the run file says them (null context values are left out)."""
    context = {k: v for k, v in (record.get("context_axes") or {}).items() if v is not None}
    return {**record["setting"], **context, "seed": record["seed"], "context": record["context"]}


def proto_value(value):
    kind = value.WhichOneof("kind")
    return {"number_value": value.number_value, "string_value": value.string_value}[kind]


def check_run(folder: Path, record: dict) -> None:
    """One exported run against its run file: history and final metrics as scalars, the session
    start info's hyperparameters, the session end info's status."""
    acc = accumulator(folder)
    history = record.get("history") or []
    for column in HISTORY:
        points = [(h["epoch"], f32(h[column])) for h in history if number(h.get(column))]
        got = [(e.step, e.value) for e in acc.Scalars(f"epoch/{column}")] if points else []
        assert got == points, (record["run_id"], column)
    last = max((h["epoch"] for h in history), default=0)
    metrics = {k: v for k, v in (record.get("metrics") or {}).items()
               if k in evaluate.metric_columns() and number(v)}
    finals = {tag.removeprefix("final/") for tag in acc.Tags()["scalars"] if tag.startswith("final/")}
    assert finals == set(metrics), record["run_id"]
    for name, value in metrics.items():
        assert [(e.step, e.value) for e in acc.Scalars(f"final/{name}")] == [(last, f32(value))], name
    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {k: proto_value(v) for k, v in start.hparams.items()} == expected_hparams(record)
    assert start.group_name == record["run_id"]
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == (api_pb2.STATUS_SUCCESS if record["status"] == "ok" else api_pb2.STATUS_FAILURE)
    assert end.end_time_secs >= start.start_time_secs > 0


def experiment_of(out: Path):
    content = accumulator(out).PluginTagToContent("hparams")
    return metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])


def check_experiment(out: Path, records: dict[str, dict]):
    """The experiment summary lists every hyperparameter the runs have, with their values as the
    domain, and every final metric some run has as a number."""
    experiment = experiment_of(out)
    hparams = {info.name: info for info in experiment.hparam_infos}
    values: dict[str, set] = {}
    for record in records.values():
        for name, value in expected_hparams(record).items():
            values.setdefault(name, set()).add(float(value) if number(value) else value)
    assert set(hparams) == set(values)
    for name, info in hparams.items():
        assert sorted(proto_value(v) for v in info.domain_discrete.values) == sorted(values[name]), name
        assert info.type == (api_pb2.DATA_TYPE_FLOAT64 if number(next(iter(values[name])))
                             else api_pb2.DATA_TYPE_STRING)
    numeric = {k for r in records.values() for k, v in (r.get("metrics") or {}).items()
               if k in evaluate.metric_columns() and number(v)}
    listed = [(m.name.group, m.name.tag, m.display_name) for m in experiment.metric_infos]
    assert listed == [("", f"final/{k}", k) for k in evaluate.metric_columns() if k in numeric]
    return experiment


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """A tiny real sweep: the baseline and alpha=1e-3 on the weights, 2 seeds, 2 epochs (4 runs ok),
    then a run that diverges (alpha=1e38) and one whose training raises (failed)."""
    root = tmp_path_factory.mktemp("export-tb")
    data = make_tiny_mnist(root / "data", n_train=300, n_test=100)  # features cost most: few images
    common = [f"data.root={data}", f"results_dir={root}", "name=tiny", "target=weights", *QUICK]
    runner.run_sweep(["alpha=0.0,1e-3", "seeds=2", *common])
    import l2reg.train

    real = l2reg.train.train_pack

    def crash_alpha_1e4(specs, *args, **kwargs):
        if any(spec.alpha == 1e-4 for spec in specs):
            raise RuntimeError("simulated crash")
        return real(specs, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(l2reg.train, "train_pack", crash_alpha_1e4)
        runner.run_sweep(["alpha=1e38,1e-4", "seed=0", *common])
    return root / "tiny"


def test_a_tiny_sweep_reads_back_with_tensorboards_reader(tiny_sweep):
    records = records_of(tiny_sweep)
    assert sorted(r["status"] for r in records.values()) == ["diverged", "failed", "ok", "ok", "ok", "ok"]
    result = export(tiny_sweep)
    assert result.exit_code == 0, result.output
    out = tiny_sweep / "tensorboard"
    assert f"wrote 6 runs (1 diverged, 1 failed, 4 ok) to {out}" in " ".join(result.stdout.split())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(records)
    for run_id, record in records.items():
        check_run(out / run_id, record)
    experiment = check_experiment(out, records)
    differs = {info.name: info.differs for info in experiment.hparam_infos}
    # what varies between the regularized runs (the baseline's "none" aside): alpha and seed
    assert differs["alpha"] and differs["seed"] and not differs["target"] and not differs["norm"]
    by_status = {r["status"]: accumulator(out / r["run_id"]).Tags()["scalars"] for r in records.values()}
    # the diverged run: its epoch with the non-finite loss lacks that scalar; the failed run: no scalars
    assert "epoch/val_acc" in by_status["diverged"] and "epoch/train_loss" not in by_status["diverged"]
    assert by_status["failed"] == []


def test_a_second_export_replaces_the_first_with_no_duplicated_events(tiny_sweep, tmp_path):
    out = tmp_path / "tb"
    assert export(tiny_sweep, "--out", out).exit_code == 0
    first = {p.relative_to(out) for p in out.rglob("events.out.tfevents.*")}
    assert export(tiny_sweep, "--out", out).exit_code == 0
    second = {p.relative_to(out) for p in out.rglob("events.out.tfevents.*")}
    # a new file per run, none of the first export's left, one event file per run and at the top
    assert len(second) == len(first) == len(records_of(tiny_sweep)) + 1 and not first & second
    top = sorted(p.name for p in out.iterdir() if p.is_file())
    assert len(top) == 2 and top[0].startswith("events.out.tfevents.") and top[1] == MARKER
    run_id, record = next((k, r) for k, r in records_of(tiny_sweep).items() if r["status"] == "ok")
    assert [e.step for e in accumulator(out / run_id).Scalars("epoch/val_acc")] == [1, 2]
    assert not list(tmp_path.glob(".tb.*"))  # no partial or old folder left beside it


def test_refuses_a_folder_without_run_files_and_an_out_that_is_not_an_export(tiny_sweep, tmp_path):
    empty = export(tmp_path)
    assert empty.exit_code == 2 and "has no runs/ folder" in empty.stderr
    (tmp_path / "runs").mkdir()
    no_runs = export(tmp_path)
    assert no_runs.exit_code == 2 and f"no run files in {tmp_path / 'runs'}: nothing to export" in " ".join(
        no_runs.stderr.split())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = export(tiny_sweep, "--out", foreign)
    assert refused.exit_code == 2 and "not an l2sweep TensorBoard export" in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_without_tensorboard_one_line_and_exit_2(tiny_sweep, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    result = export(tiny_sweep, "--out", tmp_path / "tb")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {NEEDS_TENSORBOARD}"] and result.stdout == ""
    assert not (tmp_path / "tb").exists()


@pytest.fixture(scope="module")
def committed_export(tmp_path_factory) -> Path:
    """A copy of a committed results folder (30 real runs, feature metrics), exported."""
    if not (COMMITTED / "runs").is_dir():
        pytest.skip(f"{COMMITTED} is not in this checkout")
    copy = tmp_path_factory.mktemp("committed") / COMMITTED.name
    shutil.copytree(COMMITTED / "runs", copy / "runs")
    result = export(copy)
    assert result.exit_code == 0, result.output
    return copy


def test_a_committed_folder_reads_back_with_the_right_values(committed_export):
    records = records_of(committed_export)
    assert len(records) == 30
    out = committed_export / "tensorboard"
    for run_id, record in records.items():
        check_run(out / run_id, record)
    experiment = check_experiment(out, records)
    metrics = {m.display_name for m in experiment.metric_infos}
    assert {"test_acc", "probe_acc_100", "probe_acc_1000", "zero_fraction", "noise_acc_0.1"} <= metrics
    assert {info.name for info in experiment.hparam_infos} == {*SETTING, "dropout", "seed", "context"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_a_tensorboard_server_serves_the_hparams_table(committed_export):
    port, out = free_port(), committed_export / "tensorboard"
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out), "--host", "127.0.0.1",
                               "--port", str(port), "--load_fast=false"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    try:
        experiment, deadline = {}, time.monotonic() + 20
        while not experiment.get("hparamInfos") and time.monotonic() < deadline:
            try:
                experiment = post(f"{base}/experiment", {"experimentName": ""})
            except OSError:
                time.sleep(0.3)
        if not experiment.get("hparamInfos"):
            pytest.skip("tensorboard did not serve the experiment within 20 s")
        assert {info["name"] for info in experiment["hparamInfos"]} == {*SETTING, "dropout", "seed", "context"}
        assert "final/test_acc" in {info["name"]["tag"] for info in experiment["metricInfos"]}
        groups = post(f"{base}/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_UNKNOWN"],
            "colParams": [{"metric": {"tag": "final/test_acc"}, "order": "ORDER_DESC"}],
            "startIndex": 0, "sliceSize": 100})
        records = records_of(committed_export)
        assert groups["totalSize"] == len(records)
        top = groups["sessionGroups"][0]  # the highest test accuracy first
        record = records[top["name"]]
        assert record["metrics"]["test_acc"] == max(r["metrics"]["test_acc"] for r in records.values())
        assert top["hparams"]["alpha"] == record["setting"]["alpha"] and top["hparams"]["seed"] == record["seed"]
        shown = {m["name"]["tag"]: m["value"] for m in top["metricValues"]}
        assert shown["final/test_acc"] == f32(record["metrics"]["test_acc"])
    finally:
        server.terminate()
        server.wait(timeout=10)
