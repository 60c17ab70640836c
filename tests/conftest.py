"""Shared fixtures: tiny IDX data sets written by the tests (read by torchvision's real loader),
config composition with the project's real conf/, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from l2reg.data import write_idx

REAL_MNIST = os.environ.get("L2SWEEP_DATA")


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


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster for the session (tests/slurm_cluster.py); skips, saying
    why, where the daemons cannot start (packages missing, not root)."""
    from slurm_cluster import slurm_cluster_fixture

    yield from slurm_cluster_fixture(tmp_path_factory)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped (and said so) where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
