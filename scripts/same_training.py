"""Does this checkout train the same parameters, to the bit, as another commit's? (docs/performance.md)

Trains one short run (seed 3, alpha=1e-3, target=both, 1 epoch on 3,000 training images, compiled,
CPU, feature metrics on) in this checkout and, in a subprocess, in `--before` (a git worktree of the
other commit: its code is imported from there), then compares every parameter tensor bit for bit,
the test predictions and the test accuracy. Exit status 0 when all are equal, 1 otherwise.
Usage: .venv/bin/python scripts/same_training.py --before ../l2sweep-at-fadefd8 [--data ../shared/data]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve()


def train_one(data_root: str, out: Path) -> None:
    """The short run, with the l2reg that this interpreter imports; saved to `out`."""
    from l2reg import train as T
    from l2reg.data import load_mnist

    data = load_mnist(data_root, download=False)
    settings = T.TrainSettings(epochs=1, train_size=3000, compile=True, features=True)
    [result] = T.train_pack([T.make_spec(3, alpha=1e-3, target="both")], data, settings, keep_params=True)
    torch.save({"params": result["params"], "test_acc": result["metrics"]["test_acc"],
                "predictions": result["test_predictions"]}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout (git worktree) of the commit to compare with")
    parser.add_argument("--data", default=os.environ.get("L2SWEEP_DATA", "../shared/data"))
    parser.add_argument("--train-only", type=Path, help=argparse.SUPPRESS)  # the subprocess's job
    args = parser.parse_args()
    data_root = str(Path(args.data).resolve())
    if args.train_only:
        train_one(data_root, args.train_only)
        return
    if not args.before or not (Path(args.before) / "l2reg").is_dir():
        parser.error("--before must name a checkout of l2sweep (a folder with l2reg/)")
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.pt", Path(tmp) / "before.pt"
        train_one(data_root, ours)
        before = str(Path(args.before).resolve())
        subprocess.run([sys.executable, str(HERE), "--train-only", str(theirs), "--data", data_root], check=True,
                       cwd=before, env={**os.environ, "PYTHONPATH": before})
        a, b = torch.load(ours), torch.load(theirs)
    same = {name: torch.equal(a["params"][name], b["params"][name]) for name in a["params"]}
    same["test predictions"] = a["predictions"] == b["predictions"]
    same["test accuracy"] = a["test_acc"] == b["test_acc"]
    for name, equal in same.items():
        print(f"{name:18s} {'identical' if equal else 'DIFFERENT'}")
    print(f"test accuracy: {a['test_acc']} % here, {b['test_acc']} % in {args.before}")
    sys.exit(0 if all(same.values()) else 1)


if __name__ == "__main__":
    main()
