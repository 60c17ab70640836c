"""`l2sweep export`: a results folder's runs in the formats of the tools people already look in
(l2reg.export_tensorboard). Parses, calls the library, prints, sets the exit code: 0 written, 2
invalid input (no run files, an --out that is not an export, the optional package missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

export_app = typer.Typer(
    no_args_is_help=True,
    help="Write a results folder's runs in other tools' formats, from its runs/*.json alone (any time "
         "after the runs, never during training); trains nothing.",
    short_help="A results folder's runs as TensorBoard logs (per-epoch scalars, HParams table).",
)

# One string per paragraph: rich rewraps them to the terminal (a newline inside one would stay a break);
# escaped, so that the extra's [tensorboard] is not taken for rich markup.
TENSORBOARD_HELP = escape("\n\n".join((
    "Write RESULTS_DIR's runs as TensorBoard logs, for `tensorboard --logdir DIR`: one TensorBoard run per l2sweep "
    "run (a folder named by its run id) with its per-epoch history as scalars at step = epoch (epoch/train_loss, "
    "epoch/train_acc, epoch/val_loss, epoch/val_objective, epoch/val_acc, epoch/lr) and its final metrics, feature "
    "metrics included, as scalars final/<metric>.",
    "For the HParams tab (table, parallel coordinates, scatter plots): the setting axes (alpha, target, norm, "
    "schedule, form, scope), the context axes (dropout, train_size), seed and context as hyperparameters; the final "
    "metrics as metrics; each run's status (ok: success; diverged or failed: failure, exported without the metrics "
    "it lacks).",
    "DIR (--out, default RESULTS_DIR/tensorboard) is replaced whole by each export, never appended to; a non-empty "
    "folder that is not an earlier export is refused. Reads runs/*.json only: run it any time after the runs.",
    "Needs the optional tensorboard package: pip install 'l2sweep[tensorboard]'. Exit codes: 0 written, 2 invalid "
    "input (no run files, such an --out) or tensorboard missing.",
    "Example: l2sweep export tensorboard results/ablation && tensorboard --logdir results/ablation/tensorboard",
)))


def _console():
    from .main import _fail, _unexpected_errors, err, out

    return _fail, _unexpected_errors, err, out


@export_app.command("tensorboard", help=TENSORBOARD_HELP,
                    short_help="TensorBoard logs: per-epoch scalars and the HParams table.")
def tensorboard_command(
    results_dir: Path = typer.Argument(..., help="A folder written by `l2sweep run`, e.g. results/ablation"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Where the logs go (default: RESULTS_DIR/tensorboard); "
                                           "replaced whole."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg import export_tensorboard as exporter
    from l2reg.report import ReportError

    fail, unexpected_errors, err, out = _console()
    with unexpected_errors(debug):
        try:
            exported = exporter.export_tensorboard(results_dir, out_dir)
        except exporter.MissingTensorboard as error:
            fail(str(error), None, False)
        except (exporter.ExportError, ReportError) as error:
            fail(str(error), error, debug)
    for name, why in exported.skipped:
        err.print(f"[yellow]warning:[/] skipped runs/{escape(name)}: {escape(why)}", highlight=False, soft_wrap=True)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(exported.statuses.items()))
    out.print(escape(f"wrote {exported.runs} runs ({statuses}) to {exported.out}: {len(exported.hparams)} "
                     f"hyperparameters, {len(exported.metrics)} metrics"), highlight=False, soft_wrap=True)
    err.print(escape(f"view them: tensorboard --logdir {exported.out}"), highlight=False, soft_wrap=True)
