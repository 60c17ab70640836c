"""Give run files written before code fingerprints existed theirs, from the commit they record.

For every run file in the given results folders that has no `code_fingerprint`, compute the
fingerprint (l2reg.fingerprint) of the commit in its `git_commit` with the torch and torchvision
versions in its `versions`, and add it, with `code_fingerprint_from` saying where it came from.
A commit recorded as `<sha>+dirty` (code that differed from the commit) gets the commit's
fingerprint and says so: the folder's sweep.json holds the diff of each invocation, which is where
to check what differed. A run whose commit is not in this repository is left as it is and named.
Nothing else in a run file changes; files are rewritten atomically.

Usage: .venv/bin/python scripts/backfill_fingerprints.py results/ablation results/controls-*
       [--check]  (only report what would be added; exit 1 if anything is missing)
"""

import argparse
import sys
from pathlib import Path

from l2reg import files, fingerprint

REPO = Path(__file__).resolve().parent.parent


def backfill(folder: Path, check: bool, cache: dict) -> tuple[int, int, list[str]]:
    """(runs given a fingerprint, runs that had one, run files that could not get one)."""
    added, had, missing = 0, 0, []
    for path in files.run_files(folder / "runs"):
        record = files.read_json(path)
        if record.get("code_fingerprint"):
            had += 1
            continue
        commit = str(record.get("git_commit") or "")
        base = commit.removesuffix("+dirty")
        recorded = record.get("versions") or {}
        versions = {name: recorded.get(name, "not installed") for name in ("torch", "torchvision")}
        key = (base, tuple(sorted(versions.items())))
        if key not in cache:
            try:
                cache[key] = fingerprint.of_commit(REPO, base, versions) if base and base != "unknown" else None
            except ValueError:
                cache[key] = None
        if cache[key] is None:
            missing.append(f"{path}: commit {commit or 'not recorded'} is not in this repository")
            continue
        added += 1
        if check:
            continue
        record["code_fingerprint"] = cache[key]
        record["code_fingerprint_from"] = (f"commit {base} (backfilled" + (
            "; the run recorded uncommitted changes: sweep.json holds their diff" if commit.endswith("+dirty") else "")
            + ")")
        files.write_json_atomic(path, record)
    return added, had, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if a run lacks a fingerprint")
    args = parser.parse_args()
    cache: dict = {}
    lacking = 0
    for folder in args.folders:
        if not (folder / "runs").is_dir():
            continue
        added, had, missing = backfill(folder, args.check, cache)
        lacking += added + len(missing) if args.check else len(missing)
        print(f"{folder}: {added} run(s) {'lack a fingerprint' if args.check else 'given their fingerprint'}, "
              f"{had} had one" + (f", {len(missing)} could not get one" if missing else ""))
        for line in missing[:5]:
            print(f"  {line}")
    sys.exit(1 if lacking else 0)


if __name__ == "__main__":
    main()
