"""Citations between the repository's files resolve, so moving text cannot leave one dangling.

A section cited by name (`README "Statistics and the verdicts"`, `docs/statistics.md "Rule log"`) in
the code, configs, scripts, Makefile, tests, docs or committed reports is a heading of the file it
is cited in; every relative link of README.md, docs/ and benchmarks/README.md names a file that
exists and, with an anchor, one of that file's headings. Only cited sections are checked: any other
heading may be renamed. And README.md stays a front page."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# README or README.md or docs/<name>.md, then one or more section names in quotes, joined by "and" or
# commas (escaped inside a Python string: README (\"Statistics and the verdicts\")), on one line
QUOTED = r'\\?"([A-Za-z`][^"\\\n]*)\\?"'
CITATION = re.compile(r'\b(README(?:\.md)?|docs/[\w.-]+\.md)[ (,]{1,3}'
                      r'(' + QUOTED + r'(?:(?:,| and|, and) ' + QUOTED + r')*)')
LINK = re.compile(r"\]\(([^)\s]+)\)")
MARKDOWN = ["README.md", "docs/*.md", "benchmarks/README.md"]


def citing_files() -> list[Path]:
    patterns = ["l2reg/**/*.py", "l2reg/**/*.c", "cli/**/*.py", "scripts/*", "benchmarks/*", "conf/**/*.yaml",
                "tests/**/*.py", "Makefile", *MARKDOWN, "results/*/report.md", "results/claim-check.md"]
    return sorted({path for pattern in patterns for path in ROOT.glob(pattern) if path.is_file()})


def cited_sections() -> dict[tuple[str, str], set[str]]:
    """(file cited, section name) -> the files that cite it."""
    cited: dict[tuple[str, str], set[str]] = {}
    for path in citing_files():
        for match in CITATION.finditer(path.read_text(errors="replace")):
            target = "README.md" if match[1].startswith("README") else match[1]
            for name in re.findall(QUOTED, match[2]):
                cited.setdefault((target, name), set()).add(str(path.relative_to(ROOT)))
    return cited


def headings(path: Path) -> list[str]:
    """The markdown headings of a file, outside code blocks."""
    found, in_code = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens, a
    repeated anchor numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        result.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


def test_the_scan_finds_the_citations_of_code_and_reports():
    cited = cited_sections()
    assert "l2reg/report.py" in cited[("docs/statistics.md", "The rules")]
    assert "scripts/claim_check_worker.sh" in cited[("README.md", "The claim check: what runs")]
    assert any(target.startswith("docs/") for target, _ in cited), "no citation of a docs/ file found"


def test_every_cited_section_is_a_heading_of_the_file_it_is_cited_in():
    missing = {}
    for (target, name), where in cited_sections().items():
        path = ROOT / target
        if not path.is_file() or name not in headings(path):
            missing[f'{target} "{name}"'] = sorted(where)
    assert not missing, f"sections cited but not headings of the file cited: {missing}"


def test_every_relative_link_of_the_docs_resolves():
    broken = []
    for path in sorted({p for pattern in MARKDOWN for p in ROOT.glob(pattern)}):
        for link in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", link):
                continue  # http:, https:, mailto:
            file_part, _, anchor = link.partition("#")
            target = (path.parent / file_part).resolve() if file_part else path
            if not target.exists():
                broken.append(f"{path.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and (target.suffix != ".md" or anchor not in anchors(target)):
                broken.append(f"{path.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_a_front_page():
    """About 200 lines, and table cells a reader takes in at a glance (the detail lives in docs/)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move detail to docs/"
    cells = [cell.strip() for line in lines if line.startswith("| ") for cell in line.strip("|").split(" | ")]
    long = [cell for cell in cells if len(LINK.sub("]", cell)) > 160]
    assert not long, f"README table cells over 160 characters (links not counted): {long}"
