"""Data readers on tiny files written in the exact on-disk formats, and the batch pipeline."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from ndsnn_triton.train.data import (
    BatchLoader,
    DataError,
    cutout,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_tiny_imagenet,
    random_crop_flip,
)


def _cifar_batch(n, label_key, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    return {b"data": data, label_key: labels, b"batch_label": b"x"}


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_pickle(folder / f"data_batch_{i}", _cifar_batch(4, b"labels", i))
    _write_pickle(folder / "test_batch", _cifar_batch(3, b"labels", 9))
    return tmp_path


def test_cifar10_reads_pickles_with_rgb_planes(cifar10_root):
    data = load_cifar10(cifar10_root)
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (3, 3, 32, 32)
    raw = pickle.loads(
        (cifar10_root / "cifar-10-batches-py" / "data_batch_2").read_bytes(), encoding="bytes"
    )
    row = raw[b"data"][1]
    img = data.train.images[5]  # batch 2, image 1
    assert img[0, 0, 0] == row[0] and img[1, 0, 0] == row[1024] and img[2, 31, 31] == row[3071]
    assert img[0, 1, 0] == row[32]  # row-major within a plane
    assert data.train.labels[5] == raw[b"labels"][1]
    assert data.augment == "cifar" and data.num_classes == 10
    assert (
        load_cifar10(cifar10_root / "cifar-10-batches-py").train.images.shape[0] == 20
    )  # the folder itself


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _cifar_batch(5, b"fine_labels", 1)
    train[b"coarse_labels"] = [0] * 5
    _write_pickle(folder / "train", train)
    _write_pickle(folder / "test", _cifar_batch(2, b"fine_labels", 2))
    data = load_cifar100(tmp_path)
    assert data.num_classes == 100 and data.train.labels.tolist() == train[b"fine_labels"]


def test_cifar_errors_name_what_is_missing_or_broken(cifar10_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path / "nowhere")
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(cifar10_root)
    _write_pickle(
        cifar10_root / "cifar-10-batches-py" / "data_batch_3",
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
    )
    with pytest.raises(DataError, match="N×3072"):
        load_cifar10(cifar10_root)


def _write_idx(path, array, magic, gz):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x803, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(6) % 10, 0x801, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images[:2], 0x803, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([3, 4]), 0x801, gz)
    data = load_fashion_mnist(tmp_path)
    assert data.train.images.shape == (6, 1, 32, 32)  # zero-padded 28 -> 32
    assert torch.equal(data.train.images[:, 0, 2:30, 2:30], torch.from_numpy(images))
    assert data.train.images[:, :, :2].sum() == 0
    assert data.test.labels.tolist() == [3, 4]
    assert load_fashion_mnist(tmp_path, pad_to=None).train.images.shape == (6, 1, 28, 28)


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fashion_mnist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path)
    _write_idx(
        tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), 0x801, False
    )  # label magic
    with pytest.raises(DataError, match="magic"):
        load_fashion_mnist(tmp_path)
    raw = struct.pack(">II", 0x803, 5) + struct.pack(">II", 28, 28) + b"\x00" * 100  # truncated
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError, match="holds 100"):
        load_fashion_mnist(tmp_path)


def _write_jpeg(path, color):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path, "JPEG", quality=95)


def test_tiny_imagenet_folder(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for i, w in enumerate(wnids):
        for j in range(2):
            _write_jpeg(root / "train" / w / "images" / f"{w}_{j}.JPEG", (200 * i, 50, 100))
    _write_jpeg(root / "val" / "images" / "val_0.JPEG", (0, 50, 100))
    _write_jpeg(root / "val" / "images" / "val_1.JPEG", (200, 50, 100))
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn01\t0\t0\t63\t63\nval_1.JPEG\tn02\t1\t1\t60\t60\n"
    )
    data = load_tiny_imagenet(tmp_path)
    assert data.train.images.shape == (4, 3, 64, 64) and data.num_classes == 2
    assert data.train.labels.tolist() == [0, 0, 1, 1] and data.test.labels.tolist() == [0, 1]
    assert abs(int(data.test.images[1, 0, 32, 32]) - 200) < 8  # red channel survives JPEG
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\n")
    with pytest.raises(DataError, match=r"val_annotations\.txt:1"):
        load_tiny_imagenet(tmp_path)
    (root / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\n")
    with pytest.raises(DataError, match="not a readable image"):
        load_tiny_imagenet(tmp_path)


def test_digits_split_is_fixed_and_normalised():
    data = load_digits()
    assert len(data.train) + len(data.test) == 1797 and len(data.test) == 359
    assert data.train.images.shape[1:] == (1, 8, 8) and int(data.train.images.max()) == 255
    again = load_digits()
    assert torch.equal(data.test.labels, again.test.labels)
    loader = BatchLoader(data, "train", 2000, train=False)
    x, _ = next(loader.epoch(0))
    assert x.mean().abs() < 1e-5 and (x.std() - 1).abs() < 1e-2


def test_unknown_dataset_and_missing_root():
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("mnist3d")
    with pytest.raises(ValueError, match="--data-root"):
        load_dataset("cifar10")


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[b], w) for w in windows)
    assert torch.equal(random_crop_flip(x, 2, torch.Generator().manual_seed(0)), out)


def test_cutout_zeroes_one_square():
    x = torch.ones(4, 3, 10, 10)
    out = cutout(x, 4, torch.Generator().manual_seed(1))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert ((zeros > 0) & (zeros <= 16)).all()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)


def test_batch_loader_is_deterministic_and_resumable(cifar10_root):
    data = load_cifar10(cifar10_root)
    loader = BatchLoader(data, "train", 6, train=True, seed=5)
    assert len(loader) == 4
    first = list(loader.epoch(3))
    assert [b[1].shape[0] for b in first] == [6, 6, 6, 2]
    again = list(loader.epoch(3, start=2))
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first[2:], again, strict=True)
    )
    other_epoch = list(loader.epoch(4))
    assert not torch.equal(first[0][1], other_epoch[0][1]) or not torch.equal(
        first[0][0], other_epoch[0][0]
    )
    labels = torch.cat([b[1] for b in first])
    assert sorted(labels.tolist()) == sorted(
        data.train.labels.tolist()
    )  # a permutation of the split
