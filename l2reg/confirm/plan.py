"""The plan of a confirmation study: chosen from a screen by a declared rule, written before the
first run, hashed, and refused once changed.

plan.json holds everything that decides the study: the screen it came from (folder, context,
commit of its runs), the candidate rule and the candidates it chose (with the screen's own,
biased, estimates), the hypotheses (claim, setting, metric, margin, direction), the looks (seeds
per arm), the seeds (from FIRST_SEED up, never a screen's), the error spending, the multiplicity
procedure, the futility rule, the secondary tests, each arm's overrides for `l2sweep run`, and a
simulation of the design under the screen's estimates. Its "hash" is the SHA-256 of the rest
(canonical JSON); every report cites it; `l2sweep confirm run` refuses a plan whose content no
longer matches its hash, or a folder whose runs were started under another hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from l2reg import axes, files, schedules
from l2reg.claims.base import DIVERGED, NOT_TESTED, WORSE
from l2reg.confirm import design as D

PLAN_FILE = "plan.json"
FIRST_SEED = 1000  # confirmatory seeds start here: no screen of this project uses seeds >= 1000
DEFAULT_LOOKS = (10, 20, 30, 40)
DEFAULT_K = 3
# the t boundaries come from z boundaries by equal nominal p: at 2-3 degrees of freedom that keeps
# the error rate within 0.003 of its level only roughly (0.029 for 0.025 measured with looks 3,6,9,12)
MIN_FIRST_LOOK = 5
ALPHA = 0.025  # family-wise, one-sided (the two-sided 0.05 convention of a confirmatory test)
FUTILITY_ALPHA = 0.025  # per hypothesis, one-sided
CHURN_ALPHA = 0.05  # the secondary family (stability by churn), one-sided, Holm over the candidates
SIMULATION_REPLICATES = 2000
# semantic training/data keys copied from the screen's runs when they differ from the schema
CONTEXT_SECTIONS = ("train", "data")
NOT_CONTEXT = {"data": ("root", "download"), "train": ("device", "pack_size", "eval_batch_size", "deterministic",
                                                       "compile")}
EXCLUDED_CALLS = (WORSE, DIVERGED, NOT_TESTED)


class PlanError(ValueError):
    """A plan that cannot be made, read or trusted: one line saying why and what to do."""


CANDIDATE_RULE = (f"the top k settings of the screen's context by paired gain in test accuracy (delta_pp), "
                  f"among the settings whose accuracy call is none of {', '.join(EXCLUDED_CALLS)}; ties broken by "
                  "the setting's name")


def choose_candidates(summary: pd.DataFrame, context: str, k: int) -> pd.DataFrame:
    """The declared rule (CANDIDATE_RULE) applied to a screen's summary.csv."""
    rows = summary[(summary["context"] == context) & (~axes.baseline_rows(summary))].copy()
    rows = rows[~rows["call"].isin(EXCLUDED_CALLS) & rows["delta_pp"].notna()]
    rows["_name"] = [" ".join(f"{c}={r[c]}" for c in axes.SETTING_COLUMNS) for _, r in rows.iterrows()]
    return rows.sort_values(["delta_pp", "_name"], ascending=[False, True], kind="stable").head(k)


def setting_name(setting: dict) -> str:
    """A candidate named by alpha, target, schedule (the main grid's axes: `schedule=constant` is
    a choice there, not an absence) and every other setting axis not at its "off" value
    (`alpha=0.01 target=activations schedule=exponential(gamma=1)`)."""
    from l2reg import text

    shown = [ax.column for ax in axes.SETTING_AXES
             if ax.column in ("alpha", "target", "schedule") or str(setting.get(ax.column)) != str(ax.off)]
    return " ".join(text.axis_value(c, setting[c]) for c in shown if c in setting)


def _screen_record(screen: Path, context: str, setting: dict) -> dict:
    """A run record of the screen with this context and setting (its config gives the overrides)."""
    for path in files.run_files(screen / "runs"):
        record = files.read_json(path)
        if record.get("context") != context or record.get("status") != "ok":
            continue
        shown = {**record["setting"]}
        if all(str(shown.get(c)) == str(setting[c]) for c in axes.SETTING_COLUMNS if c != "alpha") and \
                float(shown.get("alpha")) == float(setting["alpha"]):
            return record
    raise PlanError(f"{screen / 'runs'} has no ok run of context {context} with setting {setting}")


def arm_overrides(config: dict) -> list[str]:
    """`l2sweep run` overrides that reproduce a run's setting and context (not its seed): every
    setting axis, and the semantic train/data keys whose value differs from the schema default."""
    from l2reg.config import Config, to_dict

    defaults = to_dict(Config())
    out = []
    for ax in axes.SETTING_AXES:
        if ax.key == "schedule":
            name = config["schedule"]["name"]
            out += [f"schedule={name}", *[f"schedule.{p}={config['schedule'][p]}" for p in schedules.PARAMETERS[name]]]
            continue
        value = config
        for part in ax.key.split("."):
            value = value[part]
        out.append(f"{ax.key}={'null' if value is None else value}")
    for section in CONTEXT_SECTIONS:
        for key, value in config[section].items():
            if key in NOT_CONTEXT[section] or value == defaults[section].get(key):
                continue
            out.append(f"{section}.{key}={'null' if value is None else value}")
    return out


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_hash(plan: dict) -> str:
    """SHA-256 of the plan without its "hash" entry (canonical JSON)."""
    return hashlib.sha256(canonical_json({k: v for k, v in plan.items() if k != "hash"}).encode()).hexdigest()


def _read_screen(screen: Path, context: str | None) -> tuple[pd.DataFrame, dict, str]:
    """A finished screen's summary.csv, verdict.json and the context to confirm (the only one, or
    `context`)."""
    summary_path, verdict_path = screen / "summary.csv", screen / "verdict.json"
    if not summary_path.is_file() or not verdict_path.is_file():
        raise PlanError(f"{screen} has no summary.csv/verdict.json: run `l2sweep report {screen}` first")
    verdict = files.read_json(verdict_path)
    if verdict.get("interim"):
        raise PlanError(f"{screen} is an interim screen ({verdict['runs_final']} of {verdict['runs_planned']} runs): "
                        "choose candidates from a finished screen")
    summary = pd.read_csv(summary_path)
    contexts = sorted(summary["context"].unique())
    if context is None:
        if len(contexts) != 1:
            raise PlanError(f"{screen} has {len(contexts)} contexts ({', '.join(contexts)}): choose one with --context")
        context = contexts[0]
    elif context not in contexts:
        raise PlanError(f"context {context!r} is not in {screen}: it has {', '.join(contexts)}")
    return summary, verdict, context


def _checked_looks(looks: Sequence[int], first_seed: int) -> tuple[int, ...]:
    """The looks as increasing seeds per arm from MIN_FIRST_LOOK, with fresh seeds from FIRST_SEED."""
    looks = tuple(int(n) for n in looks)
    if any(b <= a for a, b in zip(looks, looks[1:])) or looks[0] < MIN_FIRST_LOOK:
        raise PlanError(f"looks={','.join(map(str, looks))}: seeds per arm must increase, from at least "
                        f"{MIN_FIRST_LOOK}")
    if first_seed < FIRST_SEED:
        raise PlanError(f"first seed {first_seed}: confirmatory seeds start at {FIRST_SEED} (never a screen's)")
    return looks


def _arms_and_hypotheses(screen: Path, summary: pd.DataFrame, context: str, k: int,
                         margin: float) -> tuple[list[dict], list[dict]]:
    """The candidates by CANDIDATE_RULE: an arm each (setting and the overrides that train it) and
    its hypothesis (gain above `margin`, with the screen's estimate beside it)."""
    chosen = choose_candidates(summary, context, k)
    if chosen.empty:
        raise PlanError(f"no setting of {screen} qualifies as a candidate ({CANDIDATE_RULE})")
    arms, hypotheses = [], []
    for index, (_, row) in enumerate(chosen.iterrows(), 1):
        setting = {c: (float(row[c]) if c == "alpha" else row[c]) for c in axes.SETTING_COLUMNS}
        record = _screen_record(screen, context, setting)
        arm = f"A{index}"
        arms.append({"arm": arm, "setting": setting, "overrides": arm_overrides(record["config"])})
        hypotheses.append({"id": f"H{index}", "arm": arm, "claim": "accuracy", "metric": "test_acc",
                           "margin_pp": margin, "direction": "greater",
                           "null": f"mean paired gain in test accuracy <= {margin:g} pp",
                           "screen": {"delta_pp": float(row["delta_pp"]), "paired_sd_pp": float(row["paired_sd_pp"]),
                                      "paired_ci_low_pp": float(row["paired_ci_low_pp"]),
                                      "paired_ci_high_pp": float(row["paired_ci_high_pp"]),
                                      "n": int(row["paired_n"]), "call": row["call"]}})
    return arms, hypotheses


def _declared_rules() -> dict:
    """The plan's fixed declarations, in words a reviewer reads: level, spending, test, multiplicity,
    futility, stopping, estimates, the secondary family and what is only described."""
    return {
        "alpha": ALPHA, "alpha_text": "family-wise error rate, one-sided, over the hypotheses",
        "spending": {"name": D.SPENDING,
                     "text": "alpha(t) = 2 - 2 Phi(z_{1-a/2} / sqrt(t)), t = n_k / n_K, per hypothesis at its "
                             "current level"},
        "test": ("paired by seed, one-sample t-test of d = test_acc(candidate) - test_acc(baseline) against the "
                 "margin, n_k - 1 degrees of freedom; the z boundary becomes a t boundary of equal nominal p"),
        "multiplicity": {"name": D.MULTIPLICITY,
                         "text": ("Bretz et al. 2009; Maurer & Bretz 2013: weights 1/m, a rejected hypothesis "
                                  "passes its weight to the others in equal parts; a hypothesis whose level grows "
                                  "is tested again at this look with the boundaries of its new level, and at the "
                                  "later looks")},
        "futility": {"alpha": FUTILITY_ALPHA,
                     "text": (f"non-binding (the efficacy boundaries ignore it): stop an arm when H0: mean d >= "
                              f"margin is rejected at the boundary of its own O'Brien-Fleming-type spending of "
                              f"{FUTILITY_ALPHA} (one-sided): shown not to gain the margin. Per hypothesis, with no "
                              f"multiplicity correction: the chance that some arm with a true gain above the "
                              f"margin is called 'shown not better' can reach {FUTILITY_ALPHA} times the number of "
                              "arms")},
        "diverged": "a candidate with a diverged run is not confirmed and stops",
        "stopping": "when every hypothesis is decided, or after the last look",
        "estimates": ("stage-wise ordering (the sd of the deciding look taken as known, each look's t boundary as "
                      "tested): median-unbiased estimate and 95 % CI at the deciding look, next to the naive "
                      "estimate and the screen's (biased: the largest of the screen's estimates); futility stops "
                      "are left out of the ordering (non-binding)"),
        "secondary": {"claim": "stability", "metric": "churn",
                      "text": (f"churn (mean over pairs of seeds of the test images two runs of one arm predict "
                               f"differently), candidate vs baseline over the candidate's seeds at its last look: "
                               f"permutation test swapping arm labels within seeds (H1: lower churn), Holm over the "
                               f"candidates at {CHURN_ALPHA} one-sided; not part of the stopping rule"),
                      "alpha": CHURN_ALPHA},
        "descriptive": ("the train-test gap and the feature metrics (the probes on 100 and 1,000 fixed labels, the "
                        "probe on 5 resampled 100-label subsets with a cross-validated ridge, the noisy-input "
                        "accuracies): paired gains with 95 % t intervals over each candidate's last look's seeds, "
                        "no decision"),
    }


def make_plan(screen: Path, name: str, *, k: int = DEFAULT_K, looks: Sequence[int] = DEFAULT_LOOKS,
              first_seed: int = FIRST_SEED, context: str | None = None, replicates: int = SIMULATION_REPLICATES,
              created: str | None = None) -> dict:
    """The plan of a confirmation study of the accuracy claim from a screen folder."""
    screen = Path(screen)
    summary, verdict, context = _read_screen(screen, context)
    looks = _checked_looks(looks, first_seed)
    margin = float(verdict["min_effect_pp"])
    arms, hypotheses = _arms_and_hypotheses(screen, summary, context, k, margin)
    base = summary[(summary["context"] == context) & (axes.baseline_rows(summary))].iloc[0]
    arm_sd = float(base["std_acc"])
    study = D.Design(looks=looks, alpha=ALPHA, futility_alpha=FUTILITY_ALPHA, margin=margin,
                     hypotheses=len(hypotheses))
    simulated = D.simulate(study, [h["screen"]["delta_pp"] for h in hypotheses], arm_sd, arm_sd, replicates, 20261203)
    at_margin = D.simulate(study, [margin] * len(hypotheses), arm_sd, arm_sd, replicates, 20261204)
    plan = {
        "study": name, "kind": "confirmation", "created": created,
        "code": {"commit": files.git_commit(),
                 "text": "the l2sweep commit the plan was made with (its runs record the commit that trained them)"},
        "screen": {"folder": str(screen), "context": context, "commits": sorted({c for c in
                   verdict["code_paths"][context]["commits"]}), "runs": int(verdict["runs"])},
        "candidate_rule": {"text": CANDIDATE_RULE, "k": k},
        "arms": arms,
        "baseline": "alpha = 0 in the same context, every seed of every look (each arm's sweep plans it)",
        "hypotheses": hypotheses,
        "seeds": {"first": first_seed, "looks": list(looks),
                  "text": f"look k trains seeds {first_seed}..{first_seed} + looks[k] - 1 of every open arm and the "
                          "baseline; an arm whose hypothesis is decided trains no more seeds"},
        **_declared_rules(),
        "simulation": {"screen_estimates": simulated, "all_at_margin": at_margin,
                       "model": f"normal, sd {arm_sd:.4f} pp per arm (the screen baseline's seed sd), shared baseline"},
    }
    plan["hash"] = plan_hash(plan)
    return plan


def write_plan(folder: Path, plan: dict) -> Path:
    """Write plan.json into a new study folder; an existing different plan is refused."""
    path = Path(folder) / PLAN_FILE
    if path.exists():
        existing = files.read_json(path)
        if existing.get("hash") != plan["hash"]:
            raise PlanError(f"{path} exists with another plan (hash {str(existing.get('hash'))[:12]}): a plan is "
                            "never replaced; choose another name")
        return path
    Path(folder).mkdir(parents=True, exist_ok=True)
    files.write_json_atomic(path, plan)
    return path


def load_plan(folder: Path) -> dict:
    """The study's plan, checked against its hash."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        raise PlanError(f"{folder} has no {PLAN_FILE}: make one with `l2sweep confirm plan SCREEN --name NAME`")
    plan = files.read_json(path)
    if plan.get("hash") != plan_hash(plan):
        raise PlanError(f"{path} has changed since it was written (its content no longer matches its hash "
                        f"{str(plan.get('hash'))[:12]}): a declared plan is never edited; restore it from git")
    return plan
