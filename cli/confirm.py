"""`l2sweep confirm`: plan, run and report a confirmation study (l2reg.confirm). Parses, calls
the library, prints, sets the exit code: 0 done (or a look trained), 1 runs failed, 2 invalid
input or a plan that cannot be trusted, 130 interrupted."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

confirm_app = typer.Typer(
    no_args_is_help=True,
    help="Confirmation studies: a screen's candidates on fresh seeds under a plan committed before its "
         "first run, group-sequential (O'Brien-Fleming spending, graphical Holm, futility), stopped when "
         "every hypothesis is decided. `plan` writes plan.json, commit it, then `run`; `report` rebuilds "
         "confirmation.md.",
)

PLAN_HELP = """Choose the candidates from SCREEN (a finished results folder) by the declared rule and write
results/<name>/plan.json (nothing is trained). The rule: the top K settings of the screen's context
by paired gain in test accuracy among those not called worse, diverged or not tested. Seeds start at
1000 (never a screen's). Commit plan.json in its own commit before `l2sweep confirm run`: the run
refuses an uncommitted or changed plan."""

RUN_HELP = """Train the study look by look until its stopping rule: each look trains the next seeds of every arm
still open and of the baseline, then decides. Resumable: the run files are the state. OVERRIDES go
to every `l2sweep run` of the study, e.g. launcher=local launcher.n_jobs=2 (they must not change a
run's numbers' identity: setting and context keys come from the plan)."""


def _console():
    from .main import _fail, err, out

    return _fail, err, out


@confirm_app.command("plan", help=PLAN_HELP, short_help="Choose the candidates and write plan.json.")
def plan_command(
    screen: Path = typer.Argument(..., help="The screen's results folder, e.g. results/ablation."),
    name: str = typer.Option(..., "--name", help="The study's folder name under --results-dir."),
    k: int = typer.Option(3, "--k", min=1, help="Candidates taken from the screen."),
    looks: str = typer.Option("10,20,30,40", "--looks", help="Seeds per arm at each look, increasing."),
    first_seed: int = typer.Option(1000, "--first-seed", help="The first confirmatory seed (>= 1000)."),
    context: Optional[str] = typer.Option(None, "--context", help="The screen's context, when it has several."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where the study folder goes."),
) -> None:
    import datetime

    from l2reg.confirm.plan import PlanError, make_plan, setting_name, write_plan

    fail, err, out = _console()
    try:
        numbers = tuple(int(n) for n in looks.split(","))
    except ValueError:
        fail(f"--looks={looks}: give seeds per arm as comma-separated integers, e.g. 10,20,30,40", None, False)
    try:
        plan = make_plan(screen, name, k=k, looks=numbers, first_seed=first_seed, context=context,
                         created=datetime.date.today().isoformat())
        path = write_plan(results_dir / name, plan)
    except PlanError as error:
        fail(str(error), error, False)
    for h, arm in zip(plan["hypotheses"], plan["arms"]):
        out.print(escape(f"{h['id']}: {setting_name(arm['setting'])} (screen {h['screen']['delta_pp']:+.3f} pp, "
                         f"n = {h['screen']['n']})"), highlight=False)
    sim = plan["simulation"]["screen_estimates"]
    out.print(escape(f"simulated with the screen's estimates: {sim['runs_mean']:.0f} runs on average (at most "
                     f"{sim['runs_max']}), rejection rates {', '.join(f'{r:.2f}' for r in sim['rejection_rate'])}"),
              highlight=False)
    err.print(escape(f"wrote {path} (hash {plan['hash'][:16]}); commit it alone, before the first run: "
                     f"git add -f {path} && git commit -m 'Plan of the {name} confirmation study'"),
              highlight=False, soft_wrap=True)


@confirm_app.command("run", help=RUN_HELP, short_help="Train the study look by look to its stopping rule.")
def run_command(
    study: Path = typer.Argument(..., help="The study folder holding plan.json."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Extra overrides for every run, e.g. launcher=local."),
    looks: Optional[int] = typer.Option(None, "--looks", min=1, help="Train at most this many looks, then stop."),
    unregistered: bool = typer.Option(False, "--unregistered", help="Run a plan that is not committed to git (no "
                                      "pre-registration: every report of the study says so)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    from l2reg.config import ConfigError
    from l2reg.confirm.plan import PlanError
    from l2reg.confirm.report import write_confirmation
    from l2reg.confirm.study import run_study
    from l2reg.data import DataError

    from .main import _message, _Progress

    fail, err, out = _console()
    try:
        with _Progress() as progress:
            result = run_study(study, extra=overrides or [], progress=progress, messages=_message, max_looks=looks,
                               unregistered=unregistered)
    except (PlanError, ConfigError, DataError, ValueError) as error:
        fail(str(error), error, debug)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: finished runs are kept; the same command resumes the study[/]")
        raise typer.Exit(130) from None
    out.print(write_confirmation(study).split("## Hypotheses")[0].strip(), highlight=False, soft_wrap=True)
    failed = [r for r in result.records if r.get("status") == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} run(s) failed:[/] run the same command again to retry them")
        raise typer.Exit(1)


@confirm_app.command("report", help="Rebuild confirmation.md and confirmation.json of a study from its plan and runs.")
def report_command(study: Path = typer.Argument(..., help="The study folder holding plan.json.")) -> None:
    from l2reg.confirm.plan import PlanError
    from l2reg.confirm.report import write_confirmation

    fail, _, out = _console()
    try:
        content = write_confirmation(study)
    except PlanError as error:
        fail(str(error), error, False)
    out.print(content.split("## Hypotheses")[0].strip(), highlight=False, soft_wrap=True)
