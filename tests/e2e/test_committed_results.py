"""The committed claim checks (every results/<name>/ with runs: the claim check's main grid and
controls, and the earlier ablation-quick slices): each summary's paired
statistics are what scipy computes from its runs.csv, each call and verdict follows the declared rules,
and `write_reports` on a copy of the runs rebuilds the committed files. Nothing is written into results/.

When these fail after a change to the statistics or the report, rebuild the committed files with
`l2sweep report results/<name>` (it trains nothing), then `make overview`, and commit them."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from l2reg import axes
from l2reg.analysis import summary_columns
from l2reg.claims import names as claim_names
from l2reg.report import load_records, write_reports
from l2reg.stats import holm

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(path.parent.name for path in RESULTS.glob("*/runs")) or ["ablation-quick"]
KNOWN_SIZES = {"ablation-quick": 12, "ablation-quick-12": 36}  # complete slices; the claim check grows
ALPHA = 0.05


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request):
    if not (RESULTS / request.param / "runs").is_dir():
        pytest.skip(f"no committed results/{request.param}")
    return RESULTS / request.param


def stale(folder: Path, what: str) -> str:
    return f"results/{folder.name}/{what}: rebuild the committed reports with `l2sweep report results/{folder.name}`"


def read_committed(folder):
    """runs.csv, summary.csv and verdict.json, asserted to be of the current format."""
    runs, summary = pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "summary.csv")
    assert list(summary.columns) == summary_columns(axes.SETTING_COLUMNS), stale(folder, "summary.csv has old columns")
    assert set(axes.SETTING_COLUMNS) <= set(runs.columns), stale(folder, "runs.csv has old columns")
    assert (folder / "verdict.json").is_file(), stale(folder, "verdict.json is missing")
    return runs, summary, json.loads((folder / "verdict.json").read_text())


def margin_of(folder: Path) -> float:
    record = json.loads(next((folder / "runs").glob("*.json")).read_text())
    return float(record["config"].get("report", {}).get("min_effect_pp", 0.1))


def test_the_run_files_are_all_run_records(folder):
    loaded = load_records(folder)
    assert loaded.skipped == []
    assert len(loaded.records) == len(list((folder / "runs").glob("*.json")))
    if folder.name in KNOWN_SIZES:
        assert len(loaded.records) == KNOWN_SIZES[folder.name]


# marks a setting whose paired differences have no spread (docs/statistics.md: no t-test, p = 1 in Holm's family)
TIE = -1.0


def test_paired_statistics_are_what_scipy_computes_from_runs_csv(folder):
    runs, summary, verdict = read_committed(folder)
    m = margin_of(folder)
    assert verdict["min_effect_pp"] == m
    ok = runs[runs["status"] == "ok"]
    for context, ctx in ok.groupby("context"):
        base = ctx[ctx["alpha"] == 0].set_index("seed")["test_acc"]
        rows = summary[(summary["context"] == context) & (summary["alpha"] != 0)]
        if not len(rows):  # a control that so far holds only its baselines (copied from the main grid)
            claims = verdict["contexts"][str(context)]["claims"]
            assert {claim["verdict"] for claim in claims.values()} == {"not tested"}
            continue
        tests = {"p_superior": [], "p_equivalent": [], "p_worse": [], "p_above_zero": []}
        for row in rows.itertuples(index=False):
            values = row._asdict()
            match = np.logical_and.reduce([ctx[c].astype(str) == str(values[c]) for c in axes.SETTING_COLUMNS
                                           if c != "alpha"] + [np.isclose(ctx["alpha"], row.alpha)])
            arm = ctx[match].set_index("seed")["test_acc"]
            pairs = pd.concat([arm, base], axis=1, join="inner", keys=["x", "y"]).sort_index()
            d = (pairs["x"] - pairs["y"]).to_numpy()
            assert row.paired_n == len(d) == len(arm) and row.n == len(arm)
            if len(d) < 2:  # a sweep still running: this setting has one seed so far
                assert row.call in ("not tested", "diverged") and np.isnan(row.p_superior)
                for column in tests:
                    tests[column].append(float("nan"))
                continue
            assert row.delta_pp == pytest.approx(d.mean(), abs=1e-9)
            if np.ptp(d) <= 1e-9 * max(1.0, abs(d.mean())):  # a tie: no t-test, no CI (docs/statistics.md)
                assert row.call in ("undecided", "diverged")
                assert all(np.isnan(values[c]) for c in ("paired_ci_low_pp", "paired_ci_high_pp", "p_superior",
                                                          "p_inferior", "p_equivalent", "p_worse", "p_above_zero"))
                for column in tests:
                    tests[column].append(TIE)
                continue
            assert row.paired_sd_pp == pytest.approx(d.std(ddof=1))
            ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
            assert (row.paired_ci_low_pp, row.paired_ci_high_pp) == pytest.approx((ci.low, ci.high))
            expected = {
                "p_superior": sps.ttest_1samp(d, m, alternative="greater").pvalue,
                "p_inferior": sps.ttest_1samp(d, m, alternative="less").pvalue,
                "p_equivalent": max(sps.ttest_1samp(d, -m, alternative="greater").pvalue,
                                    sps.ttest_1samp(d, m, alternative="less").pvalue),
                "p_worse": sps.ttest_1samp(d, 0, alternative="less").pvalue,
                "p_above_zero": sps.ttest_1samp(d, 0, alternative="greater").pvalue,
            }
            for column, p in expected.items():
                assert values[column] == pytest.approx(p, rel=1e-9, abs=1e-15), column
                if column in tests:
                    tests[column].append(p)
            welch = sps.ttest_ind(arm, base, equal_var=False)
            assert row.welch_p == pytest.approx(welch.pvalue)
            assert (row.welch_ci_low_pp, row.welch_ci_high_pp) == pytest.approx(tuple(welch.confidence_interval()))
        for column, p in tests.items():  # Holm over the settings of the context, a tie counting as p = 1
            p = np.array(p)
            expected = holm(np.where(p == TIE, 1.0, p))
            expected[p == TIE] = np.nan
            assert rows[f"{column}_holm"].to_numpy() == pytest.approx(expected, rel=1e-9, nan_ok=True), column
        # the call of each setting and the accuracy verdict, by the rules declared in docs/statistics.md
        for row in rows.itertuples(index=False):
            rule = (("p_superior_holm", "better"), ("p_equivalent_holm", "equivalent"), ("p_worse_holm", "worse"),
                    ("p_above_zero_holm", "above zero (not shown above m)"))
            call = next((name for column, name in rule if getattr(row, column) < ALPHA), "undecided")
            call = "not tested" if row.paired_n < 2 else call
            assert row.call == ("diverged" if row.n_diverged > 0 else call)
        accuracy = verdict["contexts"][context]["claims"]["accuracy"]["verdict"]
        settings = rows[rows["alpha"] != 0]
        if not ((settings["paired_n"] >= 2) | (settings["call"] == "diverged")).any():
            assert accuracy == "not tested"  # e.g. a control whose first pair of runs just finished
        elif (rows["call"] == "better").any():
            assert accuracy == "supported"
        elif ((rows["p_inferior"] < ALPHA) | (rows["call"] == "diverged")).all() and (rows["paired_n"] >= 2).any():
            assert accuracy == "not supported"
        else:
            assert accuracy == "inconclusive"


def same_json(a, b, path="verdict.json"):
    """Equal JSON, floats to 1e-9 relative."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), path
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            same_json(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            same_json(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def rebuilt(folder, tmp_path_factory):
    """write_reports on a copy of the committed runs/, sweep.json (the planned runs: an interim
    report says so) and a study's plan.json (its report says it is one) alone, never into results/."""
    copy = tmp_path_factory.mktemp("rebuilt") / folder.name
    shutil.copytree(folder / "runs", copy / "runs")
    for name in ("sweep.json", "plan.json"):
        if (folder / name).is_file():
            shutil.copy(folder / name, copy / name)
    report = write_reports(copy)
    assert report.skipped == []
    return copy


def test_report_rebuilds_the_committed_summary_and_verdict(folder, rebuilt):
    for name in ("runs.csv", "summary.csv"):
        committed = pd.read_csv(folder / name)
        fresh = pd.read_csv(rebuilt / name)
        assert list(committed.columns) == list(fresh.columns), stale(folder, f"{name} has other columns")
        pd.testing.assert_frame_equal(committed, fresh, check_exact=False, rtol=1e-9,
                                      obj=f"results/{folder.name}/{name}")
    assert (folder / "verdict.json").is_file(), stale(folder, "verdict.json is missing")
    same_json(json.loads((folder / "verdict.json").read_text()), json.loads((rebuilt / "verdict.json").read_text()))


def test_report_rebuilds_the_committed_report_md(folder, rebuilt):
    assert (folder / "report.md").read_text() == (rebuilt / "report.md").read_text(), stale(folder, "report.md")


ROOT = RESULTS.parent
FOLDER_LINK = re.compile(r"\]\((?:\.\./)?(results/[^)/]+)/report\.md\)")
# a number as the text writes it: +0.213, -0.317, 0.55, 114, 1e-3 (not the digits of a word: v2, 3x)
NUMBER = re.compile(r"(?<![A-Za-z0-9.])[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def section(text: str, heading: str) -> str:
    """The text under a markdown heading (`## The verdict`), up to the next heading of its level or
    a higher one."""
    level = len(heading.split(" ", 1)[0])
    assert f"\n{heading}\n" in f"\n{text}", f"no heading {heading!r}"
    body = f"\n{text}".split(f"\n{heading}\n", 1)[1]
    end = re.search(rf"^#{{1,{level}}} ", body, re.M)
    return body[: end.start()] if end else body


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of a text: rows of stripped cells, header first, the --- row left out."""
    found, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                rows.append(cells)
        elif rows:
            found.append(rows)
            rows = []
    return found


def bold_verdict(cell: str) -> str:
    return re.fullmatch(r"\*\*([a-z ]+)\*\*(?: .*)?", cell).group(1)


def stated_in(number: str, reasons: str) -> bool:
    """Whether `number`, as rounded in the text, is one of the numbers of the verdict's reasons."""
    value = float(number)
    decimals = len(number.split(".")[1]) if "." in number and "e" not in number else 0
    for found in NUMBER.findall(reasons):
        if "e" in number or decimals == 0:
            if math.isclose(float(found), value, rel_tol=1e-9, abs_tol=1e-12):
                return True
        elif abs(round(float(found), decimals) - value) < 10 ** -(decimals + 3):
            return True
    return False


def main_grid_table() -> tuple[str, dict, list[list[str]]]:
    """README.md's claim table: the results folder its verdict column's header links, that
    folder's one context from verdict.json, and the rows (claim, verdict, number, link)."""
    claim_table = tables(section((ROOT / "README.md").read_text(), "## The verdict"))[0]
    link = FOLDER_LINK.search(claim_table[0][1])
    assert link, "the verdict column's header links the results folder the table is about"
    contexts = json.loads((ROOT / link.group(1) / "verdict.json").read_text())["contexts"]
    assert len(contexts) == 1  # the table is about one regime
    [context] = contexts.values()
    return link.group(1), context, claim_table[1:]


def test_the_readmes_verdict_table_says_what_the_cited_verdict_json_says():
    """A row per claim: its verdict is verdict.json's, and the cell that carries it names numbers
    of verdict.json's reasons for that claim: each of its parts (split at `;`) the numbers of one
    reason, so that a number cannot be borrowed from another setting's line."""
    cited, context, rows = main_grid_table()
    stated = {row[0].split(":")[0]: bold_verdict(row[1]) for row in rows}
    assert stated == {claim: value["verdict"] for claim, value in context["claims"].items()}, (
        f"README.md's verdict table disagrees with {cited}/verdict.json")
    for claim, _, carrier, _ in rows:
        claim = claim.split(":")[0]
        assert NUMBER.search(carrier), f"README.md's {claim} row names no number"
        for part in re.split(r";\s*", carrier):
            numbers = NUMBER.findall(part)
            assert any(all(stated_in(number, reason) for number in numbers)
                       for reason in context["claims"][claim]["reasons"]), (
                f"README.md's {claim} row: no reason of {cited}/verdict.json has all of {numbers} ({part!r})")


def test_the_full_verdict_says_what_the_main_grids_verdict_json_says():
    """docs/verdict.md: the main grid's section links the folder the README's table cites, and its
    subsection per claim (`### Accuracy`) says `Verdict: **...**` as verdict.json does."""
    cited, context, _ = main_grid_table()
    grid = section((ROOT / "docs" / "verdict.md").read_text(), "## The main grid")
    assert f"(../{cited}/report.md)" in grid, f"docs/verdict.md's main grid does not cite {cited}"
    for claim, value in context["claims"].items():
        words = re.findall(r"Verdict: \*\*([a-z ]+)\*\*", section(grid, f"### {claim.capitalize()}"))
        assert words == [value["verdict"]], f"docs/verdict.md on the main grid's {claim} disagrees with verdict.json"


def test_the_committed_overview_is_what_make_overview_writes(monkeypatch):
    """results/claim-check.md (linked from the README) matches its folders' committed reports: the
    folders are the Makefile's CLAIM_CHECK_FOLDERS, read from the repository root as `make` does."""
    from l2reg.overview import overview_markdown

    root = RESULTS.parent
    folders = re.search(r"^CLAIM_CHECK_FOLDERS := (.+)$", (root / "Makefile").read_text(), re.M).group(1).split()
    monkeypatch.chdir(root)
    assert overview_markdown([Path("results") / name for name in folders], Path("results")) == (
        (RESULTS / "claim-check.md").read_text()), "results/claim-check.md is stale: run `make overview`"


CLAIM_WORDS = rf"\b({'|'.join(claim_names())}) \*\*([a-z ]+)\*\*"


def claim_check_controls() -> set[str]:
    """The controls of `make overview` (the Makefile's CLAIM_CHECK_FOLDERS)."""
    folders = re.search(r"^CLAIM_CHECK_FOLDERS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    return {f"results/{name}" for name in folders.split() if name.startswith("controls-")}


def verdict_of(folder: str) -> dict:
    verdict = json.loads((ROOT / folder / "verdict.json").read_text())
    assert not verdict["interim"], f"the text cites {folder} as a result, but its report is interim"
    return verdict["contexts"]


def size_of_contexts(folder: str) -> dict[str, int]:
    """A folder with several contexts (one per training-set size): the size of each, which the text
    names as `data.train_size=N`."""
    runs = pd.read_csv(ROOT / folder / "runs.csv")
    assert runs.groupby("context")["train_size"].nunique().eq(1).all(), (
        f"{folder}: its contexts are not one per data.train_size: teach this test how the text names them")
    return {context: int(size) for context, size in runs.groupby("context")["train_size"].first().items()}


def test_the_readmes_control_table_says_what_their_verdict_json_says():
    """README.md's table of the controls: a row per control of `make overview` (a row per context
    where a folder has several, named by its `data.train_size=N`), each claim's verdict as that
    folder's verdict.json has it."""
    header, *rows = tables(section((ROOT / "README.md").read_text(), "## The verdict"))[1]
    claims = [name.lower() for name in header[1:]]
    assert claims == list(claim_names()), "the control table has a column per claim"
    stated: dict[tuple[str, str], dict] = {}
    for row in rows:
        folder = FOLDER_LINK.search(row[0]).group(1)
        contexts = verdict_of(folder)
        if len(contexts) == 1:
            [context] = contexts
        else:
            size = int(re.search(r"`data\.train_size=(\d+)`", row[0]).group(1))
            [context] = [name for name, n in size_of_contexts(folder).items() if n == size]
        assert (folder, context) not in stated, f"two rows for {folder} [{context}]"
        stated[(folder, context)] = dict(zip(claims, map(bold_verdict, row[1:])))
        expected = {claim: value["verdict"] for claim, value in contexts[context]["claims"].items()}
        assert stated[(folder, context)] == expected, (
            f"README.md's row on {folder} [{context}] disagrees with its verdict.json")
    assert {(folder, context) for folder in claim_check_controls() for context in verdict_of(folder)} == set(stated), (
        "a row per control of `make overview` and per context")


def control_sections(text: str) -> list[tuple[str, str]]:
    """docs/verdict.md's sections on the controls: each `###` under `## The controls` that links a
    results folder's report.md; (folder, its text on one line) each."""
    found = []
    for part in re.split(r"^### .*$", section(text, "## The controls"), flags=re.M)[1:]:
        link = FOLDER_LINK.search(part)
        assert link, "each control's section links its folder's report.md"
        found.append((link.group(1), " ".join(part.split())))
    return found


def test_the_full_verdicts_control_sections_say_what_their_verdict_json_says():
    """Each control's section of docs/verdict.md states every claim's verdict (`Accuracy **not
    supported**`), as its folder's verdict.json has it; a folder with a context per training-set
    size states them per size, each after its `data.train_size=N`."""
    sections = control_sections((ROOT / "docs" / "verdict.md").read_text())
    assert {folder for folder, _ in sections} == claim_check_controls(), "a section per control of `make overview`"
    for folder, text in sections:
        contexts = verdict_of(folder)
        if len(contexts) == 1:
            segments = {next(iter(contexts)): text}
        else:
            parts = re.split(r"`data\.train_size=(\d+)`", text)
            named = {int(size): part for size, part in zip(parts[1::2], parts[2::2])}
            segments = {context: named.get(size, "") for context, size in size_of_contexts(folder).items()}
        for context, segment in segments.items():
            stated = {claim.lower(): word for claim, word in re.findall(CLAIM_WORDS, segment, re.I)}
            expected = {claim: value["verdict"] for claim, value in contexts[context]["claims"].items()}
            assert stated == expected, f"docs/verdict.md on {folder} [{context}] disagrees with its verdict.json"
