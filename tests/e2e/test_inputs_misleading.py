"""Inputs that could mislead: an empty sweep, a `name` that is not one plain folder name,
and foreign, damaged or partial files in runs/. Each gives exit 2 in one line with nothing written, or,
for files in runs/, a warning line per file naming it and why, counted in report.md and verdict.json,
with the statistics unaffected."""

import json
import os
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from l2reg import files
from l2reg.cli.main import app

QUICK = ["train.epochs=1", "train.batch_size=64", "train.eval_batch_size=100"]


# Rich wraps at 80 columns when the output is not a terminal: whole lines for the asserts
pytestmark = pytest.mark.usefixtures("wide_console")


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    """cwd = an empty folder, so a default ./results/<timestamp> would show."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_an_empty_sweep_is_refused_in_one_line(dry, in_empty_folder, tiny_mnist, tmp_path):
    """Hydra's sweeper would drop every override (alpha and results_dir too) and plan defaults."""
    before = tree(tmp_path)
    result = invoke("run", *(["--dry-run"] if dry else []), "seed=range(0)", "alpha=1e-4",
                    f"results_dir={tmp_path / 'x'}", f"data.root={tiny_mnist}", *QUICK)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: seed=range(0) is an empty sweep: it has no values, so there is nothing "
                                     "to run (e.g. 'seed=range(3)' for seeds 0, 1, 2)")
    assert tree(tmp_path) == before and os.listdir(in_empty_folder) == []


@pytest.mark.parametrize("name", ["../../elsewhere", "a/b", "..", "/abs", "with space"])
def test_a_name_that_is_not_one_plain_folder_name_is_refused(name, in_empty_folder, tiny_mnist, tmp_path):
    results = tmp_path / "deep" / "er" / "results"
    before = tree(tmp_path)
    result = invoke("run", "alpha=1e-3", f"name={name}", f"results_dir={results}", f"data.root={tiny_mnist}",
                    "seeds=1", *QUICK)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: name={name}: must be one plain folder name (letters, digits, '.', "
                                     "'_', '-'; no '/', not '.' or '..'), the folder under results_dir the sweep "
                                     "writes")
    assert tree(tmp_path) == before and os.listdir(in_empty_folder) == []  # neither elsewhere/ nor a/b/


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A real sweep on tiny IDX data: 1 setting + baseline, 3 seeds (6 runs)."""
    from conftest import make_tiny_mnist

    root = tmp_path_factory.mktemp("sweep")
    data = make_tiny_mnist(root / "data")
    result = invoke("run", "alpha=1e-3", "seeds=3", f"data.root={data}", f"results_dir={root}", "name=s", *QUICK)
    assert result.exit_code == 0, result.output
    return root / "s"


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(finished_sweep, folder)
    return folder


def bad_files(runs_dir):
    """Foreign, damaged and partial files, and what l2sweep says about each."""
    real = sorted(runs_dir.glob("*.json"))[0]
    record = json.loads(real.read_text())
    (runs_dir / "a-list.json").write_text("[1, 2, 3]")
    (runs_dir / "no-run-id.json").write_text(json.dumps({"status": "ok", "metrics": {"test_acc": 99.0}}))
    text = real.read_text()
    (runs_dir / "truncated.json").write_text(text[:len(text) // 2])
    (runs_dir / "latin1.json").write_bytes('{"run_id": "caf\u00e9"}'.encode("latin-1"))
    shutil.copy(real, runs_dir / "copy-of-a-run.json")
    files.write_json_atomic(runs_dir / "partial.json", dict(record, run_id="partial", metrics={}))
    return {
        "a-list.json": "not a run record (a JSON list)",
        "no-run-id.json": "not a run record (no run_id, setting, seed, context, config)",
        "truncated.json": "damaged or truncated JSON (",
        "latin1.json": "not UTF-8 text",
        "copy-of-a-run.json": f"its run_id {record['run_id']!r} does not match the file name",
        "partial.json": "a partial run record (status ok but no numeric metrics.test_acc)",
    }


def test_foreign_and_damaged_run_files_are_warned_about_and_left_out(sweep_copy):
    clean = invoke("report", str(sweep_copy))
    assert clean.exit_code == 0, clean.output
    assert "warning" not in clean.output
    stats_files = ("runs.csv", "summary.csv")
    before = {name: (sweep_copy / name).read_bytes() for name in stats_files}
    verdict_before = json.loads((sweep_copy / "verdict.json").read_text())
    expected = bad_files(sweep_copy / "runs")

    result = invoke("report", str(sweep_copy))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: skipped runs/")]
    assert len(warnings) == len(expected)  # one line per file
    for name, why in expected.items():
        [line] = [w for w in warnings if w.startswith(f"warning: skipped runs/{name}: ")]
        assert line[len(f"warning: skipped runs/{name}: "):].startswith(why), line
    assert "Traceback" not in result.output
    # the statistics are those of the clean folder
    assert {name: (sweep_copy / name).read_bytes() for name in stats_files} == before
    verdict = json.loads((sweep_copy / "verdict.json").read_text())
    skipped = verdict.pop("skipped_files")
    assert verdict_before.pop("skipped_files") == [] and verdict == verdict_before  # same verdicts, same numbers
    assert [entry["file"] for entry in skipped] == sorted(expected)
    for entry in skipped:
        assert entry["why"].startswith(expected[entry["file"]])
    report = (sweep_copy / "report.md").read_text()
    assert f"- {len(expected)} file(s) in runs/ are not run records and were skipped:" in report
    for name, why in expected.items():
        assert f"  - `{name}`: {why}" in report
    assert len(pd.read_csv(sweep_copy / "runs.csv")) == 6


def test_a_run_writes_its_report_despite_foreign_files(sweep_copy, tiny_mnist):
    """`l2sweep run` on a folder with foreign files: skips its finished runs, warns, reports."""
    (sweep_copy / "runs" / "notes.json").write_text('"a note, not a run"')
    args = ["run", "alpha=1e-3", "seeds=3", f"data.root={tiny_mnist}", f"results_dir={sweep_copy.parent}", "name=s",
            *QUICK]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "6 of 6 runs already done" in result.output
    assert "warning: skipped runs/notes.json: not a run record (a JSON str)" in result.output.splitlines()
    assert json.loads((sweep_copy / "verdict.json").read_text())["skipped_files"] == [
        {"file": "notes.json", "why": "not a run record (a JSON str)"}]


def test_a_folder_with_only_bad_files_exits_2_in_one_line(sweep_copy):
    for path in (sweep_copy / "runs").glob("*.json"):
        path.unlink()
    for name in ("runs.csv", "summary.csv", "verdict.json", "report.md", "report.html"):
        (sweep_copy / name).unlink()
    (sweep_copy / "runs" / "a-list.json").write_text("[]")
    (sweep_copy / "runs" / "empty.json").write_text("")
    result = invoke("report", str(sweep_copy))
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    assert line == (f"error: no finished runs in {sweep_copy / 'runs'}: its 2 file(s) are not run records "
                    "(a-list.json: not a run record (a JSON list); empty.json: damaged or truncated JSON (Expecting "
                    "value: line 1 column 1 (char 0)))")
    assert sorted(p.name for p in sweep_copy.iterdir()) == ["plots", "runs", "sweep.json"]  # nothing new written
