"""MNIST as tensors on the training device, read by torchvision's real loader.

`data.root` (env L2SWEEP_DATA) holds torchvision's `MNIST/raw/` files. Missing files are
downloaded by torchvision when allowed and the network answers; otherwise a DataError says where
to put them. Images are scaled to [0, 1] (float32, (N, 1, 28, 28)); the last `val_fraction` of
the (possibly limited) training set is the validation split, as Keras' `validation_split` takes it
(before any shuffling). Everything stays on the device: no DataLoader, no per-step copies.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(RuntimeError):
    """A user-facing data problem (missing, truncated or corrupt MNIST files)."""


@dataclass
class MNISTTensors:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def raw_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / "MNIST" / "raw"


def missing_files(root: str | Path) -> list[str]:
    return [name for name in RAW_FILES if not (raw_dir(root) / name).is_file()]


def _download(root: Path) -> None:
    """Let torchvision download into root; on failure remove the folders it made and explain."""
    from torchvision import datasets

    created = [p for p in (root, root / "MNIST", raw_dir(root)) if not p.exists()]
    try:
        for train in (True, False):
            datasets.MNIST(str(root), train=train, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError/OSError variously
        for path in created[:1]:
            shutil.rmtree(path, ignore_errors=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"MNIST is not in {raw_dir(root)} and could not be downloaded ({reason}): put the files "
            f"{', '.join(RAW_FILES)} there, or point data.root (env L2SWEEP_DATA) at a folder holding MNIST/raw/"
        ) from error


def check_files(root: str | Path, download: bool) -> None:
    """Make sure the four raw files are there (downloading if allowed); raise DataError if not."""
    root = Path(root).expanduser()
    missing = missing_files(root)
    if not missing:
        return
    if download:
        _download(root)
        return
    raise DataError(
        f"MNIST files missing in {raw_dir(root)}: {', '.join(missing)}; put them there (torchvision "
        f"layout) or point data.root (env L2SWEEP_DATA) at a folder holding MNIST/raw/"
    )


def _read_split(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    try:
        dataset = datasets.MNIST(str(root), train=train, download=False)
        images, labels = dataset.data, dataset.targets
    except Exception as error:  # wrong magic number, truncated file, ...: torchvision's own checks
        split = "training" if train else "test"
        raise DataError(f"cannot read the MNIST {split} files in {raw_dir(root)}: {error}") from error
    if images.dim() != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels) or len(images) == 0:
        raise DataError(f"MNIST files in {raw_dir(root)} have unexpected shapes: images {tuple(images.shape)}, "
                        f"labels {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        raise DataError(f"MNIST labels in {raw_dir(root)} are outside 0..9")
    return images, labels


def load_mnist(root: str | Path, val_fraction: float = 0.1, train_limit: int | None = None,
               test_limit: int | None = None, download: bool = True,
               device: str | torch.device = "cpu") -> MNISTTensors:
    """Read MNIST with torchvision, split off the validation set, move everything to `device` once."""
    root = Path(root).expanduser()
    check_files(root, download)
    train_images, train_labels = _read_split(root, train=True)
    test_images, test_labels = _read_split(root, train=False)
    if train_limit is not None:
        train_images, train_labels = train_images[:train_limit], train_labels[:train_limit]
    if test_limit is not None:
        test_images, test_labels = test_images[:test_limit], test_labels[:test_limit]
    n_val = int(round(len(train_labels) * val_fraction))
    n_train = len(train_labels) - n_val
    if n_train < 1 or n_val < 1:
        raise DataError(f"{len(train_labels)} training images cannot be split with val_fraction={val_fraction}")

    def images(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device=device, dtype=torch.float32) / 255.0).unsqueeze(1)

    def labels(y: torch.Tensor) -> torch.Tensor:
        return y.to(device=device, dtype=torch.long)

    return MNISTTensors(
        train_x=images(train_images[:n_train]), train_y=labels(train_labels[:n_train]),
        val_x=images(train_images[n_train:]), val_y=labels(train_labels[n_train:]),
        test_x=images(test_images), test_y=labels(test_labels),
    )


def write_idx(folder: str | Path, images, labels, train: bool) -> None:
    """Write images (N, 28, 28) uint8 and labels (N,) as MNIST IDX files (tests, tiny data sets)."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.uint8)
    prefix = "train" if train else "t10k"
    n, rows, cols = images.shape
    header = (0x00000803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (n, rows, cols))
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    header = (0x00000801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
