"""report.html in a real headless browser: Debian's chromium (installed by .ci/run), driven over the
DevTools protocol by Playwright's Python client, which launches the system browser (no browser
download). Skipped, saying why, where no chromium or no playwright is installed.

On a tiny real sweep (the runner, as `l2sweep run` does) and on copies of committed folders (the
main grid, and one of two contexts) rebuilt by the real CLI (`l2sweep report`), the page is opened
from file:// and checked for what a reader relies on:
- no request leaves the file: every request the browser makes is recorded and is file://, no
  element names an outside source, no script error, no Content-Security-Policy violation;
- every plot renders: one plotly graph per kind (html_report.KINDS) and context of summary.csv,
  each with its SVG and drawn points; the forest plot's rows and gains are summary.csv's
  (delta_pp, sorted), its interval ends paired_ci_low_pp / paired_ci_high_pp;
- a real mouse move onto the forest plot's top setting shows a hover label with that setting's
  name and its gain from summary.csv; a real click on a legend entry hides that trace;
- the claim table lists every registered claim (claims.all_claims()) with verdict.json's verdict
  per context, and the setting table has a row per row of summary.csv;
- a full-page screenshot, and one of the hovered forest plot, are saved (pytest's tmp dir, and
  $L2SWEEP_HTML_SHOTS, default /tmp/html_shots/<name>.png and <name>-hover.png) and are not blank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2reg import claims, html_report, runner

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
QUICK = ["train.batch_size=64", "train.eval_batch_size=100", "train.compile=false", "train.epochs=1"]
L2SWEEP = str(Path(sys.executable).with_name("l2sweep"))  # the console script pip installed
SHOTS = Path(os.environ.get("L2SWEEP_HTML_SHOTS", "/tmp/html_shots"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
# collects CSP violations and uncaught errors from the first script on
WATCH = """window.__problems = [];
document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP: ' + e.blockedURI + ' ' +
  e.violatedDirective));
window.addEventListener('error', e => window.__problems.push('error: ' + e.message));"""


def chromium_path() -> str | None:
    """Debian's chromium (or $L2SWEEP_CHROMIUM), or None."""
    for candidate in (os.environ.get("L2SWEEP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium found (/usr/bin/chromium): apt-get install chromium chromium-driver (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


class Opened:
    """A page opened from file://, with every request the browser made for it and its problems."""

    def __init__(self, browser, path: Path, n_plots: int):
        self.context = browser.new_context(viewport=VIEWPORT, service_workers="block")
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.context.add_init_script(WATCH)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        self.page.goto(path.as_uri(), wait_until="load")
        self.page.wait_for_function(f"""document.querySelectorAll('.js-plotly-plot').length === {n_plots} &&
            [...document.querySelectorAll('.js-plotly-plot')].every(gd => gd.querySelector('svg.main-svg'))""",
                                    timeout=30_000)

    def close(self) -> None:
        self.context.close()


def expected_plots(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """(kind, context) of every plot in page order: a section per kind, a plot per context in it."""
    return [(kind, str(context)) for kind in html_report.KINDS
            for context in sorted(summary["context"].unique(), key=str)]


def check_self_contained(opened: Opened, path: Path) -> None:
    assert opened.requests and opened.requests[0] == path.as_uri()
    outside = [url for url in opened.requests if not url.startswith("file://")]
    assert outside == [], f"requests left the file: {outside}"
    problems = opened.page.evaluate("window.__problems")
    assert problems == [], f"blocked by the page's Content-Security-Policy, or script errors: {problems}"
    assert opened.console_errors == [], f"console errors: {opened.console_errors}"
    sources = opened.page.evaluate("""[...document.querySelectorAll('[src], link[href]')]
        .map(e => e.getAttribute('src') || e.getAttribute('href'))""")
    assert sources == [], f"elements that load something: {sources}"


def check_plots(opened: Opened, summary: pd.DataFrame) -> None:
    """One rendered plotly graph per (kind, context), with points drawn; the forest plots' data are summary.csv's."""
    found = opened.page.evaluate("""[...document.querySelectorAll('div.plot')].map(d => [d.dataset.plot,
        d.dataset.context, d.querySelectorAll('.js-plotly-plot').length,
        d.querySelectorAll('.js-plotly-plot svg.main-svg').length,
        d.querySelectorAll('.scatterlayer .point').length])""")
    assert [(kind, context) for kind, context, *_ in found] == expected_plots(summary)
    for kind, context, graphs, svgs, points in found:
        assert graphs == 1 and svgs >= 1, (kind, context)
        if kind != "features" or summary.filter(like="_delta_pp").iloc[:, 1:].notna().any().any():
            assert points > 0, f"the {kind} plot of {context} draws no point"
    for context in sorted(summary["context"].unique(), key=str):
        rows = summary[(summary["context"] == context) & (summary["alpha"] != 0)]
        rows = rows.sort_values("delta_pp", ascending=False, kind="stable", na_position="last")
        drawn = opened.page.evaluate("""ctx => {
            const gd = [...document.querySelectorAll('div.plot[data-plot="forest"]')]
                .find(d => d.dataset.context === ctx).querySelector('.js-plotly-plot');
            const calls = gd._fullData.filter(t => (t.legendgroup || '').startsWith('call:'));
            return {ticks: gd._fullLayout.yaxis.ticktext, points: calls.flatMap(t => Array.from(t.x, (x, i) =>
                [t.y[i], x, x - t.error_x.arrayminus[i], x + t.error_x.array[i]]))};
        }""", str(context))
        assert len(drawn["ticks"]) == len(rows)
        tested = rows[rows["delta_pp"].notna()].reset_index(drop=True)
        points = sorted(drawn["points"])  # by row position: the rows in order of gain
        assert [p[0] for p in points] == list(range(len(tested)))
        np.testing.assert_allclose([p[1] for p in points], tested["delta_pp"], rtol=0, atol=1e-9)
        low_known = tested["paired_ci_low_pp"].notna().to_numpy()
        np.testing.assert_allclose(np.array([p[2] for p in points])[low_known],
                                   tested["paired_ci_low_pp"][low_known], atol=1e-9)
        np.testing.assert_allclose(np.array([p[3] for p in points])[low_known],
                                   tested["paired_ci_high_pp"][low_known], atol=1e-9)


def check_hover(opened: Opened, summary: pd.DataFrame) -> str:
    """Move the mouse onto the first context's top setting in its forest plot; return the hover text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # only here: the module may lack it

    context = sorted(summary["context"].unique(), key=str)[0]
    rows = summary[(summary["context"] == context) & (summary["alpha"] != 0) & summary["delta_pp"].notna()]
    top = rows.sort_values("delta_pp", ascending=False, kind="stable").iloc[0]
    where = opened.page.evaluate("""ctx => {
        const gd = [...document.querySelectorAll('div.plot[data-plot="forest"]')]
            .find(d => d.dataset.context === ctx).querySelector('.js-plotly-plot');
        const index = gd._fullData.findIndex(t => (t.legendgroup || '').startsWith('call:') && t.y.includes(0));
        const point = gd.querySelectorAll('.scatterlayer .trace')[index]
            .querySelectorAll('path.point')[Array.from(gd._fullData[index].y).indexOf(0)];
        point.scrollIntoView({block: 'center'});
        const box = point.getBoundingClientRect();
        return {x: box.x + box.width / 2, y: box.y + box.height / 2, name: gd._fullLayout.yaxis.ticktext[0]};
    }""", str(context))
    opened.page.mouse.move(where["x"] - 60, where["y"] - 40)
    opened.page.mouse.move(where["x"], where["y"], steps=5)
    # the moves pass over other points (the seeds' dots), whose labels show first: wait for the label
    # of the point under the mouse's last position, and on a time-out say what was shown instead
    labels = opened.page.locator(".hoverlayer .hovertext")
    label = labels.filter(has_text=f"gain {top['delta_pp']:+.3f} pp").first
    try:
        label.wait_for(state="visible", timeout=10_000)
    except PlaywrightTimeout:
        raise AssertionError(f"hovering {where['name']}'s marker shows {labels.all_text_contents()}") from None
    shown = label.text_content()
    assert where["name"] in shown and f"gain {top['delta_pp']:+.3f} pp" in shown, shown
    assert f"{top['paired_ci_low_pp']:+.3f} to {top['paired_ci_high_pp']:+.3f} pp" in shown, shown
    return shown


def check_legend_filters(opened: Opened) -> None:
    """A real click on the forest legend's first entry hides its trace (plotly: visible = 'legendonly')."""
    entry = opened.page.locator('div.plot[data-plot="forest"] .legend .traces').first
    entry.scroll_into_view_if_needed()
    name = entry.text_content()
    box = entry.bounding_box()
    visibility = """name => document.querySelector('div.plot[data-plot="forest"] .js-plotly-plot').data
        .filter(t => t.name === name).map(t => t.visible === undefined ? true : t.visible)"""
    assert opened.page.evaluate(visibility, name) == [True]
    opened.page.mouse.click(box["x"] + 15, box["y"] + box["height"] / 2)
    # plotly acts on a legend click once its double-click delay has passed
    opened.page.wait_for_function(f"name => ({visibility})(name).join() === 'legendonly'", arg=name, timeout=5_000)


def check_tables(opened: Opened, summary: pd.DataFrame, verdict: dict) -> None:
    contexts = sorted(verdict["contexts"], key=str)
    table = opened.page.evaluate("""[...document.querySelectorAll('#claims tbody tr')].map(r =>
        [r.querySelector('td.claim').textContent, r.querySelector('td.verdict').textContent])""")
    expected = [[claim.name, verdict["contexts"][context]["claims"][claim.name]["verdict"]]
                for claim in claims.all_claims() for context in contexts]
    assert table == expected
    assert opened.page.locator("#settings tbody tr").count() == len(summary)


def screenshot(opened: Opened, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """Save a screenshot (the whole page, or the viewport) to tmp_path and SHOTS; check it is drawn."""
    from PIL import Image

    path = tmp_path / f"{name}.png"
    opened.page.screenshot(path=str(path), full_page=full_page)
    with Image.open(path) as image:
        assert image.width == VIEWPORT["width"]
        if full_page:
            assert image.height >= opened.page.evaluate("document.body.scrollHeight")
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or range(1 << 20)) > 50  # drawn, not blank
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / f"{name}.png")
    return path


def check_folder(browser, folder: Path, tmp_path: Path, name: str) -> None:
    page_path = folder / html_report.PAGE
    summary = pd.read_csv(folder / "summary.csv")
    verdict = json.loads((folder / "verdict.json").read_text())
    opened = Opened(browser, page_path, len(expected_plots(summary)))
    try:
        check_self_contained(opened, page_path)
        check_plots(opened, summary)
        check_tables(opened, summary, verdict)
        screenshot(opened, tmp_path, name)  # as a reader first sees it: top of the page, nothing hovered
        check_hover(opened, summary)
        screenshot(opened, tmp_path, f"{name}-hover", full_page=False)  # the forest plot with its hover label
        check_legend_filters(opened)
        check_self_contained(opened, page_path)  # after the hover and the click too
    finally:
        opened.close()


@pytest.mark.slow
def test_report_html_of_a_tiny_sweep_in_chromium(browser, tiny_mnist, tmp_path):
    result = runner.run_sweep(["alpha=1e-3,1e-2", "seeds=3", f"data.root={tiny_mnist}",
                               f"results_dir={tmp_path / 'results'}", "name=tiny", *QUICK])
    folder = tmp_path / "results" / "tiny"
    assert result.not_ok == [] and (folder / html_report.PAGE).is_file()
    summary = pd.read_csv(folder / "summary.csv")
    assert len(summary) == 3 and summary["paired_n"].iloc[1:].tolist() == [3, 3]
    check_folder(browser, folder, tmp_path, "tiny-sweep")


@pytest.mark.parametrize("name", ["ablation", "controls-small-data"])  # the main grid; a folder of two contexts
def test_report_html_of_a_committed_folder_in_chromium(browser, tmp_path, name):
    committed = RESULTS / name
    if not (committed / "runs").is_dir():
        pytest.skip(f"{committed} is not in this checkout")
    folder = tmp_path / name
    shutil.copytree(committed, folder, ignore=shutil.ignore_patterns(html_report.PAGE))
    done = subprocess.run([L2SWEEP, "report", str(folder)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    size = (folder / html_report.PAGE).stat().st_size
    assert 4e6 < size < 8e6, f"report.html is {size} bytes: plotly.js once (about 4.6 MiB) and the data"
    check_folder(browser, folder, tmp_path, name)
