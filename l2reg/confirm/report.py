"""The confirmation study's report: confirmation.md and confirmation.json beside the study's
ordinary reports, from its plan and its runs alone (l2reg.confirm.study.replay).

Per hypothesis: the decision and the look that made it, the naive estimate at that look, the
estimate and 95 % CI adjusted for the sequential design (stage-wise ordering), and the screen's
estimate (biased upward: the largest of the screen's settings). The secondary family (stability
by churn) is tested once, at each candidate's last look, as the plan declares; the feature
metrics and the train-test gap are described. Every report cites the plan's hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from l2reg import files, stats, text
from l2reg.confirm import design as D
from l2reg.confirm.plan import PlanError, load_plan, setting_name
from l2reg.confirm.study import STATE_FILE, Replay, _arm_runs, design_of, replay

REPORT_FILE = "confirmation.md"
JSON_FILE = "confirmation.json"
DESCRIBED = ("train_acc", "probe_acc_100", "probe_acc_1000", "probe_acc_100_cv", "noise_acc_0.1", "noise_acc_0.2",
             "noise_acc_0.3")


def _name(setting: dict) -> str:
    return setting_name(setting)


def _last_seeds(plan: dict, h: D.HypothesisState) -> range:
    first = int(plan["seeds"]["first"])
    n = h.tests[-1]["n"] if h.tests else 0
    return range(first, first + int(plan["seeds"]["looks"][len(h.tests) - 1])) if n else range(first, first)


def hypothesis_rows(plan: dict, result: Replay) -> list[dict]:
    design = design_of(plan)
    rows = []
    for spec, h in zip(plan["hypotheses"], result.state.hypotheses):
        arm = next(a for a in plan["arms"] if a["arm"] == spec["arm"])
        last = h.tests[-1] if h.tests else {}
        n, mean, sd = last.get("n", 0), last.get("mean", float("nan")), last.get("sd", float("nan"))
        half = float(sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n >= 2 and np.isfinite(sd) else float("nan")
        # the stage-wise ordering is defined at the look that decided a hypothesis: none while it is open
        decided = h.tests and h.decision != D.OPEN
        adjusted = D.adjusted_estimate(design, h) if decided else {"median": np.nan, "low": np.nan, "high": np.nan}
        rows.append({"id": spec["id"], "arm": spec["arm"], "setting": _name(arm["setting"]),
                     "decision": h.decision, "look": None if h.look is None else h.look + 1, "n": n,
                     "level": h.level, "estimate_pp": mean, "ci_low_pp": mean - half, "ci_high_pp": mean + half,
                     "adjusted_pp": adjusted["median"], "adjusted_low_pp": adjusted["low"],
                     "adjusted_high_pp": adjusted["high"], "screen_pp": spec["screen"]["delta_pp"],
                     "screen_low_pp": spec["screen"]["paired_ci_low_pp"],
                     "screen_high_pp": spec["screen"]["paired_ci_high_pp"], "looks": h.tests})
    return rows


def churn_rows(plan: dict, result: Replay) -> list[dict]:
    """The secondary family: churn of each candidate against the baseline over its last look's seeds,
    permutation p (H1: lower churn), Holm over the candidates."""
    from l2reg.report import predictions_of

    predictions, _ = predictions_of(result.records)
    rows = []
    for spec, h in zip(plan["hypotheses"], result.state.hypotheses):
        arm = next(a for a in plan["arms"] if a["arm"] == spec["arm"])
        seeds = _last_seeds(plan, h)
        mine = _arm_runs(result.runs, plan, arm)
        mine = mine[(mine["status"] == "ok") & mine["seed"].isin(seeds)].set_index("seed")["run_id"]
        base = _arm_runs(result.runs, plan, None)
        base = base[(base["status"] == "ok") & base["seed"].isin(seeds)].set_index("seed")["run_id"]
        paired = [s for s in seeds if s in mine.index and s in base.index
                  and mine[s] in predictions and base[s] in predictions]
        if len(paired) < 3:
            rows.append({"id": spec["id"], "setting": _name(arm["setting"]), "n": len(paired), "p_lower": np.nan,
                         "churn_setting": np.nan, "churn_baseline": np.nan, "delta": np.nan, "ci_low": np.nan,
                         "ci_high": np.nan})
            continue
        a = np.stack([predictions[mine[s]] for s in paired])
        b = np.stack([predictions[base[s]] for s in paired])
        test = stats.churn_permutation_test(a, b)
        low, high = stats.churn_interval(a, b)
        rows.append({"id": spec["id"], "setting": _name(arm["setting"]), **test, "ci_low": low, "ci_high": high})
    adjusted = stats.holm_family([r["p_lower"] for r in rows], [r["n"] for r in rows])
    alpha = float(plan["secondary"]["alpha"])
    for row, value in zip(rows, adjusted):
        row["p_lower_holm"] = float(value)
        row["lower"] = bool(value < alpha)
    return rows


def described_rows(plan: dict, result: Replay) -> list[dict]:
    """Paired gains (pp) of the described metrics at each candidate's last look, with t intervals."""
    rows = []
    for spec, h in zip(plan["hypotheses"], result.state.hypotheses):
        arm = next(a for a in plan["arms"] if a["arm"] == spec["arm"])
        seeds = _last_seeds(plan, h)
        mine = _arm_runs(result.runs, plan, arm)
        mine = mine[(mine["status"] == "ok") & mine["seed"].isin(seeds)].set_index("seed")
        base = _arm_runs(result.runs, plan, None)
        base = base[(base["status"] == "ok") & base["seed"].isin(seeds)].set_index("seed")
        row = {"id": spec["id"], "setting": _name(arm["setting"])}
        for metric in ("gap", *DESCRIBED):
            if metric == "gap":
                x = mine["train_acc"] - mine["test_acc"]
                y = base["train_acc"] - base["test_acc"]
            else:
                if metric not in mine:
                    continue
                x, y = mine[metric], base[metric]
            d = pd.concat([pd.to_numeric(x), pd.to_numeric(y)], axis=1, join="inner").dropna()
            diff = (d.iloc[:, 0] - d.iloc[:, 1]).to_numpy(dtype=float)
            low, high = stats.t_interval(diff)
            row[metric] = (float(diff.mean()) if len(diff) else np.nan, low, high)
        rows.append(row)
    return rows


def _status(plan: dict, result: Replay) -> str:
    design = design_of(plan)
    state = result.state
    if state.looks_done >= len(design.looks):
        return f"stopped after the last look ({len(design.looks)})"
    if not state.open:
        return f"stopped after look {state.looks_done} of {len(design.looks)}: every hypothesis decided"
    need = "; ".join(result.missing) if result.missing else "nothing trained yet"
    return (f"**in progress**: {state.looks_done} of {len(design.looks)} looks decided; look {state.looks_done + 1} "
            f"still needs {need} (`l2sweep confirm run` resumes)")


def answer(rows: list[dict], margin: float) -> str:
    """The study's answer in one sentence."""
    confirmed = [r for r in rows if r["decision"] == D.CONFIRMED]
    futile = [r for r in rows if r["decision"] == D.FUTILE]
    rest = [r for r in rows if r["decision"] not in (D.CONFIRMED, D.FUTILE)]
    parts = []
    if confirmed:
        parts.append("confirmed better than the baseline by more than "
                     f"{margin:g} pp: " + "; ".join(f"{r['setting']} (adjusted {text.number(r['adjusted_pp'])} pp, "
                                                    f"95 % CI {text.number(r['adjusted_low_pp'])} to "
                                                    f"{text.number(r['adjusted_high_pp'])})" for r in confirmed))
    if futile:
        parts.append(f"shown not to gain {margin:g} pp: " + "; ".join(r["setting"] for r in futile))
    if rest:
        parts.append("not decided: " + "; ".join(f"{r['setting']} ({r['decision']})" for r in rest))
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def write_confirmation(folder: Path) -> str:
    """Write confirmation.md and confirmation.json of a study folder; return the markdown."""
    folder = Path(folder)
    plan = load_plan(folder)
    result = replay(folder, plan)
    margin = float(plan["hypotheses"][0]["margin_pp"])
    rows = hypothesis_rows(plan, result)
    churn = churn_rows(plan, result) if result.state.stopped(design_of(plan)) else []
    described = described_rows(plan, result)
    pinned = files.read_json(folder / STATE_FILE) if (folder / STATE_FILE).exists() else {}
    if pinned and pinned.get("plan_hash") != plan["hash"]:
        raise PlanError(f"{folder}: its runs were made under plan {str(pinned.get('plan_hash'))[:12]}, and plan.json "
                        f"now has {plan['hash'][:12]}: no report of a changed plan")
    lines = [f"# Confirmation study: {plan['study']}", "",
             f"Plan: `plan.json`, hash `{plan['hash'][:16]}`" + (f", registered in commit {pinned['plan_commit'][:10]}"
                                                                if pinned.get("plan_commit") else
                                                                ", **never registered in git** (--unregistered)"
                                                                if pinned else ", no run yet")
             + f". Screen: `{plan['screen']['folder']}` (context `{plan['screen']['context']}`). Status: "
             f"{_status(plan, result)}.", "",
             f"**Answer.** {answer(rows, margin)}", "",
             "## Hypotheses (accuracy)", "",
             f"H0: mean paired gain in test accuracy <= {margin:g} pp, one-sided, family-wise alpha {plan['alpha']} "
             f"(graphical Holm, O'Brien-Fleming-type spending at {', '.join(map(str, plan['seeds']['looks']))} seeds "
             "per arm); futility: shown below the margin (non-binding). Adjusted: stage-wise median-unbiased estimate "
             "and 95 % CI at the deciding look (n/a while a hypothesis is open), the sd of that look taken as known: "
             "normal quantiles, so at n seeds its CI is narrower than a t interval by about z/t_(n-1) (6 % at 20 "
             "seeds, 3 % at 40). Screen: the screen's own paired estimate and 95 % CI (biased upward: "
             "the candidates are the screen's largest).", ""]
    table = pd.DataFrame([{
        "hypothesis": r["id"], "setting": r["setting"], "decision": r["decision"], "look": r["look"] or "-",
        "seeds": r["n"], "naive pp [95 % CI]": f"{text.number(r['estimate_pp'])} [{text.number(r['ci_low_pp'])}, "
                                               f"{text.number(r['ci_high_pp'])}]",
        "adjusted pp [95 % CI]": (f"{text.number(r['adjusted_pp'])} [{text.number(r['adjusted_low_pp'])}, "
                                  f"{text.number(r['adjusted_high_pp'])}]" if np.isfinite(r["adjusted_pp"])
                                  else "n/a (open)"),
        "screen pp [95 % CI]": f"{text.number(r['screen_pp'])} [{text.number(r['screen_low_pp'])}, "
                               f"{text.number(r['screen_high_pp'])}]"} for r in rows])
    lines += [text.markdown_table(table), "", "## Looks", ""]
    looks = pd.DataFrame([{"hypothesis": r["id"], "look": t["look"] + 1, "seeds": t["n"],
                           "mean pp": text.number(t["mean"]), "sd pp": text.number(t["sd"], 3, False),
                           "t": text.number(t["t"], 2), "p (gain > m)": text.p_value(t["p_greater"]),
                           "level": f"{t.get('level', float('nan')):.4g}",
                           "nominal p needed": text.p_value(t.get("nominal_p")),
                           "p (gain < m)": text.p_value(t["p_less"]),
                           "futility p needed": text.p_value(t.get("futility_nominal_p"))}
                          for r in rows for t in r["looks"]])
    lines += [text.markdown_table(looks) if len(looks) else "no look decided yet", ""]
    lines += _secondary_lines(plan, churn, described)
    content = "\n".join(lines)
    files.write_text_atomic(folder / REPORT_FILE, content)
    files.write_json_atomic(folder / JSON_FILE, {"plan_hash": plan["hash"], "status": _status(plan, result),
                                                 "hypotheses": [{k: v for k, v in r.items() if k != "looks"} | {
                                                     "looks": r["looks"]} for r in rows],
                                                 "churn": churn, "described": described})
    return content


def _secondary_lines(plan: dict, churn: list[dict], described: list[dict]) -> list[str]:
    lines = ["## Stability by churn (secondary, confirmatory)", "", plan["secondary"]["text"] + ".", ""]
    if churn:
        lines += [text.markdown_table(pd.DataFrame([{
            "hypothesis": r["id"], "setting": r["setting"], "seeds": r["n"],
            "churn (images)": text.number(r["churn_setting"], 1, False),
            "baseline churn": text.number(r["churn_baseline"], 1, False),
            "change [95 % jackknife-t CI]": f"{text.number(r['delta'], 1)} [{text.number(r['ci_low'], 1)}, "
                                          f"{text.number(r['ci_high'], 1)}]",
            "permutation p (Holm)": text.p_value(r["p_lower_holm"]),
            "lower churn": "yes" if r["lower"] else "not shown"} for r in churn])), ""]
    else:
        lines += ["Tested when the study stops.", ""]
    lines += ["## Described (no decision)", "",
              "Paired change over each candidate's last look's seeds, pp, with the 95 % t interval: the train-test "
              "gap (negative = less overfitting) and the feature metrics.", ""]
    shown = []
    for r in described:
        cells = {"hypothesis": r["id"], "setting": r["setting"]}
        for metric in ("gap", *DESCRIBED):
            if metric in r:
                mean, low, high = r[metric]
                cells[metric] = f"{text.number(mean, 2)} [{text.number(low, 2)}, {text.number(high, 2)}]"
        shown.append(cells)
    lines += [text.markdown_table(pd.DataFrame(shown)), ""]
    return lines
