"""The code fingerprint of a run: a hash of exactly the source that decides its numbers.

NUMBER_SOURCES lists the files whose code can change a trained run's numbers: the training loop,
the model and its pooling operator (with its C kernels), the data, the penalties, the schedules,
the random numbers, the evaluation and the feature metrics, the device set-up, and the planning
code that turns a config into a run (its training settings and compile decision). The report,
statistics, plots, executors and CLI are not in it: they cannot change a run.

What is hashed is the code, not the text: each Python file's syntax tree with every docstring
removed (`ast.dump`, so comments and formatting drop out too), each C file with its comments and
whitespace runs removed, and the torch and torchvision versions. A docstring or comment edit
keeps the fingerprint; any change to an expression changes it, even one that happens not to
change the numbers (the fingerprint is conservative). The tree dump is that of the running
Python's `ast` module, so a fingerprint is compared only between runs of one Python minor version
(recorded in the hash too).

`of_tree(folder)` fingerprints a checkout; `of_commit(repo, commit)` a commit of a git repository
(`git show`), which gives runs written before fingerprints existed theirs, from the commit they
recorded (scripts/backfill_fingerprints.py).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import subprocess
import sys
from pathlib import Path

NUMBER_SOURCES = ("l2reg/train.py", "l2reg/model.py", "l2reg/ops.py", "l2reg/pool_kernels.c", "l2reg/data.py",
                  "l2reg/penalties.py", "l2reg/schedules.py", "l2reg/rng.py", "l2reg/evaluate.py",
                  "l2reg/features.py", "l2reg/device.py", "l2reg/cpus.py", "l2reg/sweep.py")
LENGTH = 16  # hex digits kept: 64 bits, no accidental collision among a project's code versions
UNKNOWN = "unknown"


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised(path: str, text: str) -> str:
    """What of a source file is hashed: a Python file's syntax tree without docstrings, a C file
    without comments and with each run of whitespace as one space."""
    if path.endswith(".py"):
        return ast.dump(_without_docstrings(ast.parse(text)), include_attributes=False)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return " ".join(text.split())


def combine(sources: dict[str, str], versions: dict[str, str]) -> str:
    """The fingerprint of {path: source text} (NUMBER_SOURCES present) and library versions."""
    digest = hashlib.sha256()
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}\0".encode())
    for name in sorted(versions):
        digest.update(f"{name} {versions[name]}\0".encode())
    for path in NUMBER_SOURCES:
        if path in sources:
            digest.update(f"{path}\0{normalised(path, sources[path])}\0".encode())
    return digest.hexdigest()[:LENGTH]


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose kernels compute the numbers (torch, torchvision)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "torchvision"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def of_tree(folder: Path | None = None, versions: dict[str, str] | None = None) -> str:
    """The fingerprint of the sources under `folder` (default: this checkout or installed package)."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent.parent
    sources = {}
    for path in NUMBER_SOURCES:
        file = folder / path
        if file.is_file():
            sources[path] = file.read_text()
    return combine(sources, versions or library_versions())


@functools.lru_cache(maxsize=1)
def current() -> str:
    """This process' fingerprint (computed once: the code a process runs does not change)."""
    return of_tree()


def of_commit(repo: Path, commit: str, versions: dict[str, str]) -> str:
    """The fingerprint of a commit of a git repository, with the given library versions (a run's
    recorded ones). Raises ValueError when git does not know the commit."""
    known = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        raise ValueError(f"commit {commit} is not in the repository at {repo}")
    sources = {}
    for path in NUMBER_SOURCES:
        shown = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:
            sources[path] = shown.stdout
    return combine(sources, versions)


def of_record(record: dict) -> str:
    """A run record's fingerprint, or UNKNOWN when it was written before fingerprints existed."""
    return str(record.get("code_fingerprint") or UNKNOWN)
