"""Does this checkout train the same numbers, to the bit, as another commit? (docs/performance.md)

Trains a list of short runs (1 epoch on 3,000 training images, CPU, feature metrics on) in this
checkout and, in a subprocess, in `--before` (a git worktree of the other commit: its code is
imported from there), then compares every parameter tensor bit for bit, the test predictions,
every metric and the per-epoch history (timings aside). The settings cover every penalty term:
the baseline; weights l2, l1 and scope=all; activations l2 and l1 (one with an exponential
schedule); both; decoupled decay. Each trains as a single run compiled and eager, and, with
--pack, all of them once more as one vmapped pack (eager). Only the training API every commit
has is used (TrainSettings, make_spec, train_pack), so an old checkout runs it unchanged.
Exit status 0 when everything is equal, 1 otherwise.
Usage: .venv/bin/python scripts/same_training.py --before ../ref [--data ../shared/data] [--pack]
       [--only both-l2,baseline] [--modes compiled,eager] [--changed-metrics weight_sq_norm,...]
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
SEED = 3
# label -> (alpha, schedule name, schedule fields, setting axes)
SETTINGS = {
    "baseline": (0.0, "constant", {}, {}),
    "weights-l2-conv": (1e-3, "constant", {}, {"target": "weights", "norm": "l2"}),
    "weights-l1": (1e-4, "constant", {}, {"target": "weights", "norm": "l1"}),
    "weights-l2-scope-all": (1e-3, "constant", {}, {"target": "weights", "scope": "all"}),
    "activations-l2": (1e-3, "constant", {}, {"target": "activations", "norm": "l2"}),
    "activations-l1-exponential": (1e-4, "exponential", {"gamma": 1.0}, {"target": "activations", "norm": "l1"}),
    "both-l2": (1e-3, "constant", {}, {"target": "both"}),
    "decoupled-conv": (0.5, "constant", {}, {"target": "weights", "form": "decoupled", "scope": "conv"}),
}
MODES = ("compiled", "eager")
UNTIMED = ("seconds", "train_seconds")  # history keys that are wall times, not numbers of the run


def _spec(label: str):
    from l2reg import train as T
    from l2reg.config import ScheduleConfig

    alpha, schedule, fields, setting = SETTINGS[label]
    return T.make_spec(SEED, alpha=alpha, schedule=ScheduleConfig(schedule, **fields), **setting)


def _kept(result: dict) -> dict:
    return {"params": result["params"], "predictions": result["test_predictions"], "metrics": result["metrics"],
            "history": [{k: v for k, v in h.items() if k not in UNTIMED} for h in result["history"]]}


def train_all(data_root: str, labels: list[str], modes: list[str], pack: bool, out: Path) -> None:
    """The runs, with the l2reg that this interpreter imports; saved to `out` as {name: kept}."""
    from l2reg import train as T
    from l2reg.data import load_mnist

    data = load_mnist(data_root, download=False)
    runs = {}
    for mode in modes:
        settings = T.TrainSettings(epochs=1, train_size=3000, compile=mode == "compiled", features=True)
        for label in labels:
            [result] = T.train_pack([_spec(label)], data, settings, keep_params=True)
            runs[f"{label} ({mode})"] = _kept(result)
    if pack:
        settings = T.TrainSettings(epochs=1, train_size=3000, compile=False, features=True)
        results = T.train_pack([_spec(label) for label in labels], data, settings, keep_params=True)
        runs.update({f"{label} (in a pack of {len(labels)})": _kept(r) for label, r in zip(labels, results)})
    torch.save(runs, out)


def _bits(value):
    """A value's exact identity: floats by their hex (so -0.0, 0.0 and NaN payloads count)."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    return value


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():  # bit for bit: the integer view of the same bytes
        view = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def _close(a, b) -> bool:
    """Equal to float32 precision (a metric now summed in float64 that was summed in float32)."""
    return isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-6)


def differences(ours: dict, theirs: dict, changed: tuple[str, ...] = ()) -> list[str]:
    """What differs between two kept runs (empty: identical to the bit). Metrics named in `changed`
    (their computation changed on purpose) need only agree to float32 precision, or be new."""
    found = []
    if ours["params"].keys() != theirs["params"].keys():
        found.append("parameter names")
    found += [f"param {name}" for name in ours["params"] if name in theirs["params"]
              and not _same_tensor(ours["params"][name], theirs["params"][name])]
    if ours["predictions"] != theirs["predictions"]:
        found.append("test predictions")
    keys = ours["metrics"].keys() | theirs["metrics"].keys()
    for key in sorted(keys):
        mine, before = ours["metrics"].get(key, "absent"), theirs["metrics"].get(key, "absent")
        if _bits(mine) == _bits(before) or key in changed and (before == "absent" or _close(mine, before)):
            continue
        found.append(f"metric {key} ({mine!r} vs {before!r})")
    mine = [{k: _bits(v) for k, v in h.items()} for h in ours["history"]]
    if mine != [{k: _bits(v) for k, v in h.items()} for h in theirs["history"]]:
        found.append("history")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout (git worktree) of the commit to compare with")
    parser.add_argument("--data", default=os.environ.get("L2SWEEP_DATA", "../shared/data"))
    parser.add_argument("--only", default=",".join(SETTINGS), help="comma-separated labels of SETTINGS")
    parser.add_argument("--modes", default=",".join(MODES), help="compiled, eager or both")
    parser.add_argument("--pack", action="store_true", help="also train all the settings as one eager pack")
    parser.add_argument("--changed-metrics", default="", help="comma-separated metrics whose computation changed on "
                        "purpose: they need only agree to float32 precision, or be new in this checkout")
    parser.add_argument("--train-only", type=Path, help=argparse.SUPPRESS)  # the subprocess's job
    args = parser.parse_args()
    data_root = str(Path(args.data).resolve())
    labels, modes = args.only.split(","), args.modes.split(",")
    unknown = [label for label in labels if label not in SETTINGS] + [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown setting or mode {unknown[0]!r}: choose from {', '.join([*SETTINGS, *MODES])}")
    if args.train_only:
        train_all(data_root, labels, modes, args.pack, args.train_only)
        return
    if not args.before or not (Path(args.before) / "l2reg").is_dir():
        parser.error("--before must name a checkout of l2sweep (a folder with l2reg/)")
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours.pt", Path(tmp) / "before.pt"
        train_all(data_root, labels, modes, args.pack, ours)
        before = str(Path(args.before).resolve())
        subprocess.run([sys.executable, str(HERE), "--train-only", str(theirs), "--data", data_root,
                        "--only", args.only, "--modes", args.modes, *(["--pack"] if args.pack else [])],
                       check=True, cwd=before, env={**os.environ, "PYTHONPATH": before})
        a, b = torch.load(ours), torch.load(theirs)
    failures = 0
    for name in a:
        found = differences(a[name], b[name], tuple(m for m in args.changed_metrics.split(",") if m))
        failures += bool(found)
        accuracy = a[name]["metrics"]["test_acc"]
        print(f"{name:44s} {'identical' if not found else 'DIFFERENT: ' + '; '.join(found)}"
              f"  (test accuracy {accuracy} %)")
    print(f"{len(a) - failures} of {len(a)} runs identical to the bit with {args.before}")
    sys.exit(0 if failures == 0 else 1)


if __name__ == "__main__":
    main()
