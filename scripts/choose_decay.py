"""Choose the decoupled weight-decay values for the control on VALIDATION accuracy (never test).

Reads results/controls-decay-pilot/runs.csv (written by `l2sweep run experiment=controls-decay-pilot`)
and prints, for one scope, the `--top` decay values (alpha) with the highest mean final validation
accuracy over the pilot's ok runs, as a Hydra comma list (`0.1,0.3`), for
`l2sweep run experiment=controls-decay scope=<scope> alpha=<that list>`. Ties break toward the
smaller alpha. The rule is declared in the README ("The claim check: what runs").
"""

import argparse
import sys
from pathlib import Path

import pandas as pd


def choose(runs: pd.DataFrame, scope: str, top: int) -> list[float]:
    pilot = runs[(runs["status"] == "ok") & (runs["alpha"] > 0) & (runs["form"] == "decoupled")
                 & (runs["scope"] == scope)]
    if pilot.empty:
        raise SystemExit(f"no ok decoupled runs with scope={scope} in the pilot")
    means = pilot.groupby("alpha")["val_acc"].mean().reset_index()
    ranked = means.sort_values(["val_acc", "alpha"], ascending=[False, True])
    return sorted(float(a) for a in ranked["alpha"].head(top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the pilot's results folder")
    parser.add_argument("--scope", required=True, choices=["conv", "dense", "all"])
    parser.add_argument("--top", type=int, default=2)
    args = parser.parse_args()
    runs_csv = args.folder / "runs.csv"
    if not runs_csv.is_file():
        sys.exit(f"{runs_csv} is missing: run `l2sweep run experiment=controls-decay-pilot` first")
    print(",".join(f"{a:g}" for a in choose(pd.read_csv(runs_csv), args.scope, args.top)))


if __name__ == "__main__":
    main()
