"""The code fingerprint: what changes it and what does not, on a copy of this checkout's sources;
fingerprints of commits from git; and a queued job whose code changed before it started."""

import shutil
import subprocess
from pathlib import Path

import pytest

from l2reg import fingerprint
from l2reg.executors import pack_job
from l2reg.sweep import plan

REPO = Path(__file__).resolve().parents[2]
VERSIONS = {"torch": "2.14.1", "torchvision": "0.29.1"}


@pytest.fixture
def tree(tmp_path):
    """A copy of the package's sources (l2reg/ only: the fingerprint reads nothing else)."""
    shutil.copytree(REPO / "l2reg", tmp_path / "l2reg", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_docstrings_comments_and_the_report_code_keep_it_a_change_to_the_training_changes_it(tree):
    before = fingerprint.of_tree(tree, VERSIONS)
    assert before == fingerprint.of_tree(REPO, VERSIONS) and len(before) == fingerprint.LENGTH
    train = tree / "l2reg" / "train.py"
    edit(train, '"""THE training loop', '"""The one training loop (reworded)')
    edit(train, "ADAM_BETAS = (0.9, 0.999)", "ADAM_BETAS = (0.9, 0.999)  # a comment added")
    edit(tree / "l2reg" / "pool_kernels.c", "#include", "/* a C comment */\n#include")
    (tree / "l2reg" / "report.py").write_text("# the report can change freely\n")
    (tree / "l2reg" / "stats.py").write_text("")
    assert fingerprint.of_tree(tree, VERSIONS) == before
    edit(train, "ce = cross_entropy(logits, y)", "ce = 1.5 * cross_entropy(logits, y)")  # the loss scaled
    scaled = fingerprint.of_tree(tree, VERSIONS)
    assert scaled != before
    assert fingerprint.of_tree(tree, {**VERSIONS, "torch": "2.15.0"}) not in (before, scaled)


def test_every_number_source_exists_and_counts(tree):
    assert [p for p in fingerprint.NUMBER_SOURCES if not (REPO / p).is_file()] == []
    before = fingerprint.of_tree(tree, VERSIONS)
    for path in fingerprint.NUMBER_SOURCES:
        file = tree / path
        kept = file.read_text()
        file.write_text(kept + ("\nint l2sweep_extra = 1;\n" if path.endswith(".c") else "\nEXTRA = 1\n"))
        assert fingerprint.of_tree(tree, VERSIONS) != before, path
        file.write_text(kept)


def test_a_commit_is_fingerprinted_from_git_and_the_claim_checks_two_commits_share_one():
    known = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", "fadefd8^{commit}"], capture_output=True)
    if known.returncode != 0:
        pytest.skip("this clone lacks the claim check's commits (a shallow clone)")
    # f139fb7 and fadefd8 differ only in statistics, reports and experiment files
    assert fingerprint.of_commit(REPO, "f139fb7", VERSIONS) == fingerprint.of_commit(REPO, "fadefd8", VERSIONS)
    assert fingerprint.of_commit(REPO, "fadefd8", VERSIONS) != fingerprint.of_commit(REPO, "bb6146c", VERSIONS)
    with pytest.raises(ValueError, match="not in the repository"):
        fingerprint.of_commit(REPO, "0" * 40, VERSIONS)


def test_a_job_whose_code_changed_after_submission_trains_nothing_and_says_why(tmp_path, monkeypatch):
    from l2reg.compose import expand_and_compose

    [(_, cfg)] = expand_and_compose(["alpha=1e-3", "seed=0"])
    [base, run] = plan([cfg])
    [job] = pack_job.make_jobs([run], tmp_path, 1)
    assert job.origin["code_fingerprint"] == fingerprint.current()
    monkeypatch.setattr(fingerprint, "current", lambda: "0123456789abcdef")  # the tree changed meanwhile
    result = pack_job.run_pack_job(job)
    [record] = result.records
    assert record["status"] == "failed" and record["code_fingerprint"] == "0123456789abcdef"
    assert "the code changed after submission" in record["error"] and job.origin["code_fingerprint"] in record["error"]
    assert base.is_baseline
