"""Shared fixtures: tiny IDX data sets written by the tests (read by torchvision's real loader),
config composition with the project's real conf/, and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from l2reg.data import write_idx

REAL_MNIST = os.environ.get("L2SWEEP_DATA")


def start_as_in_a_terminal(argv: list[str]) -> subprocess.Popen:
    """Start `argv` (text pipes) with SIGINT at its default, as a shell in a terminal starts a
    command, so that the Ctrl-C tests test l2sweep's handler. Why: a process started in the
    background of a non-interactive shell (`cmd &`, nohup, some CI runners) inherits SIGINT
    *ignored*, and Python then never raises KeyboardInterrupt: the sweep would run to its end and
    the test fail for a reason that is not l2sweep's (seen on a fresh clone run from such a shell)."""
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def pattern_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: label k lights a 6x6 square at a k-dependent place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, k in enumerate(labels):
        row, col = 2 + 5 * (k // 5) * 2, 2 + 5 * (k % 5)
        images[i, row:row + 6, col:col + 6] = 250
    return images.astype(np.uint8), labels.astype(np.uint8)


def make_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    raw = root / "MNIST" / "raw"
    write_idx(raw, *pattern_images(n_train, seed=1), train=True)
    write_idx(raw, *pattern_images(n_test, seed=2), train=False)
    return root


@pytest.fixture
def tiny_mnist_factory(tmp_path):
    """make(n_train, n_test) -> a data root with IDX files of that size."""
    return lambda n_train=600, n_test=200: make_tiny_mnist(tmp_path / f"data-{n_train}-{n_test}", n_train, n_test)


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    return make_tiny_mnist(tmp_path / "data")


@pytest.fixture
def real_mnist() -> Path:
    if not REAL_MNIST or not (Path(REAL_MNIST) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("set L2SWEEP_DATA to a folder with MNIST/raw/ for the real-MNIST tests")
    return Path(REAL_MNIST)


@pytest.fixture
def wide_console(monkeypatch):
    """l2sweep's consoles 300 columns wide: Rich wraps at 80 when the output is not a terminal, and
    the CLI tests assert on whole lines (modules opt in with pytest.mark.usefixtures)."""
    from l2reg.cli import main as cli_main

    monkeypatch.setattr(cli_main.out, "width", 300)
    monkeypatch.setattr(cli_main.err, "width", 300)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster for the session (tests/slurm_cluster.py); skips, saying
    why, where the daemons cannot start (packages missing, not root)."""
    from slurm_cluster import slurm_cluster_fixture

    yield from slurm_cluster_fixture(tmp_path_factory)


# Modules whose module-scoped fixtures cost seconds (a wheel build, report rebuilds): under
# pytest-xdist each keeps to one worker, so the fixture is built once, not once per worker.
ONE_WORKER_MODULES = ("test_packaging_wheel.py", "test_committed_results.py", "test_inputs_misleading.py")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs a worker per core plus one, docs/development.md "Tests"), each
    worker keeps to its share of the cores (one core, shared round-robin, when there are more
    workers than cores): torch there runs one thread per core it may use (l2reg.train
    follows the affinity), and so do the processes it starts (SLURM daemons, local workers,
    subprocess runs). Two torch processes with a thread per core each on the same two cores run
    at about a quarter of their speed, far worse than half."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... (unset without -n)
    n_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or n_workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker.removeprefix("gw"))
    # more workers than cores (make test runs one more: the SLURM tests' worker mostly waits on
    # time limits): workers share cores round-robin, one core each
    share = cores[index % n_workers::n_workers] if len(cores) >= n_workers else [cores[index % len(cores)]]
    os.sched_setaffinity(0, share)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped (and said so) where there is none. For pytest-xdist's
    --dist loadgroup: every test on the one SLURM cluster (a session fixture on fixed ports) runs
    in one worker, and so does each module in ONE_WORKER_MODULES."""
    import torch

    for item in items:
        if "slurm" in item.keywords or "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif item.path.name in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
