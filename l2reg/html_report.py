"""report.html: the report's main plots, interactive, with its claim and setting tables, in one
self-contained file next to report.md. report.md and plots/*.png stay the reviewed artefacts; this
page is for reading them (hover a point for its numbers, click a legend entry to hide or show it).

Owns the page and everything on it. One file: plotly.js is embedded once per page (not per
figure), the styles are inline, there are no web fonts, icons or CDN links, and a Content-Security-
Policy forbids every fetch, so no request leaves the file. Why plotly: its offline HTML is the
ecosystem's usual self-contained interactive format (hover, legend filtering, zoom, PNG download,
no server), drawn as SVG, so it renders in any browser without WebGL; the price is its 4.6 MiB
bundle, hence report.html is ignored in git (.gitignore) and rebuilt by `l2sweep report`.

Per context (each its own family, as in report.md), four plots drawn from the same columns as the
PNGs and styled like them (a call keeps l2reg.forest's marker and colour; a setting value keeps its
colour, dash and marker by plots.palette's ranks):
- forest: the paired test accuracy gain per setting (summary.csv's delta_pp), sorted by gain, its
  95 % paired t interval (paired_ci_low_pp, paired_ci_high_pp: descriptive), the one-sided lower
  bound at the level Holm's step-down spent on it (l2reg.bounds: right of +m exactly when called
  better), the +-m band (m = min_effect_pp), each seed's paired difference, a marker per call;
- accuracy: mean test accuracy against alpha (runs.csv's ok runs) with 95 % t intervals, a line per
  combination of the other varying setting axes, the baseline's mean and interval as a band;
- features: a panel per feature metric (claims.features.METRICS): its paired gain, 95 % interval,
  Holm-consistent lower bound and own band +-m_j (<metric>_margin_pp), a marker per features_call;
- validation: mean validation accuracy per epoch (the runs' histories), a panel per alpha, a line per
  combination of the other axes and the baseline in black in every panel.
Tables: the claims in the registry's order (claims.all_claims(), never a fixed list) with the
article's words, each context's verdict and its first reason (analysis.verdicts = verdict.json's);
the settings with their accuracy numbers and each claim's per-setting call (Claim.heat_call).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from matplotlib.colors import to_hex
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from l2reg import axes, bounds, claims, files, forest, plots, stats, text
from l2reg.analysis import Analysis
from l2reg.claims import features
from l2reg.claims.base import column, paired_differences

PAGE = "report.html"
KINDS = ("forest", "accuracy", "features", "validation")  # one plot of each per context, in this order
CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}
# matplotlib's markers and line styles (plots.py, forest.py) in plotly's words
SYMBOLS = {"^": "triangle-up", "D": "diamond", "s": "square", "v": "triangle-down", "o": "circle", "X": "x",
           "P": "cross"}
DASHES = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
ROW_PX = 26  # height of one setting's row in the forest plots
PANELS_PER_ROW = 3
BELOW_PX = 80  # room for a legend under a plot
GAP_PX = 90  # between two rows of panels: the x axis and its title, the next row's titles
FONT = "system-ui, 'Segoe UI', Roboto, 'DejaVu Sans', 'Noto Sans CJK SC', 'WenQuanYi Zen Hei', sans-serif"
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:")


@dataclass
class Plot:
    kind: str  # one of KINDS
    context: str
    figure: go.Figure


def write_html_report(runs: pd.DataFrame, histories: pd.DataFrame, analysis: Analysis, results_dir: Path) -> Path:
    """Write results_dir/report.html (atomically) from what write_reports has; return its path."""
    results_dir = Path(results_dir)
    planned = len(set(files.planned_runs(results_dir)) | set(runs["run_id"]))
    final = int(runs["status"].isin(["ok", "diverged"]).sum())
    path = results_dir / PAGE
    files.write_text_atomic(path, render_page(runs, histories, analysis, results_dir.name, planned, final))
    return path


# ------------------------------------------------------------------------------------------------
# the plots


def _style(key: tuple, columns: list[str], values: dict[str, list[str]]) -> dict:
    """A line's colour, dash and marker: the first varying axis picks the colour, the second the dash,
    the third the marker, each by the value's rank in `values` (plots.palette), as in the PNGs."""
    picked = {"color": plots.COLOURS[0], "dash": "-", "symbol": "o"}
    for position, choices, name in ((0, plots.COLOURS, "color"), (1, plots.LINE_STYLES, "dash"),
                                    (2, plots.MARKERS, "symbol")):
        if position < len(columns):
            known = values.get(columns[position], [])
            value = str(key[position])
            picked[name] = choices[(known.index(value) if value in known else len(known)) % len(choices)]
    return {"color": to_hex(picked["color"]), "dash": DASHES[picked["dash"]], "symbol": SYMBOLS[picked["symbol"]]}


def _lines(regularized: pd.DataFrame) -> tuple[list[str], list[tuple[tuple, pd.DataFrame]]]:
    """The varying non-alpha axes and the (key, rows) of each line, sorted."""
    columns = axes.varying(regularized, plots.LINE_AXES, fallback=["target"])
    if not len(regularized):
        return columns, []
    return columns, [(key if isinstance(key, tuple) else (key,), group)
                     for key, group in regularized.groupby(columns, sort=True, dropna=False)]


def _label(key: tuple) -> str:
    return ", ".join(str(v) for v in key)


def _count(value) -> str:
    """A count read from a float column: `10`, or "-" when missing."""
    return str(int(value)) if value is not None and value == value else text.CELL_MISSING


def _errors(centre, low, high) -> dict:
    centre, low, high = (np.asarray(v, dtype=float) for v in (centre, low, high))
    return {"type": "data", "symmetric": False, "array": np.clip(high - centre, 0, None),
            "arrayminus": np.clip(centre - low, 0, None), "thickness": 1.3, "width": 0, "color": "#404040"}


def _layout(fig: go.Figure, title: str, height: int, legend_title: str = "", below: bool = False) -> go.Figure:
    """The shared look; `below`: the legend in rows under the plot (the forest plots' rows need the width)."""
    legend = {"title": {"text": legend_title}}
    if below:
        legend.update(orientation="h", yref="container", y=0.0, yanchor="bottom", x=0.0, xanchor="left")
    fig.update_layout(title={"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
                      height=height + (BELOW_PX if below else 0), template="plotly_white",
                      font={"family": FONT, "size": 12}, hovermode="closest", legend=legend,
                      margin={"l": 10, "r": 10, "t": 70, "b": 50 + (BELOW_PX if below else 0)},
                      hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left"})
    fig.update_yaxes(automargin=True)
    return fig


def _rows_axis(fig: go.Figure, names: list[str], **where) -> None:
    """Settings as rows (the first at the top), named on the y axis."""
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(names))), ticktext=names, autorange="reversed",
                     showgrid=False, zeroline=False, **where)


def _band(fig: go.Figure, m: float, label: str, legend: bool = True, **where) -> None:
    """The +-m band and the zero line."""
    if where:  # a subplot's band, drawn before its traces
        where = {**where, "exclude_empty_subplots": False}
    if m == m:
        fig.add_vrect(x0=-m, x1=m, fillcolor="grey", opacity=0.18, line_width=0, layer="below", name=label,
                      showlegend=legend, **where)
    fig.add_vline(x=0, line_color="black", line_width=1, **where)


def _calls(fig: go.Figure, rows: pd.DataFrame, x: str, low: str, high: str, call_column: str, hover: list[str],
           shown: set | None = None, **where) -> None:
    """A marker per setting, one trace per call (its legend entry filters that call), with the 95 %
    interval as error bars; `shown`: the calls already in the legend (subplots share one)."""
    y = np.arange(len(rows))
    calls = rows[call_column].astype(str).to_numpy() if call_column in rows else np.full(len(rows), "not tested")
    estimate = column(rows, x).to_numpy(dtype=float)
    for call in dict.fromkeys(calls):
        at = (calls == call) & np.isfinite(estimate)
        if not at.any():
            continue
        marker, colour = forest.CALL_STYLES.get(call, ("o", forest.GREY))
        fig.add_scatter(x=estimate[at], y=y[at], mode="markers", name=call, legendgroup=f"call:{call}",
                        showlegend=shown is None or call not in shown,
                        marker={"symbol": SYMBOLS[marker], "color": colour, "size": 11,
                                "line": {"color": "black", "width": 0.8}},
                        error_x=_errors(estimate[at], column(rows, low).to_numpy()[at],
                                        column(rows, high).to_numpy()[at]),
                        hovertext=[h for h, keep in zip(hover, at) if keep], hoverinfo="text", **where)
        if shown is not None:
            shown.add(call)


def _bound_ticks(fig: go.Figure, bound: np.ndarray, name: str, hover: list[str], legend: bool = True,
                 **where) -> None:
    """The thick tick: the one-sided bound at the setting's Holm level (what the rule decides by)."""
    fig.add_scatter(x=bound, y=np.arange(len(bound)), mode="markers", name=name, legendgroup="bound",
                    showlegend=legend, hovertext=hover, hoverinfo="text",
                    marker={"symbol": "line-ns", "size": 16, "line": {"color": "black", "width": 3.5}}, **where)


def forest_plot(summary: pd.DataFrame, runs: pd.DataFrame, context: str, m: float) -> go.Figure:
    """The forest plot of one context's paired accuracy gains (module docstring)."""
    rows = forest.settings_of(summary, context)
    levels, lower = bounds.accuracy_bounds(rows) if len(rows) else ([], [])
    rows = rows.assign(_level=levels, _bound=lower).sort_values("delta_pp", ascending=False, kind="stable",
                                                                na_position="last").reset_index(drop=True)
    fig = go.Figure()
    _band(fig, m, f"\u00b1m = \u00b1{m:g} pp (smallest effect of interest)")
    base = bounds.context_baseline(runs, context)
    seeds_x, seeds_y, seeds_hover = [], [], []
    for i, row in rows.iterrows():
        seeds, d = paired_differences(bounds.setting_runs(runs, row), base, "test_acc")
        seeds_x += list(d)
        # just under the row, off its line: a mouse on the setting's marker gets the setting, not a seed
        seeds_y += list(i + 0.3 + (np.linspace(-0.07, 0.07, len(d)) if len(d) > 1 else np.zeros(len(d))))
        seeds_hover += [f"{row['name']}<br>seed {s}: {v:+.3f} pp" for s, v in zip(seeds, d)]
    fig.add_scatter(x=seeds_x, y=seeds_y, mode="markers", name="each seed's paired difference",
                    marker={"size": 5, "color": "#a0a0a0"}, hovertext=seeds_hover, hoverinfo="text")
    hover = [f"<b>{html.escape(r['name'])}</b><br>gain {text.number(r['delta_pp'])} pp "
             f"({text.number(r.get('delta_images'), 1)} test images)<br>95 % paired t CI "
             f"{text.number(r['paired_ci_low_pp'])} to {text.number(r['paired_ci_high_pp'])} pp<br>"
             f"lower bound at Holm level {text.p_value(r['_level'])}: {text.number(r['_bound'])} pp<br>"
             f"Holm p (gain > {m:g} pp): {text.p_value(r.get('p_superior_holm'))}<br>"
             f"seeds paired: {_count(r['paired_n'])}<br>call: {r['call']}" for _, r in rows.iterrows()]
    _bound_ticks(fig, rows["_bound"].to_numpy(dtype=float), "one-sided lower bound at the Holm level "
                 f"(called better iff right of +{m:g})", hover)
    _calls(fig, rows, "delta_pp", "paired_ci_low_pp", "paired_ci_high_pp", "call", hover)
    names = [n if d == d else f"{n} (not tested)" for n, d in zip(rows["name"], rows["delta_pp"])]
    _rows_axis(fig, names)
    fig.update_xaxes(title="test accuracy gain (pp): setting minus baseline, same seed")
    k = int((column(rows, "paired_n") >= 2).sum())
    return _layout(fig, f"Paired test accuracy gain, Holm over {k} setting(s); thin line: 95 % paired t CI "
                        "(descriptive), thick tick: the bound the call is decided by", 150 + ROW_PX * max(len(rows), 2),
                   "click to hide or show:", below=True)


def accuracy_plot(runs: pd.DataFrame, context: str, values: dict[str, list[str]]) -> go.Figure:
    """Mean test accuracy against alpha for one context (module docstring)."""
    ok = runs[(runs["context"] == context) & (runs["status"].astype(str) == "ok")]
    base = column(ok[axes.baseline_rows(ok)], "test_acc").dropna()
    fig = go.Figure()
    if len(base):
        low, high = stats.t_interval(base)
        label = f"baseline (alpha=0): {base.mean():.3f} %, 95 % CI {text.cell(low)} to {text.cell(high)}"
        if low == low:
            fig.add_hrect(y0=low, y1=high, fillcolor="grey", opacity=0.25, line_width=0, layer="below", name=label,
                          showlegend=True)
        fig.add_hline(y=float(base.mean()), line_color="grey", line_width=1.5)
    columns, lines = _lines(ok[~axes.baseline_rows(ok)])
    for index, (key, group) in enumerate(lines):
        points = []
        for alpha, g in group.groupby("alpha"):
            acc = column(g, "test_acc").dropna()
            if len(acc):
                points.append((float(alpha), float(acc.mean()), *stats.t_interval(acc), len(acc)))
        if not points:
            continue
        alpha, mean, low, high, n = (np.array(v) for v in zip(*points))
        style = _style(key, columns, values)
        hover = [f"<b>{html.escape(_label(key))}</b><br>alpha = {a:g}<br>mean test accuracy {mu:.3f} %<br>"
                 f"95 % t CI {text.cell(lo)} to {text.cell(hi)} %<br>{k} ok run(s)"
                 for a, mu, lo, hi, k in zip(alpha, mean, low, high, n)]
        dodge = 10 ** ((index - (len(lines) - 1) / 2) * plots.DODGE_DECADES)  # as the PNG: CIs side by side
        fig.add_scatter(x=alpha * dodge, y=mean, mode="lines+markers", name=_label(key), hovertext=hover,
                        hoverinfo="text", error_y={**_errors(mean, low, high), "width": 4, "color": style["color"]},
                        line={"color": style["color"], "dash": style["dash"]},
                        marker={"symbol": style["symbol"], "size": 8, "color": style["color"]})
    fig.update_xaxes(type="log", title="alpha (penalty coefficient, log scale)")
    fig.update_yaxes(title="test accuracy (%), mean over seeds, 95 % CI")
    return _layout(fig, "Test accuracy against alpha", 480, ", ".join(columns))


def _grid(count: int, titles: list[str], panel_px: int) -> tuple[go.Figure, list[tuple[int, int]], int]:
    """Panels PANELS_PER_ROW to a row, `panel_px` high each, one y axis for all (the same rows or the
    same accuracy scale); GAP_PX between two rows of panels, for the x axis title and the next titles.
    Returns the figure, each panel's (row, col) and the height of the plotting area."""
    cols = max(1, min(count, PANELS_PER_ROW))
    nrows = math.ceil(count / cols) or 1
    area = nrows * panel_px + (nrows - 1) * GAP_PX
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles, shared_yaxes="all", horizontal_spacing=0.03,
                        vertical_spacing=GAP_PX / area if nrows > 1 else 0.0)
    return fig, [(i // cols + 1, i % cols + 1) for i in range(count)], area


def _feature_hover(row, metric: str, m: float, level: float, bound: float) -> str:
    return (f"<b>{html.escape(row['name'])}</b><br>{metric}: gain {text.number(row.get(f'{metric}_delta_pp'))} pp<br>"
            f"95 % paired t CI {text.number(row.get(f'{metric}_ci_low_pp'))} to "
            f"{text.number(row.get(f'{metric}_ci_high_pp'))} pp<br>lower bound at Holm level {text.p_value(level)}: "
            f"{text.number(bound)} pp (better iff > +{m:.3g})<br>seeds paired: {_count(row.get(f'{metric}_n'))}"
            f"<br>features call: {row.get(features.CALL_COLUMN, '-')}")


def features_plot(summary: pd.DataFrame, context: str, metrics=features.METRICS) -> go.Figure:
    """The feature metrics' paired gains for one context: a panel per metric (module docstring)."""
    rows = forest.settings_of(summary, context).reset_index(drop=True)
    base = summary[(summary["context"] == context) & axes.baseline_rows(summary)]
    found = bounds.feature_bounds(rows, metrics) if len(rows) else {}
    margins = []
    for metric in metrics:
        margin = column(base if len(base) else rows, f"{metric}_margin_pp").dropna()
        margins.append(float(margin.iloc[0]) if len(margin) else float("nan"))
    fig, places, area = _grid(len(metrics), [f"{mt}: m_j = {mj:.3g} pp" for mt, mj in zip(metrics, margins)],
                              ROW_PX * max(len(rows), 3))
    shown: set = set()
    for metric, m, (r, c) in zip(metrics, margins, places):
        where = {"row": r, "col": c}
        if not len(rows) or not column(rows, f"{metric}_delta_pp").notna().any():
            # in paper coordinates: plotly.js does not place a note on the axes of a panel without traces
            x_axis, y_axis = fig.get_subplot(r, c).xaxis, fig.get_subplot(r, c).yaxis
            fig.add_annotation(text="not measured", showarrow=False, xref="paper", yref="paper",
                               x=sum(x_axis.domain) / 2, y=sum(y_axis.domain) / 2, font={"size": 14})
            continue
        _band(fig, m, "\u00b1m_j: the metric's own margin", legend=not shown, **where)
        levels, lower = found[metric]
        hover = [_feature_hover(row, metric, m, level, bound)
                 for (_, row), level, bound in zip(rows.iterrows(), levels, lower)]
        _bound_ticks(fig, np.asarray(lower, dtype=float), "one-sided lower bound at the Holm level", hover,
                     legend=not shown, **where)
        _calls(fig, rows, f"{metric}_delta_pp", f"{metric}_ci_low_pp", f"{metric}_ci_high_pp",
               features.CALL_COLUMN, hover, shown, **where)
        fig.update_xaxes(title_text="gain (pp)", **where)
    for r, c in places:
        _rows_axis(fig, list(rows["name"]), row=r, col=c)
    return _layout(fig, "Feature metrics: paired gains over the baseline (thin: 95 % CI; thick tick: the bound "
                        "each metric is decided by)", 120 + area, "click to hide or show:", below=True)


def validation_plot(runs: pd.DataFrame, histories: pd.DataFrame, context: str,
                    values: dict[str, list[str]]) -> go.Figure:
    """Mean validation accuracy per epoch for one context: a panel per alpha (module docstring)."""
    ok = runs[(runs["context"] == context) & (runs["status"].astype(str) == "ok")]
    hist = histories[histories["run_id"].isin(set(ok["run_id"]))]
    alphas = sorted(a for a in ok["alpha"].unique() if a != 0) or [0.0]
    fig, places, area = _grid(len(alphas), [f"alpha = {a:g}" if a else "baseline only" for a in alphas], 300)
    base = hist[axes.baseline_rows(hist)].groupby("epoch")["val_acc"].agg(["mean", "count"])
    columns, _ = _lines(ok[~axes.baseline_rows(ok)])
    shown: set = set()

    def line(curve: pd.DataFrame, name: str, style: dict, alpha_text: str, where: dict) -> None:
        hover = [f"<b>{html.escape(name)}</b>{alpha_text}<br>epoch {e}: validation accuracy {v:.3f} % "
                 f"(mean of {n} seed(s))" for e, v, n in zip(curve.index, curve["mean"], curve["count"])]
        fig.add_scatter(x=list(curve.index), y=curve["mean"], mode="lines+markers", name=name, legendgroup=name,
                        showlegend=name not in shown, hovertext=hover, hoverinfo="text",
                        line={"color": style["color"], "dash": style["dash"], "width": style.get("width", 2)},
                        marker={"symbol": style["symbol"], "size": 6, "color": style["color"]}, **where)
        shown.add(name)

    for alpha, (r, c) in zip(alphas, places):
        where = {"row": r, "col": c}
        if len(base):
            line(base, "baseline (alpha=0)", {"color": "#000000", "dash": "solid", "symbol": "circle", "width": 3},
                 "", where)
        part = hist[~axes.baseline_rows(hist) & (hist["alpha"] == alpha)]
        # grouped by the axes that vary over every alpha (`columns`), so a key styles as in the other plots
        here = [(key if isinstance(key, tuple) else (key,), group)
                for key, group in part.groupby(columns, sort=True, dropna=False)] if len(part) else []
        for key, group in here:
            line(group.groupby("epoch")["val_acc"].agg(["mean", "count"]), _label(key),
                 _style(key, columns, values), f", alpha = {alpha:g}", where)
        fig.update_xaxes(title_text="epoch", dtick=1, **where)
    fig.update_yaxes(title_text="validation accuracy (%), mean over seeds", row=1, col=1)
    return _layout(fig, "Validation accuracy per epoch", 120 + area, ", ".join(columns))


def figures(runs: pd.DataFrame, histories: pd.DataFrame, analysis: Analysis) -> list[Plot]:
    """Every plot of the page: each kind of KINDS for each context, in that order."""
    values = plots.palette(runs)
    out = []
    for context in forest.contexts_of(analysis.summary):
        out += [Plot("forest", context, forest_plot(analysis.summary, runs, context, analysis.min_effect_pp)),
                Plot("accuracy", context, accuracy_plot(runs, context, values)),
                Plot("features", context, features_plot(analysis.summary, context)),
                Plot("validation", context, validation_plot(runs, histories, context, values))]
    return out


# ------------------------------------------------------------------------------------------------
# the tables and the page


def _table(table_id: str, head: list[str], rows: list[list]) -> str:
    """An HTML table; a cell is text, or (text, css class)."""
    def cell(value, tag: str = "td") -> str:
        content, css = value if isinstance(value, tuple) else (value, "")
        return f"<{tag}{f' class={css!r}' if css else ''}>{html.escape(str(content))}</{tag}>"

    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return (f'<table id="{table_id}"><thead><tr>{"".join(cell(h, "th") for h in head)}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table>")


def claim_table(analysis: Analysis) -> str:
    """A row per registered claim and context: its words, verdict and first reason."""
    contexts = sorted(analysis.verdicts, key=str)
    several = len(contexts) > 1
    rows = []
    for claim in claims.all_claims():
        for context in contexts:
            verdict = analysis.verdicts[context].get(claim.name) or {}
            reasons = verdict.get("reasons") or []
            more = f" (and {len(reasons) - 1} more in report.md)" if len(reasons) > 1 else ""
            word = str(verdict.get("verdict", "-"))
            rows.append([(claim.name, "claim"), claim.words, *([context] if several else []),
                         (word, "verdict v-" + word.replace(" ", "-")), (reasons[0] + more if reasons else "-")])
    head = ["claim", "the article's words", *(["context"] if several else []), "verdict", "first reason"]
    return _table("claims", head, rows)


def setting_table(analysis: Analysis) -> str:
    """A row per (context, setting), the baseline first, then by paired gain: accuracy numbers and
    each claim's per-setting call in the shared vocabulary (Claim.heat_call)."""
    summary, m = analysis.summary, analysis.min_effect_pp
    contexts = forest.contexts_of(summary)
    several = len(contexts) > 1
    rows = []
    for context in contexts:
        base = summary[(summary["context"] == context) & axes.baseline_rows(summary)]
        settings = forest.settings_of(summary, context).sort_values("delta_pp", ascending=False, kind="stable",
                                                                   na_position="last")
        for is_base, frame in ((True, base), (False, settings)):
            for _, row in frame.iterrows():
                heat = ["baseline"] * len(claims.all_claims()) if is_base else [
                    (lambda h: h.call + (f" ({h.text})" if h.text else ""))(claim.heat_call(row))
                    for claim in claims.all_claims()]
                rows.append([*([context] if several else []), "baseline" if is_base else row["name"],
                             f"{int(row['n'])} ({int(row['n_not_ok'])})", text.cell(row["mean_acc"]),
                             text.cell(row["std_acc"]), text.cell(row.get("delta_pp"), 3, True),
                             text.interval(row.get("paired_ci_low_pp"), row.get("paired_ci_high_pp")),
                             text.p_cell(row.get("p_superior_holm")), *heat, row.get("note") or ""])
    head = [*(["context"] if several else []), "setting", "ok runs (not ok)", "mean test acc %", "sd (pp)",
            "paired gain pp", "95 % paired CI", f"Holm p (gain > {m:g} pp)",
            *[f"{claim.name}: per-setting call" for claim in claims.all_claims()], "note"]
    return _table("settings", head, rows)


CAPTIONS = {
    "forest": "Each row a regularized setting, sorted by its paired gain (setting minus baseline, same seed). "
              "The grey band is \u00b1m; a setting is called better iff its thick tick (the one-sided lower "
              "bound at the level Holm's procedure spent on it) lies right of +m. Marker: the accuracy call.",
    "accuracy": "Mean test accuracy of the ok runs with 95 % t intervals; a line per combination of the other "
                "varying setting axes (moved a little aside per alpha so the intervals stay readable); the "
                "baseline's mean and 95 % interval as the grey band.",
    "features": "Per feature metric, each setting's paired gain with its 95 % interval and the bound the "
                "feature rule decides by (better on the metric iff right of +m_j). Marker: the features call.",
    "validation": "Mean validation accuracy per epoch over the seeds; the baseline in black in every panel.",
}
HEADINGS = {"forest": "Paired test accuracy gains (the accuracy claim)", "accuracy": "Test accuracy against alpha",
            "features": "Feature metrics (the features claim)", "validation": "Validation accuracy per epoch"}
STYLE = f"""body{{font-family:{FONT};margin:1.5em auto;max-width:1400px;padding:0 1em;color:#1a1a1a;line-height:1.4}}
h1{{font-size:1.6em}} h2{{margin-top:1.6em;border-bottom:1px solid #ccc}} .caption{{color:#444;max-width:70em}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}
th,td{{border:1px solid #d0d0d0;padding:3px 6px;vertical-align:top;text-align:left}}
th{{background:#f0f0f0;position:sticky;top:0}} td.claim{{font-weight:bold}}
.verdict{{font-weight:bold;white-space:nowrap}} .v-supported{{background:#d9f0d3}}
.v-not-supported{{background:#f4cccc}} .v-inconclusive{{background:#fff2cc}}
.banner{{background:#fff2cc;border:1px solid #e0c060;padding:.6em}}
.plot{{border:1px solid #e4e4e4;margin:.6em 0}} nav a{{margin-right:1.2em}}"""


def render_page(runs: pd.DataFrame, histories: pd.DataFrame, analysis: Analysis, name: str, planned: int = 0,
                final: int = 0) -> str:
    """The whole page as one string (deterministic: fixed element ids, no timestamps)."""
    contexts = forest.contexts_of(analysis.summary)
    several = len(contexts) > 1
    sections = {kind: [] for kind in KINDS}
    for index, plot in enumerate(figures(runs, histories, analysis)):
        div = pio.to_html(plot.figure, include_plotlyjs=False, full_html=False, config=CONFIG,
                          div_id=f"plot-{plot.kind}-{index // len(KINDS)}", default_height=plot.figure.layout.height)
        heading = f"<h3>Context <code>{html.escape(plot.context)}</code></h3>" if several else ""
        sections[plot.kind].append(f'{heading}<div class="plot" data-plot="{plot.kind}" '
                                   f'data-context="{html.escape(plot.context)}">{div}</div>')
    interim = (f'<p class="banner"><b>Interim report: {final} of the {planned} planned runs have finished.</b> '
               "The verdicts may change as the remaining runs come in.</p>" if final < planned else "")
    body = "\n".join(f'<section id="{kind}"><h2>{HEADINGS[kind]}</h2><p class="caption">{CAPTIONS[kind]}</p>'
                     + "\n".join(sections[kind]) + "</section>" for kind in KINDS)
    links = [("claims", "Claims"), *((kind, HEADINGS[kind].split(" (")[0]) for kind in KINDS), ("settings", "Settings")]
    nav = " ".join(f'<a href="#{anchor}">{words}</a>' for anchor, words in links)
    n_ok = int((runs["status"] == "ok").sum())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>l2sweep report: {html.escape(name)}</title><style>{STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>l2sweep report: {html.escape(name)}</h1>
<p>{len(runs)} runs ({n_ok} ok) in {len(contexts)} context(s); smallest effect of interest m =
{analysis.min_effect_pp:g} pp of test accuracy. Built by <code>l2sweep report</code> from runs/*.json with the
same numbers as report.md, summary.csv and verdict.json, which stay the reviewed artefacts: every test and
decision rule is in report.md. Hover a point for its numbers; click a legend entry to hide or show it.</p>
{interim}<nav>{nav}</nav>
<section id="claims"><h2>Claims</h2>{claim_table(analysis)}</section>
{body}
<section id="settings"><h2>Settings</h2><p class="caption">Per-setting calls in each claim's shared vocabulary
(supports, shown not to, against, undecided, not tested, diverged), with the claim's own call or number in
brackets.</p>{setting_table(analysis)}</section>
</body></html>
"""
