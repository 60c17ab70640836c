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
from l2reg.report import load_records, write_reports
from l2reg.stats import CLAIMS, holm, summary_columns

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


TIE = -1.0  # marks a setting whose paired differences have no spread (README: no t-test, p = 1 in Holm's family)


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
            if np.ptp(d) <= 1e-9 * max(1.0, abs(d.mean())):  # ties without spread (README): no t-test, no CI
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
        # the call of each setting and the accuracy verdict, by the rules declared in the README
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
    """write_reports on a copy of the committed runs/ and sweep.json (the planned runs: an interim
    report says so) alone, never into results/."""
    copy = tmp_path_factory.mktemp("rebuilt") / folder.name
    shutil.copytree(folder / "runs", copy / "runs")
    if (folder / "sweep.json").is_file():
        shutil.copy(folder / "sweep.json", copy / "sweep.json")
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


def verdict_table(readme: str) -> tuple[str, dict]:
    """The results folder the README's verdict table cites (its evidence column's header) and the
    verdict of each claim in it."""
    section = readme.split("## The verdict\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    cited = rows[0].split("|")[3]
    folder = cited.split("(", 1)[1].split(",", 1)[0].strip()
    verdicts = {}
    for row in rows[2:]:
        claim, verdict = row.split("|")[1:3]
        verdicts[claim.split(":")[0].strip()] = verdict.split("**")[1]
    return folder, verdicts


def test_the_readmes_verdict_table_says_what_the_cited_verdict_json_says():
    readme = (RESULTS.parent / "README.md").read_text()
    cited, verdicts = verdict_table(readme)
    assert cited.startswith("results/") and (RESULTS.parent / cited / "verdict.json").is_file(), cited
    contexts = json.loads((RESULTS.parent / cited / "verdict.json").read_text())["contexts"]
    assert len(contexts) == 1  # the README's table is about one regime
    [context] = contexts.values()
    assert verdicts == {claim: value["verdict"] for claim, value in context["claims"].items()}, (
        f"README.md's verdict table disagrees with {cited}/verdict.json")


def test_the_committed_overview_is_what_make_overview_writes(monkeypatch):
    """results/claim-check.md (linked from the README) matches its folders' committed reports: the
    folders are the Makefile's CLAIM_CHECK_FOLDERS, read from the repository root as `make` does."""
    from l2reg.overview import overview_markdown

    root = RESULTS.parent
    folders = re.search(r"^CLAIM_CHECK_FOLDERS := (.+)$", (root / "Makefile").read_text(), re.M).group(1).split()
    monkeypatch.chdir(root)
    assert overview_markdown([Path("results") / name for name in folders], Path("results")) == (
        (RESULTS / "claim-check.md").read_text()), "results/claim-check.md is stale: run `make overview`"


CLAIM_WORDS = rf"\b({'|'.join(CLAIMS)}) \*\*([a-z ]+)\*\*"


def control_paragraphs(readme: str) -> list[tuple[str, str]]:
    """The README verdict section's paragraphs on the controls: those that open in italics and link a
    results folder's report.md; (folder, paragraph text) each."""
    section = readme.split("## The verdict\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for paragraph in section.split("\n\n"):
        link = re.search(r"\]\((results/[^)/]+)/report\.md\)", paragraph)
        if paragraph.startswith("*") and not paragraph.startswith("**") and link:
            found.append((link.group(1), " ".join(paragraph.split())))
    return found


def test_the_readmes_control_paragraphs_say_what_their_verdict_json_says():
    """Each control paragraph states every claim's verdict (`Accuracy **not supported**`), as its
    folder's verdict.json has it; a folder with a context per training-set size states them per
    size, each after its `data.train_size=N`."""
    readme = (RESULTS.parent / "README.md").read_text()
    paragraphs = control_paragraphs(readme)
    folders = re.search(r"^CLAIM_CHECK_FOLDERS := (.+)$", (RESULTS.parent / "Makefile").read_text(), re.M).group(1)
    controls = {f"results/{name}" for name in folders.split() if name.startswith("controls-")}
    assert {folder for folder, _ in paragraphs} == controls, "a paragraph per control of `make overview`"
    for folder, text in paragraphs:
        verdict = json.loads((RESULTS.parent / folder / "verdict.json").read_text())
        contexts = verdict["contexts"]
        assert not verdict["interim"], f"README cites {folder} as a result, but its report is interim"
        if len(contexts) == 1:
            segments = {next(iter(contexts)): text}
        else:
            runs = pd.read_csv(RESULTS.parent / folder / "runs.csv")
            assert runs.groupby("context")["train_size"].nunique().eq(1).all(), (
                f"{folder}: its contexts are not one per data.train_size: teach this test how the README names them")
            size_of = runs.groupby("context")["train_size"].first()
            parts = re.split(r"`data\.train_size=(\d+)`", text)
            named = {int(size): part for size, part in zip(parts[1::2], parts[2::2])}
            segments = {context: named.get(int(size), "") for context, size in size_of.items()}
        for context, segment in segments.items():
            stated = {claim.lower(): word for claim, word in re.findall(CLAIM_WORDS, segment, re.I)}
            expected = {claim: value["verdict"] for claim, value in contexts[context]["claims"].items()}
            assert stated == expected, f"README's paragraph on {folder} [{context}] disagrees with its verdict.json"
