"""TensorBoard export of a results folder (`l2sweep export tensorboard`): owns the export folder's
layout and what each of its event files holds. Reads runs/*.json only, through l2reg.report
(load_records, runs_frame, histories_frame): nothing here runs during training, and training
knows nothing of TensorBoard.

The folder (default results/<name>/tensorboard/), one TensorBoard run per l2sweep run:
- `events.out.tfevents.*` at its top: the HParams plugin's experiment summary. Its hyperparameters
  are the setting axes (l2reg.axes.SETTING_COLUMNS), the context axes (CONTEXT_COLUMNS), `seed`
  and `context`; each with the values the runs have as its domain (discrete; a number column
  with more than DISCRETE_LIMIT values gets an interval), `differs` set where they vary (the
  dashboard shows five at first, those that differ first; a setting axis other than alpha differs
  when it varies between the regularized runs, as l2reg.axes.varying has it). A hyperparameter
  that no run has a value for (train_size when every run trains on the whole split: null) is
  left out, and so is a run's null value (a blank cell). Its metrics are the final metrics
  (l2reg.evaluate.metric_columns(), feature metrics included) that at least one run has as a
  number, as the scalars `final/<metric>`.
- `<run_id>/events.out.tfevents.*`: the session start info (the run's hyperparameters, its run id
  as the session group), the per-epoch history as scalars `epoch/<column>` at step = epoch
  (train_loss, train_acc, val_loss, val_objective, val_acc, lr), the final metrics as scalars
  `final/<metric>` at the last epoch's step (those the record has: none for a failed run), and the
  session end info: STATUS_SUCCESS for an ok run, STATUS_FAILURE for a diverged or failed one.
  Wall times are the run's own (its start, epoch durations and finish, from the record).
- `l2sweep-export.json`: says the folder is an export. A new export is written to a sibling
  folder and swapped in, so it replaces an earlier one whole (no event is ever appended to an old
  file); a non-empty folder without this file is refused, never deleted.

Library: tensorboard itself, no TensorFlow and no torch. summary_v2 (the HParams plugin's current
summary API) builds the session start info (hparams_pb) and the domains and metric infos
(Discrete, RealInterval, Metric); the experiment and the session end info are assembled from the
plugin's own protos with its metadata.create_summary_metadata, as summary_v2 does inside, because
summary_v2 has no session end info (its v1 twin needs TensorFlow) and cannot set `differs`;
torch.utils.tensorboard's hparams() always writes STATUS_SUCCESS and takes the experiment's
hyperparameters from one run's values. tensorboard's EventFileWriter writes the files, scalars as
simple_value (float32), as torch's SummaryWriter would.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from l2reg import axes, evaluate, report

NEEDS_TENSORBOARD = ("l2sweep export tensorboard needs the tensorboard package: "
                     "pip install 'l2sweep[tensorboard]'")
HISTORY_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_objective", "val_acc", "lr")
EPOCH_TAG, FINAL_TAG = "epoch/{}", "final/{}"
MARKER = "l2sweep-export.json"
DISCRETE_LIMIT = 20
HPARAM_COLUMNS = (*axes.SETTING_COLUMNS, *axes.CONTEXT_COLUMNS, "seed", "context")
SUCCESS_STATUSES = ("ok",)  # diverged and failed runs end with STATUS_FAILURE

_DESCRIPTIONS = {**{ax.column: f"{ax.role} axis `{ax.key}`: {ax.unit}" for ax in axes.AXES},
                 "seed": "the run's seed (same seed: same init, data order and dropout masks in every setting)",
                 "context": "the comparison family: the runs that share one baseline and one verdict"}


class ExportError(RuntimeError):
    """An export that cannot be written (no runs, a folder that is not an export); exit 2."""


class MissingTensorboard(ExportError):
    """The optional dependency is not installed."""


@dataclass
class Exported:
    out: Path
    statuses: dict  # status -> runs
    hparams: list[str]
    metrics: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # run files left out: (name, why)

    @property
    def runs(self) -> int:
        return sum(self.statuses.values())


def tensorboard_modules() -> SimpleNamespace:
    """The parts of tensorboard the export uses; MissingTensorboard (one line) without it."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as error:
        raise MissingTensorboard(NEEDS_TENSORBOARD) from error
    return SimpleNamespace(event_pb2=event_pb2, summary_pb2=summary_pb2, api_pb2=api_pb2, metadata=metadata,
                           plugin_data_pb2=plugin_data_pb2, summary_v2=summary_v2, EventFileWriter=EventFileWriter)


def default_out(results_dir: Path) -> Path:
    return Path(results_dir) / "tensorboard"


def export_tensorboard(results_dir: Path, out: Path | None = None) -> Exported:
    """Write the TensorBoard export of `results_dir` to `out` (default results_dir/tensorboard),
    replacing an earlier export there. Raises MissingTensorboard, ExportError, report.ReportError."""
    tb = tensorboard_modules()
    results_dir = Path(results_dir)
    loaded = report.load_records(results_dir)
    if not loaded.records:
        why = f" ({len(loaded.skipped)} file(s) there are not run records)" if loaded.skipped else ""
        raise ExportError(f"no run files in {results_dir / 'runs'}{why}: nothing to export")
    out = Path(out) if out is not None else default_out(results_dir)
    partial = _fresh_folder(out)
    try:
        exported = _write(tb, partial, loaded.records)
        (partial / MARKER).write_text(json.dumps({"written_by": "l2sweep export tensorboard",
                                                  "source": str(results_dir.resolve()),
                                                  "runs": exported.runs}, indent=1) + "\n")
        _swap_in(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    exported.out, exported.skipped = out, loaded.skipped
    return exported


def _fresh_folder(out: Path) -> Path:
    """An empty sibling folder to write the export to; refuses an `out` that is not an export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file: give --out a folder (new, empty, or an earlier export)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ExportError(f"{out} holds files that are not an l2sweep TensorBoard export (no {MARKER}): give "
                          "--out a new or empty folder, or an earlier export (which is replaced)")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _swap_in(partial: Path, out: Path) -> None:
    """Replace `out` by `partial` whole: the earlier export is moved aside, then deleted."""
    old = out.parent / f".{out.name}.old-{os.getpid()}" if out.exists() else None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    partial.rename(out)
    if old is not None:
        shutil.rmtree(old)


def _write(tb, folder: Path, records: list[dict]) -> Exported:
    runs = report.runs_frame(records).set_index("run_id", drop=False)
    histories = report.histories_frame(records)
    values = hparam_values(runs)
    metrics = [name for name in evaluate.metric_columns() if any(_number(v) for v in runs[name])]
    times = {record["run_id"]: run_times(record) for record in records}
    created = min(start for start, _, _ in times.values())
    _write_events(tb, folder, [(created, 0, _experiment(tb, values, metrics, created))])
    for run_id, run in runs.iterrows():
        _write_run(tb, folder / run_id, run, histories[histories["run_id"] == run_id], values[run_id], metrics,
                   times[run_id])
    hparams = sorted({name for row in values.values() for name in row}, key=HPARAM_COLUMNS.index)
    return Exported(folder, dict(Counter(runs["status"])), hparams, metrics)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def hparam_values(runs: pd.DataFrame) -> dict[str, dict]:
    """Per run id: its hyperparameters {column: value} (numbers as float, text as str; a null
    value left out). A column with both numbers and text (not one l2sweep writes) becomes text."""
    values = {run_id: {} for run_id in runs.index}
    for column in HPARAM_COLUMNS:
        present = {run_id: v for run_id, v in runs[column].items() if not _missing(v)}
        as_text = not all(_number(v) for v in present.values())
        for run_id, value in present.items():
            values[run_id][column] = str(value) if as_text else float(value)
    return values


def _experiment(tb, values: dict[str, dict], metrics: list[str], created: float):
    """The experiment summary: hparam infos (domains, differs) and metric infos."""
    v2, api = tb.summary_v2, tb.api_pb2
    tested = [row for row in values.values() if not axes.baseline_rows(row)]
    infos = []
    for column in HPARAM_COLUMNS:
        seen = sorted({row[column] for row in values.values() if column in row})
        if not seen:
            continue
        # differs, as l2reg.axes.varying names settings: a setting axis other than alpha varies
        # between the regularized runs (the baseline's "none" does not count)
        among = tested if column in axes.SETTING_COLUMNS and column != "alpha" else values.values()
        differs = len({row[column] for row in among if column in row}) > 1
        if isinstance(seen[0], float) and len(seen) > DISCRETE_LIMIT:
            domain = v2.RealInterval(seen[0], seen[-1])
        else:
            domain = v2.Discrete(seen)
        info = api.HParamInfo(name=column, description=_DESCRIPTIONS[column], differs=differs)
        domain.update_hparam_info(info)
        infos.append(info)
    features = {m.name for m in evaluate.metrics() if m.features}
    metric_infos = [v2.Metric(FINAL_TAG.format(name), group="", display_name=name,
                              description=f"final {'feature ' if name in features else ''}metric {name} "
                                          "(l2reg.evaluate)", dataset_type=_dataset_type(v2, name)).as_proto()
                    for name in metrics]
    experiment = api.Experiment(hparam_infos=infos, metric_infos=metric_infos, time_created_secs=created)
    return _plugin_summary(tb, tb.metadata.EXPERIMENT_TAG, tb.plugin_data_pb2.HParamsPluginData(experiment=experiment))


def _dataset_type(v2, name: str):
    if name.startswith("train_"):
        return v2.Metric.TRAINING
    return v2.Metric.VALIDATION if name.startswith("val_") else None


def _plugin_summary(tb, tag: str, plugin_data):
    """A summary holding HParams plugin data, as the plugin's own summary functions make it."""
    summary = tb.summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=tb.metadata.create_summary_metadata(plugin_data),
                      tensor=tb.metadata.NULL_TENSOR)
    return summary


def _scalars(tb, pairs) -> object:
    summary = tb.summary_pb2.Summary()
    for tag, value in pairs:
        summary.value.add(tag=tag, simple_value=float(value))
    return summary


def _write_events(tb, folder: Path, events: list[tuple]) -> None:
    """One event file in `folder` holding (wall time, step, summary) events, in order."""
    writer = tb.EventFileWriter(str(folder))
    try:
        for wall_time, step, summary in events:
            writer.add_event(tb.event_pb2.Event(wall_time=wall_time, step=step, summary=summary))
    finally:
        writer.close()


def _write_run(tb, folder: Path, run: pd.Series, history: pd.DataFrame, hparams: dict, metrics: list[str],
               times: tuple[float, dict, float]) -> None:
    """One run's events: session start, history scalars, final metric scalars, session end."""
    start, epoch_times, end = times
    events = [(start, 0, tb.summary_v2.hparams_pb(hparams, trial_id=run["run_id"], start_time_secs=start))]
    last = 0
    for row in history.sort_values("epoch").itertuples(index=False):
        epoch = int(row.epoch)
        pairs = [(EPOCH_TAG.format(c), getattr(row, c)) for c in HISTORY_COLUMNS if _number(getattr(row, c))]
        events.append((epoch_times.get(epoch, end), epoch, _scalars(tb, pairs)))
        last = max(last, epoch)
    finals = [(FINAL_TAG.format(name), run[name]) for name in metrics if _number(run[name])]
    if finals:
        events.append((end, last, _scalars(tb, finals)))
    status = tb.api_pb2.STATUS_SUCCESS if run["status"] in SUCCESS_STATUSES else tb.api_pb2.STATUS_FAILURE
    end_info = tb.plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end)
    events.append((end, last, _plugin_summary(tb, tb.metadata.SESSION_END_INFO_TAG,
                                              tb.plugin_data_pb2.HParamsPluginData(session_end_info=end_info))))
    _write_events(tb, folder, events)


def run_times(record: dict) -> tuple[float, dict[int, float], float]:
    """(start, {epoch: end of that epoch}, finish) in Unix seconds, from the record: its finish
    time, its wall time and its epochs' durations (each epoch evenly over the training time where
    the history has no durations); the export's own time for a record that has no finish time."""
    end = record.get("finished_unix")
    if not _number(end):
        try:
            end = datetime.datetime.strptime(str(record.get("finished_at")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            end = time.time()
    seconds = record.get("seconds")
    start = end - (float(seconds) if _number(seconds) else 0.0)
    history = record.get("history") or []
    durations = [h.get("seconds") for h in history]
    if not all(_number(d) for d in durations):
        train = record.get("train_seconds")
        durations = [(float(train) if _number(train) else end - start) / len(history)] * len(history)
    epoch_times, elapsed = {}, start
    for h, duration in zip(history, durations):
        elapsed += float(duration)
        if _number(h.get("epoch")):
            epoch_times[int(h["epoch"])] = min(elapsed, end)
    return float(start), epoch_times, float(end)
