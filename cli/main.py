"""`l2sweep`: run regularization sweeps, rebuild their reports.

Exit codes: 0 all runs ok; 1 some runs diverged or failed; 2 invalid input (one line says what
and what is allowed; `--debug` shows the traceback); 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .confirm import confirm_app
from .export import export_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Regularization ablations for the article's MNIST CNN, with a verdict. "
    "Sweeps use Hydra's override grammar: l2sweep run alpha=0.0,1e-4,1e-3 target=weights,both",
)
app.add_typer(confirm_app, name="confirm")
app.add_typer(export_app, name="export")
err = Console(stderr=True)
out = Console()

RUN_HELP = """Train a sweep and write results/<name>/ (runs/*.json, runs.csv, summary.csv, verdict.json,
report.md, plots/, sweep.json).

OVERRIDES use Hydra's grammar: comma lists (alpha=1e-4,1e-3), range() ('seed=range(5)', quoted
for the shell), choice(), glob() on groups (schedule='glob(*)'), experiment=ablation.

Setting axes (compared with the baseline): alpha (>= 0; 0 = baseline), target
(weights|activations|both), norm (l2|l1), schedule (constant|exponential|linear|cosine|step, with
schedule.gamma per epoch, schedule.every epochs, schedule.factor), form (loss|decoupled: AdamW-style
decay, target=weights only), scope (conv|dense|all: the kernels a weight term acts on).
Context axes (each value its own baseline and verdict): train.dropout (rate in [0, 1)),
data.train_size (train on N of the 54,000 training images, drawn by seed).
Also: seed, seeds (default 3), name (one plain folder name), results_dir, data.* (root,
val_fraction, train_limit, test_limit, download), train.* (epochs, batch_size, lr, device,
pack_size, compile, ...), report.min_effect_pp (pp).

Where the packs train: launcher=inprocess (default: this process), launcher=local (worker
processes: launcher.n_jobs, launcher.threads_per_worker), launcher=slurm (a SLURM job array through
submitit: launcher.partition, launcher.timeout_min, launcher.gpus_per_node, ... as
hydra-submitit-launcher names them; --no-wait submits and exits; `l2sweep status DIR` shows
where each run stands). Launcher keys never change run ids.

The alpha=0 baseline always runs, once per seed and context. Re-running the same command skips
finished runs. Exit codes: 0 all ok, 1 runs failed or diverged, 2 invalid input, 130 interrupted (Ctrl-C),
143 stopped by SIGTERM (both keep every finished run and write the reports).
"""


@contextlib.contextmanager
def _unexpected_errors(debug: bool):
    """Anything not anticipated: one line and exit 1, the traceback only with --debug."""
    try:
        yield
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as error:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {type(error).__name__}: {escape(str(error))} (run again with --debug for the "
                  f"traceback)", highlight=False)
        raise typer.Exit(1) from None


def _fail(message: str, error: BaseException | None, debug: bool, code: int = 2) -> None:
    if debug and error is not None:
        err.print_exception()
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _summary_table(summary, title: str) -> Table:
    """A compact table (fits 80 columns): setting, n, mean accuracy, paired delta and CI, call."""
    from l2reg import axes

    table = Table(title=title)
    for column in ("setting", "n", "acc %", "delta pp", "95% CI pp", "call"):
        table.add_column(column, justify="left" if column in ("setting", "call") else "right")
    contexts = summary["context"].nunique()
    tested = summary[~axes.baseline_rows(summary)]
    varying = axes.varying(tested, fallback=["alpha", "target"])

    def num(value, fmt: str) -> str:
        return "-" if value != value else format(value, fmt)

    for row in summary.itertuples(index=False):
        values = row._asdict()
        setting = "baseline" if axes.baseline_rows(values) else " ".join(
            f"{values[c]:g}" if c == "alpha" else str(values[c]) for c in varying)
        if contexts > 1:
            setting += escape(f" [{row.context}]")
        low, high = values.get("paired_ci_low_pp"), values.get("paired_ci_high_pp")
        ci = "-" if low is None or low != low else f"{low:+.2f}..{high:+.2f}"
        failed = f" (+{row.n_not_ok} not ok)" if row.n_not_ok == row.n_not_ok and row.n_not_ok else ""
        table.add_row(setting, f"{row.n}{failed}", num(row.mean_acc, ".3f"), num(row.delta_pp, "+.3f"), ci,
                      escape(str(row.call)))
    return table


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


TABLE_LIMIT = 1000  # a dry run of more runs prints plain tab-separated lines: a rich table of
# 100,000 rows takes half a minute to draw and no one reads it in a terminal


def _plan_rows(planned, done: set) -> tuple[list[str], list[list[str]], list[str]]:
    """The planned runs as (columns, rows, fixed): run id, the axes that vary (alpha always; a
    setting axis when it varies between the regularized runs, a context axis when it varies at
    all), seed, done; `fixed` names the axes that do not vary, once."""
    from l2reg import axes, sweep

    rows = [({**sweep.setting_columns(item.config), **axes.context_columns(item.config)}, item) for item in planned]
    tested = [cols for cols, item in rows if not item.is_baseline]
    shown = [ax for ax in axes.SETTING_AXES
             if ax.key == "alpha" or len({_shown(cols[ax.column]) for cols in tested}) > 1]
    shown += [ax for ax in axes.CONTEXT_AXES if len({_shown(cols[ax.column]) for cols, _ in rows}) > 1]
    fixed = [f"{ax.column}={_shown(tested[0][ax.column])}" for ax in axes.SETTING_AXES if tested and ax not in shown]
    fixed += [f"{ax.column}={_shown(rows[0][0][ax.column])}" for ax in axes.CONTEXT_AXES if rows and ax not in shown]
    columns = ["run_id", *[ax.column for ax in shown], "seed", "done"]
    body = [[item.run_id, *[_shown(cols[ax.column]) for ax in shown], str(item.config.seed),
             "yes" if item.run_id in done else ""] for cols, item in rows]
    return columns, body, fixed


def _print_plan(planned, done: set) -> None:
    """The planned runs: a table that fits a terminal, or beyond TABLE_LIMIT runs plain
    tab-separated lines (a header line first) for scripts and pagers."""
    columns, body, fixed = _plan_rows(planned, done)
    if len(body) > TABLE_LIMIT:
        import sys

        lines = ["\t".join(columns), *("\t".join(row) for row in body)]
        if fixed:
            lines.append("# every run: " + ", ".join(fixed))
        sys.stdout.write("\n".join(lines) + "\n")
        return
    table = Table(caption=escape("every run: " + ", ".join(fixed)) if fixed else None)
    table.add_column("run_id", overflow="fold")  # a narrow terminal folds the ids, never the values
    for column in columns[1:]:
        table.add_column(column, no_wrap=True)
    for row in body:
        table.add_row(*row)
    out.print(table)


@app.command(help=RUN_HELP)
def run(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides and sweeps, e.g. alpha=0,1e-4"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the planned runs as a table; train nothing."),
    point: Optional[List[str]] = typer.Option(None, "--point", help="One set of overrides, space-separated, each "
                                              "in Hydra's grammar (e.g. --point 'schedule=exponential "
                                              "schedule.gamma=0.1,0.3' --point norm=l1): the sweep is the union of "
                                              "the sets, each expanded with the other overrides, one baseline per "
                                              "context. Replaces an experiment file's points."),
    force: bool = typer.Option(False, "--force", help="Re-run runs that are already finished."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="launcher=slurm: wait for the jobs and show progress "
                              "(default), or submit, print the job ids and exit."),
    config_dir: Optional[Path] = typer.Option(None, help="Hydra config folder (default: the project's conf/)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first run that fails or diverges (the "
                                   "runs in flight are abandoned), report what finished and exit 1; default: go on "
                                   "with the other runs. launcher=inprocess and local."),
    mixed_code: bool = typer.Option(False, "--mixed-code", help="Add runs to a context whose finished runs were "
                                    "made by other code (another code fingerprint) or with another CPU thread "
                                    "count; refused otherwise (exit 2). The report then says the context is mixed."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    with _unexpected_errors(debug):
        point_sets = [item.split() for item in point] if point else None
        _run(overrides or [], dry_run, force, config_dir, debug, wait, mixed_code, fail_fast, point_sets)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a scheduler's preemption), turned into the stop Ctrl-C makes."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the runs train, the first SIGTERM stops the sweep as Ctrl-C does (the run in flight
    is abandoned, the finished runs are reported); later ones are ignored, so the stop can finish
    its reports. Yields a list that holds the signal once received."""
    received: list[int] = []

    def handler(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(overrides: list[str], dry_run: bool, force: bool, config_dir: Optional[Path], debug: bool,
         wait: bool = True, mixed_code: bool = False, fail_fast: bool = False,
         point_sets: list[list[str]] | None = None) -> None:
    from l2reg import files, runner
    from l2reg.config import ConfigError
    from l2reg.data import DataError
    from l2reg.executors.slurm_jobs import SchedulerError

    try:
        plan = runner.plan_sweep(overrides, config_dir, wait=wait, point_sets=point_sets)
    except (ConfigError, ValueError) as error:
        _fail(str(error), error, debug)
    if dry_run:
        done = plan.finished(force)
        # the title on a line of its own (a table title wraps to the table's width): scripts parse it
        out.print(escape(f"{len(plan.planned)} planned runs -> {plan.results_dir} ({len(done)} done)"),
                  highlight=False, soft_wrap=True)
        _print_plan(plan.planned, done)
        return
    with _sigterm_as_interrupt() as terminated:
        try:
            with _Progress() as progress:
                result = runner.run_sweep(plan, force=force, wait=wait, progress=progress, messages=_message,
                                          mixed_code=mixed_code, fail_fast=fail_fast)
        except (ConfigError, DataError, runner.ResultsFolderError, runner.MixedCodeError) as error:
            _fail(str(error), error, debug)
        except SchedulerError as error:
            _fail(str(error), error, False)
        except files.NoSpace as error:
            _fail(f"{error.strerror}. Every run finished before is saved in {plan.results_dir / 'runs'}; free some "
                  "space and run the same command again: it resumes, skipping them", error, debug, code=1)
        except KeyboardInterrupt:  # after training: while the reports were written
            err.print(escape(f"interrupted while writing the reports: every finished run is kept; `l2sweep report "
                             f"{plan.results_dir}` writes them, the same command resumes"), highlight=False,
                      soft_wrap=True)
            raise typer.Exit(143 if terminated else 130) from None
        _print_result(result, terminated=bool(terminated))


def _message(kind: str, text: str) -> None:
    """A line of the runner's for the user, on stderr: a note, a warning, or why the sweep stopped."""
    if kind == "warning":
        err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)
    elif kind == "interrupted":
        err.print(f"[yellow]{escape(text)}[/]", highlight=False, soft_wrap=True)
    else:
        err.print(escape(text), highlight=False, soft_wrap=True)


def _print_result(result, terminated: bool = False) -> None:
    """What `l2sweep run` shows after the runner: the job ids (--no-wait), or the reports and the
    runs that did not finish; then the exit code (130 interrupted by Ctrl-C, 143 by SIGTERM, 1 runs
    not ok)."""
    results_dir = result.results_dir
    if not result.waited:
        out.print(" ".join(result.submission["job_ids"]) if result.submission else "nothing to submit",
                  highlight=False)
        err.print(escape(f"`l2sweep status {results_dir}` shows where each run stands; `l2sweep report "
                         f"{results_dir}` collects the results"), highlight=False, soft_wrap=True)
        return
    if result.report is not None:
        _show(result.report, results_dir)
    if result.interrupted:
        raise typer.Exit(143 if terminated else 130)
    if result.not_ok:
        err.print(f"[red]{len(result.not_ok)} run(s) did not finish:[/]")
        for record in result.not_ok:
            job = f" (job {record['job_id']})" if record.get("job_id") else ""
            err.print(escape(f"  {record['run_id']}{job}: {record['status']} {record.get('error') or ''}"),
                      highlight=False)
            _print_log_tail(record.get("log"), record.get("log_tail"))
        if result.launcher == "slurm":
            err.print("re-run the same command to submit again only what did not finish", highlight=False)
        raise typer.Exit(1)


def _print_log_tail(log, lines) -> None:
    if lines:
        err.print(escape(f"    last lines of {log}:"), highlight=False, soft_wrap=True)
        for line in lines:
            err.print(escape(f"    | {line}"), highlight=False, soft_wrap=True)


class _Progress:
    """A rich progress bar over runs, with ETA and the current pack's epoch and step: shown from the
    sweep's 'start' event to its 'end' (nothing before: an error in the data leaves one line)."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            TextColumn("{task.fields[detail]}"), console=err)
        self.task = None
        self.shown = False
        self.finished = 0
        self.pack_runs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close(*exc)

    def _close(self, *exc) -> None:
        if self.shown:
            self.shown = False
            self.bar.__exit__(*(exc or (None, None, None)))

    def __call__(self, event: str, **info) -> None:
        if event == "start":
            self.bar.__enter__()
            self.shown = True
            self.task = self.bar.add_task("runs", total=max(info["total"] - info["skipped"], 1), detail="")
        elif event == "end":
            self._close()
        elif event == "pack":
            self.pack_runs = len(info["runs"])
            self.bar.update(self.task, detail=", ".join(info["runs"][:2]) + ("..." if self.pack_runs > 2 else ""))
        elif event == "epoch":
            fraction = (info["epoch"] + info["step"] / info["steps"]) / info["epochs"]
            self.bar.update(self.task, completed=self.finished + fraction * self.pack_runs,
                            description=f"epoch {info['epoch'] + 1}/{info['epochs']}")
        elif event == "status":
            self.bar.update(self.task, detail=info["text"])
        elif event == "warning":
            self.bar.console.print(f"[yellow]warning:[/] {escape(info['text'])}", highlight=False)
        elif event == "waiting":
            self.bar.console.print(f"{len(info['runs'])} run(s) are being trained by another l2sweep process on "
                                   f"this folder: skipped them, now waiting for them to finish")
        elif event == "done":
            self._done(info["records"])

    def _done(self, records: list[dict]) -> None:
        self.finished += len(records)
        self.bar.update(self.task, completed=self.finished)
        for record in records:  # a line per finished run: readable in logs, too
            acc = (record.get("metrics") or {}).get("test_acc")
            shown = f"test {acc:.2f} %" if acc is not None else record.get("error") or ""
            self.bar.console.print(escape(f"{record['run_id']}: {record['status']} {shown} "
                                          f"({record.get('seconds') or 0:.0f} s)"), highlight=False)
        first = records[0]
        if len(records) > 1 and first.get("peak_memory_mib") is not None:
            kind = "allocated on the GPU" if str(first["device"]).startswith("cuda") else "process RSS"
            self.bar.console.print(f"pack of {len(records)} runs: {first['seconds']:.0f} s, "
                                   f"peak memory {first['peak_memory_mib']:,.0f} MiB ({kind})", highlight=False)


@app.command(help="Rebuild runs.csv, summary.csv, report.md (with the verdict) and plots/ of a results folder "
             "from its runs/*.json alone; trains nothing.")
def report(
    results_dir: Path = typer.Argument(..., help="A folder written by `l2sweep run`, e.g. results/ablation"),
    min_effect_pp: Optional[float] = typer.Option(None, help="Smallest effect of interest in percentage points "
                                                  "(default: the sweep's report.min_effect_pp, 0.1)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg.report import ReportError, write_reports

    if min_effect_pp is not None and not min_effect_pp > 0:
        _fail(f"--min-effect-pp={min_effect_pp}: must be > 0 (percentage points)", None, debug)
    with _unexpected_errors(debug):
        try:
            report_ = write_reports(results_dir, min_effect_pp)
        except ReportError as error:
            _fail(str(error), error, debug)
        _show(report_, results_dir)


OVERVIEW_HELP = """The claim check at a glance: a markdown table with a row per results folder and context
(the main grid and each control): its regime, runs reported of those planned (a folder with
several contexts: each row its own runs, the folder's total in the note), their compute (sum of
the runs' wall times, median run), each claim's verdict
and the highest paired gain in test accuracy with its own 95 % CI, n and call. Read from the
reports `l2sweep report` wrote; recomputes nothing; a folder not started, without a report, or
whose report is older than its runs says so. Printed, and written to --out when given.

Example: l2sweep overview results/ablation results/controls-dropout --out results/claim-check.md
(`make overview` lists the claim check's folders.)
"""


@app.command(help=OVERVIEW_HELP)
def overview(
    results_dirs: list[Path] = typer.Argument(..., help="Results folders, e.g. results/ablation results/controls-*"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the table to this markdown file."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg.overview import OverviewError, write_overview

    with _unexpected_errors(debug):
        try:
            text = write_overview(results_dirs, out_file)
        except OverviewError as error:
            _fail(str(error), error, debug)
        typer.echo(text)  # plain markdown, never wrapped or styled by the console


STATUS_HELP = """Where each run of a results folder stands: done, running, queued, failed or not started, from
its run file (runs/*.json), its lock (a run training on this host) and, for runs submitted with
launcher=slurm (jobs.json), the scheduler (squeue; no accounting needed). A SLURM job that ended
without a result (cancelled, killed at its time limit, out of memory, node lost) is reported as
failed with the last lines of its log. Re-running the same `l2sweep run` command submits again
only the runs that are neither done nor queued or running. Trains nothing; exit 0.
"""


@app.command(help=STATUS_HELP)
def status(
    results_dir: Path = typer.Argument(..., help="A folder written by `l2sweep run`, e.g. results/ablation"),
    show_all: bool = typer.Option(False, "--all", help="List every run, done ones included."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg.executors import slurm_jobs
    from l2reg.executors import status as run_status

    with _unexpected_errors(debug):
        if not results_dir.is_dir() or not any((results_dir / f).exists() for f in ("runs", "sweep.json",
                                                                                   slurm_jobs.JOBS_FILE)):
            _fail(f"{results_dir} is not a results folder of `l2sweep run` (no runs/, sweep.json or jobs.json)", None,
                  debug)
        reader = run_status.StatusReader(results_dir)
        states = reader()
        counts = run_status.summary_counts(states)
        ok = sum(1 for s in states.values() if s.state == "done" and (s.record or {}).get("status") == "ok")
        out.print(escape(f"{results_dir}: {len(states)} runs: {counts['done']} done ({ok} ok, {counts['done'] - ok} "
                         f"diverged), {counts['running']} running, {counts['queued']} queued, {counts['failed']} "
                         f"failed, {counts['not started']} not started"
                         + (f", {counts['unknown']} unknown" if counts.get("unknown") else "")),
                  highlight=False, soft_wrap=True)
        if reader.scheduler_error:
            err.print(f"[yellow]warning:[/] {escape(reader.scheduler_error)}: the state of SLURM jobs is unknown",
                      highlight=False)
        submissions = slurm_jobs.read_jobs(results_dir)
        if submissions:
            last = submissions[-1]
            out.print(escape(f"SLURM: {len(submissions)} submission(s), the last at {last['submitted_at']}: job(s) "
                             f"{', '.join(last['job_ids'])}, logs in {last['submitit_folder']}"),
                      highlight=False, soft_wrap=True)
        order = {"failed": 0, "unknown": 1, "running": 2, "queued": 3, "not started": 4, "done": 5}
        for state in sorted(states.values(), key=lambda s: (order.get(s.state, 9), s.run_id)):
            if state.state == "done" and not show_all:
                continue
            job = f" job {state.job_id}" if state.job_id else ""
            out.print(escape(f"{state.state:>11}  {state.run_id}{job}" + (f": {state.detail}" if state.detail else "")),
                      highlight=False, soft_wrap=True)
            if state.state == "failed" and state.log_tail:
                out.print(escape(f"             last lines of {state.log}:"), highlight=False, soft_wrap=True)
                for line in state.log_tail:
                    out.print(escape(f"             | {line}"), highlight=False, soft_wrap=True)
        if counts["failed"] or counts["not started"]:
            out.print("re-run the same `l2sweep run` command to train (or submit) only what is missing",
                      highlight=False)


def _show(report_, results_dir: Path) -> None:
    """The summary as a rich table, each context's claim verdicts, warnings, and where the files are."""
    analysis = report_.analysis
    for name, why in report_.skipped:
        err.print(f"[yellow]warning:[/] skipped runs/{escape(name)}: {escape(why)}", highlight=False, soft_wrap=True)
    out.print(_summary_table(analysis.summary, escape(f"Test accuracy (%), {results_dir}")))
    runs = report_.runs
    not_ok = runs[runs["status"] != "ok"]
    if len(not_ok):
        err.print(f"{len(not_ok)} run(s) not ok, left out of the statistics: {', '.join(not_ok['run_id'])}",
                  highlight=False, soft_wrap=True)
    several = len(analysis.verdicts) > 1
    for context, claims in analysis.verdicts.items():
        out.print(f"[bold]verdicts{escape(f' [{context}]') if several else ''}[/] (smallest effect of interest "
                  f"{analysis.min_effect_pp:g} pp):")
        for claim, verdict in claims.items():
            first = verdict["reasons"][0] if verdict["reasons"] else ""
            out.print(f"  {claim}: [bold]{verdict['verdict']}[/] - {escape(first)}", highlight=False)
        path = report_.paths[context]
        if not path["one_path"]:
            err.print(f"[yellow]warning:[/] the runs of {escape(str(context))} do not all record one code path "
                      f"and device (code path: {', '.join(path['code_paths'])}; device: "
                      f"{', '.join(path['devices'])}): a difference between arms may come from the code",
                      highlight=False, soft_wrap=True)
    out.print(f"report: {Path(results_dir) / 'report.md'} (verdict.json for scripts)")


@app.command(help="What l2sweep costs on this machine's device against a plain PyTorch DataLoader loop "
             "(the reference), in one process: training samples/s of the plain loop and of l2sweep with several pack "
             "sizes (eager and compiled), and with --whole-run one complete run of each (evaluations and feature "
             "metrics included). Model, setting, lr, batch size and epochs come from the composed config "
             "(default here: alpha=1e-4 target=both). Prints a table, writes bench.json.")
def bench(
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides, e.g. data.root=... train.device=cpu"),
    steps: int = typer.Option(100, min=10, help="Timed training steps per step measurement."),
    pack_sizes: str = typer.Option("", help="Comma list of pack sizes (default: 1,2 on CPU; "
                                   "1,8,32,64,128,256 on CUDA)."),
    output: Path = typer.Option(Path("bench.json"), "--out", help="Where to write the measurements."),
    compiled: bool = typer.Option(True, "--compile/--no-compile", help="Also measure with torch.compile: "
                                  "pack size 1 on a CPU, the largest pack on CUDA (compiles first)."),
    whole_run: bool = typer.Option(True, "--whole-run/--no-whole-run", help="Also time one complete run of the "
                                   "config with the plain loop and with l2sweep (minutes on a CPU)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg.bench import bench_config, run_bench, write_bench
    from l2reg.data import DataError

    with _unexpected_errors(debug):
        try:
            cfg, device, sizes = bench_config(list(overrides or []), pack_sizes)
        except (ValueError, DataError) as error:  # ConfigError included
            _fail(str(error), error, debug)
        result = run_bench(cfg, device, steps, sizes, compiled, whole_run,
                           progress=lambda m: err.print(f"measuring: {m}"))
        write_bench(result, output)
        setting = " ".join(f"{k}={v}" for k, v in result["setting"].items())
        table = Table(title=f"l2sweep bench on {result['device']}, {steps} steps of {result['batch_size']}, "
                            f"torch {result['torch']}, {setting}")
        for column in ("measurement", "runs", "samples/s", f"runs/min ({result['epochs']} ep)", "x plain",
                       "peak MiB"):
            table.add_column(column, justify="left" if column == "measurement" else "right")
        for row in result["rows"]:
            table.add_row(row["name"], str(row["runs"]), f"{row['samples_per_s']:,.0f}",
                          f"{row['runs_per_min']:.3f}", f"{row['speedup']:.2f}", f"{row['peak_mib']:.0f}")
        out.print(table)
        if result["whole_run"]:
            whole = Table(title=f"one whole {result['epochs']}-epoch run (wall seconds)")
            for column in ("measurement", "seconds", "x plain", "test acc %", "evaluations", "feature metrics"):
                whole.add_column(column, justify="left" if column == "measurement" else "right")
            for row in result["whole_run"]:
                evals = f"{row['eval_seconds']:.1f} s" if "eval_seconds" in row else "-"
                feats = (f"{row['features_seconds']:.1f} s ({row['features_share']:.1%})"
                         if "features_seconds" in row else "-")
                whole.add_row(row["name"], f"{row['seconds']:.1f}", f"{row['speedup']:.2f}", f"{row['test_acc']:.2f}",
                              evals, feats)
            out.print(whole)
        if result.get("planning"):
            planning = Table(title="planning, as `l2sweep run --dry-run` plans (compose, expand, validate, run ids)")
            for column in ("measurement", "runs", "seconds", "runs/s", "us per run", "one compose (ms)"):
                planning.add_column(column, justify="left" if column == "measurement" else "right")
            for row in result["planning"]:
                planning.add_row(row["name"], f"{row['runs']:,}", f"{row['seconds']:.2f}", f"{row['runs_per_s']:,.0f}",
                                 f"{row['us_per_run']:.1f}", f"{row['compose_seconds'] * 1000:.0f}")
            out.print(planning)
        out.print(f"written: {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
