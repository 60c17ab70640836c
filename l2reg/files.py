"""Files on disk: atomic writes and the provenance every run records (versions, git commit)."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null (a diverged run's metrics)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class NoSpace(OSError):
    """The file system (or a quota) is full: `path` could not be written. Every file written
    before is whole (atomic writes), so whoever catches this can say the finished runs are kept."""

    def __init__(self, code: int, path: Path):
        super().__init__(code, f"no space left to write {path} ({os.strerror(code)})")
        self.path = Path(path)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a uniquely named temporary file in the same folder, fsync, then rename: readers
    never see half a file, and two processes writing the same path never clash. A full disk
    raises NoSpace, naming the file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; results are meant to be read by others
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in NO_SPACE and not isinstance(error, NoSpace):
            raise NoSpace(error.errno, path) from error
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(_finite(data), indent=1, allow_nan=False, sort_keys=False) + "\n")


def run_files(runs_dir: Path) -> list[Path]:
    """The run files of a runs/ folder, sorted: `<run_id>.json` (the temporaries of an atomic
    write end in .tmp, so a half-written file is never listed)."""
    return sorted(Path(runs_dir).glob("*.json"))


def planned_runs(results_dir: Path) -> list[str]:
    """The run ids planned by any invocation of a results folder (its sweep.json), in order; none
    when it has no readable sweep.json."""
    ids: dict[str, None] = {}
    try:
        for invocation in read_json(Path(results_dir) / "sweep.json").get("invocations", []):
            ids.update(dict.fromkeys(invocation.get("planned_runs", [])))
    except (OSError, ValueError, AttributeError):
        pass
    return list(ids)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# What decides what a run computes: a change here (tracked, or a new untracked file) makes the
# commit '+dirty'. Results, docs, tests and scripts do not change what runs.
CODE_PATHS = ("l2reg", "cli", "conf", "pyproject.toml")


def git_commit(folder: Path | None = None) -> str:
    """The commit of the code that ran, with '+dirty' when the code (CODE_PATHS) differs from it:
    tracked changes or new untracked files there; or 'unknown'. A tree whose only changes are
    results (a sweep writing into a checkout) stays clean: l2reg.provenance records those."""
    folder = folder or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS],
                               cwd=folder, capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Library versions, read from the installed distributions' metadata."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "hydra-core", "numpy", "l2sweep"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
