"""MNIST through torchvision's real loader on tiny IDX files: scaling, split, errors."""

import pytest
import torch

from l2reg.data import DataError, load_mnist, raw_dir


def test_tiny_files_load_scaled_with_the_last_tenth_as_validation(tiny_mnist):
    from torchvision import datasets

    data = load_mnist(tiny_mnist, val_fraction=0.1)
    assert data.sizes() == {"train": 540, "val": 60, "test": 200}
    assert data.train_x.shape == (540, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    raw = datasets.MNIST(str(tiny_mnist), train=True)
    assert torch.equal(data.val_y, raw.targets[540:])  # the *last* 10 %, as Keras validation_split
    assert torch.allclose(data.val_x[0, 0], raw.data[540].float() / 255)


def test_limits(tiny_mnist):
    data = load_mnist(tiny_mnist, train_limit=300, test_limit=50)
    assert data.sizes() == {"train": 270, "val": 30, "test": 50}


def test_missing_files_without_download_say_where_to_put_them(tmp_path):
    with pytest.raises(DataError, match="MNIST files missing in .*train-images-idx3-ubyte"):
        load_mnist(tmp_path / "nowhere", download=False)
    assert not (tmp_path / "nowhere").exists()


def test_corrupt_file_is_a_data_error(tiny_mnist):
    path = raw_dir(tiny_mnist) / "train-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] = 0x01  # wrong magic number
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="cannot read the MNIST training files"):
        load_mnist(tiny_mnist)


def test_truncated_file_is_a_data_error(tiny_mnist):
    path = raw_dir(tiny_mnist) / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="cannot read the MNIST test files"):
        load_mnist(tiny_mnist)
