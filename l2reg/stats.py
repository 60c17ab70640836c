"""Statistics of a sweep: each setting against the baseline of the same context over seeds.

Accuracies are in percent; differences in percentage points (pp). Only runs with status `ok`
count; the others are reported apart, never silently dropped.
"""

from __future__ import annotations

import pandas as pd

SETTING = ["context", "alpha", "target", "norm", "schedule"]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: n, mean_acc, std_acc, delta_pp (mean minus the baseline's mean)."""
    columns = SETTING + ["n", "n_not_ok", "mean_acc", "std_acc", "delta_pp"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in runs.groupby(SETTING, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]["test_acc"].astype(float)
        rows.append({**dict(zip(SETTING, key)), "n": len(ok), "n_not_ok": int((group["status"] != "ok").sum()),
                     "mean_acc": ok.mean() if len(ok) else float("nan"),
                     "std_acc": ok.std(ddof=1) if len(ok) > 1 else float("nan")})
    summary = pd.DataFrame(rows, columns=columns[:-1])
    baseline = summary[summary["target"] == "none"].set_index("context")["mean_acc"]
    summary["delta_pp"] = summary["mean_acc"] - summary["context"].map(baseline)
    is_base = summary["target"] == "none"
    summary = pd.concat([summary[is_base], summary[~is_base]]).reset_index(drop=True)
    return summary[columns]
