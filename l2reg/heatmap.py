"""The verdict at a glance (verdict_heatmap.png): settings x claims, each cell coloured by what that
claim's declared per-setting test decided for that setting, in the one vocabulary every claim maps
its calls onto (l2reg.claims.base.HEAT_CALLS, Claim.heat_call): supports, shown not to, against,
undecided, not tested, diverged. One panel per context (its own family); its columns are every
registered claim in registry order (a claim registered later appears by itself, "not tested" until
it implements heat_call), each labelled with the claim's verdict in that context; each cell carries
a short text (the claim's own call or the number that decided it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from l2reg import claims
from l2reg.claims import base as claim_base
from l2reg.forest import ROW_INCHES, contexts_of, settings_of

HEAT_COLOURS = {
    claim_base.HEAT_SUPPORTS: "#1a9850", claim_base.HEAT_SHOWN_NOT: "#4575b4", claim_base.HEAT_AGAINST: "#d73027",
    claim_base.HEAT_UNDECIDED: "#d9d9d9", claim_base.HEAT_NOT_TESTED: "#ffffff", claim_base.HEAT_DIVERGED: "#252525",
}
DARK = {claim_base.HEAT_SUPPORTS, claim_base.HEAT_SHOWN_NOT, claim_base.HEAT_AGAINST, claim_base.HEAT_DIVERGED}
COLUMN_INCHES = 1.45  # width of one claim's column: its cell texts are ~14 characters at 6.5 pt


def heat_table(summary: pd.DataFrame, context: str) -> tuple[pd.DataFrame, list, list[list[claim_base.HeatCall]]]:
    """(the context's setting rows with names, the claims, cells[row][claim]) in summary order."""
    rows = settings_of(summary, context)
    every = claims.all_claims()
    cells = [[claim.heat_call(row) for claim in every] for _, row in rows.iterrows()]
    return rows, list(every), cells


def heatmap_figure(summary: pd.DataFrame, verdicts: dict):
    """One panel per context: rows = its settings, columns = the registered claims, the claim's
    verdict under its name; `verdicts[context][claim]["verdict"]` as in Analysis.verdicts."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    contexts = contexts_of(summary)
    tables = [heat_table(summary, c) for c in contexts]
    n_claims = len(claims.all_claims())
    heights = [max(len(t[0]), 1) * ROW_INCHES + 1.4 for t in tables]
    fig = Figure(figsize=(4.6 + COLUMN_INCHES * n_claims, sum(heights) + 0.4), layout="constrained")
    grid = fig.add_gridspec(len(contexts), 1, height_ratios=heights)
    colours = ListedColormap([HEAT_COLOURS[c] for c in claim_base.HEAT_CALLS])
    for index, (context, (rows, every, cells)) in enumerate(zip(contexts, tables)):
        ax = fig.add_subplot(grid[index, 0])
        codes = np.array([[claim_base.HEAT_CALLS.index(cell.call) for cell in line] for line in cells], dtype=float)
        codes = codes.reshape(len(cells), len(every))
        ax.imshow(codes if len(cells) else np.full((1, len(every)), np.nan), cmap=colours, vmin=-0.5,
                  vmax=len(claim_base.HEAT_CALLS) - 0.5, aspect="auto", interpolation="nearest")
        for r, line in enumerate(cells):
            for c, cell in enumerate(line):
                ax.text(c, r, cell.text or cell.call, ha="center", va="center", fontsize=6.5,
                        color="white" if cell.call in DARK else "black")
        said = verdicts.get(context, {})
        ax.set_xticks(range(len(every)), [f"{claim.name}\n{said.get(claim.name, {}).get('verdict', '-')}"
                                          for claim in every], fontsize=8)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(rows)), list(rows["name"]), fontsize=8)
        # white lines between the cells, so that two equal neighbours stay two cells
        ax.set_xticks(np.arange(len(every) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(max(len(rows), 1) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        if len(contexts) > 1:
            ax.set_title(f"[{context}]", fontsize=9, pad=30)
        if not len(rows):
            ax.text(len(every) / 2 - 0.5, 0, "no regularized setting", ha="center", va="center", fontsize=9)
    handles = [Patch(facecolor=HEAT_COLOURS[c], edgecolor="black", linewidth=0.5, label=c)
               for c in claim_base.HEAT_CALLS]
    # under the last panel, where no tick labels are (the claims' names are on top)
    ax.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
              bbox_to_anchor=(0.5, -0.01))
    where = " in that context" if len(contexts) > 1 else ""
    fig.suptitle("The verdict at a glance: each cell is what that claim's declared per-setting test decided for "
                 f"that setting;\nunder each claim's name its verdict{where}", fontsize=10)
    return fig
