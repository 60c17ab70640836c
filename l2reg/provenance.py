"""Provenance of a sweep: results/<name>/sweep.json, one entry per invocation of `l2sweep run`.

Each entry records the command line, each point's overrides, the runs planned, the resolved
decisions (device, pack size, compile per context), the host, the torch / CUDA / cuDNN versions,
the git commit and, when the tree has uncommitted changes, their diff. A resumed sweep appends an
entry, so the folder says what produced every part of it.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

from l2reg import files


def environment() -> dict:
    import torch

    cuda = torch.version.cuda
    return {
        "host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": __import__("os").cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": files.versions(),
    }


DIFF_CAP = 200_000  # characters of diff kept in sweep.json
CODE_FOLDERS = tuple(p for p in files.CODE_PATHS if "." not in p)  # untracked files there: their content is kept


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, errors="replace",
                          timeout=20).stdout


def git_state(folder: Path | None = None) -> dict:
    """The commit and, when the tree has uncommitted changes, the diff against it (capped at
    DIFF_CAP characters): tracked changes to the code (l2reg/, cli/, conf/, pyproject.toml), new
    untracked files there (a new module changes what runs as much as an edit does), then the other
    tracked changes; and the names of all untracked files.
    Outside a git checkout (an installed package) the commit is 'unknown' and nothing else is said."""
    folder = Path(folder or Path(__file__).resolve().parent.parent)
    if not (folder / ".git").exists():
        return {"commit": "unknown", "note": f"{folder} is not a git checkout (an installed package)"}
    commit = files.git_commit(folder)
    state = {"commit": commit}
    try:
        untracked = [name for name in _git(folder, "ls-files", "--others", "--exclude-standard").splitlines() if name]
    except (OSError, subprocess.SubprocessError):
        untracked = []
    try:  # any tracked change, code or not (the commit's '+dirty' speaks of the code only)
        changed = bool(_git(folder, "status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        changed = True
    if commit.endswith("+dirty") or changed or untracked:
        try:
            code = list(files.CODE_PATHS)
            diff = _git(folder, "diff", "HEAD", "--", *code)  # the code first: it is what the cap keeps
            for name in untracked:
                if name.split("/")[0] in CODE_FOLDERS and len(diff) < DIFF_CAP:
                    diff += _git(folder, "diff", "--no-index", "--", "/dev/null", name)
            if len(diff) < DIFF_CAP:
                diff += _git(folder, "diff", "HEAD", "--", ".", *[f":(exclude){path}" for path in code])
            state["diff"] = diff[:DIFF_CAP] + ("\n[... truncated]" if len(diff) > DIFF_CAP else "")
        except (OSError, subprocess.SubprocessError):
            state["diff"] = "unavailable"
        state["untracked"] = untracked[:1000]
    return state


def write_sweep_json(results_dir: Path, command: Sequence[str], points: Sequence[Sequence[str]], planned: Sequence,
                     device, pack_size: int, data: dict) -> Path:
    """Append this invocation to results_dir/sweep.json (written atomically)."""
    from l2reg import sweep

    compile_by_context = {}
    for run in planned:
        label = sweep.context_label(run.config)
        if label not in compile_by_context:
            n_train = run.config.data.train_size or len(sweep.load_data(run.config, device, data).train_y)
            compile_by_context[label] = sweep.compile_decision(run.config, device.type, n_train)
    path = Path(results_dir) / "sweep.json"
    try:
        existing = files.read_json(path)
        invocations = existing.get("invocations", []) if isinstance(existing, dict) else []
    except (OSError, ValueError):
        invocations = []
    invocations.append({
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(command),
        "points": [list(p) for p in points],
        "planned_runs": [run.run_id for run in planned],
        "decisions": {"device": str(device), "pack_size": pack_size, "compile_by_context": compile_by_context},
        "environment": environment(),
        "git": git_state(),
    })
    files.write_json_atomic(path, {"invocations": invocations})
    return path
