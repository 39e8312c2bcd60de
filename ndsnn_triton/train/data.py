"""Image data sets from their standard on-disk formats, without torchvision.

* CIFAR-10 / CIFAR-100: the python-pickle folders ``cifar-10-batches-py/`` (``data_batch_1..5``,
  ``test_batch``) and ``cifar-100-python/`` (``train``, ``test``): dict ``data`` N×3072 uint8
  (R, G, B planes), ``labels`` / ``fine_labels``.
* TinyImageNet: ``tiny-imagenet-200/`` with ``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` and ``val/val_annotations.txt``.
* scikit-learn's ``load_digits`` (1,797 8×8 images, inside the wheel): a fixed 80/20 split.
* Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]`` ...), by default from Debian's
  ``dataset-fashion-mnist`` at ``/usr/share/datasets/fashion-mnist/``; optionally zero-padded to 32×32.

Everything is held in memory as uint8 ``[N, C, H, W]``; batches are cut, augmented (CIFAR:
random crop with 4-pixel padding, horizontal flip, optional Cutout) and normalised on the fly with
generators seeded from (seed, epoch, batch), so an interrupted run resumes with the same batches.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"

# Normalisation constants as used by LTH-SNN's CIFAR transforms and common TinyImageNet code.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
TINY_STATS = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))


class DataError(ValueError):
    """A data folder or file is missing pieces or is not in the expected format."""


@dataclass
class ImageSplit:
    """One split: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class DataSet:
    """A data set's two splits and how to feed them."""

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # "cifar": random crop 4 + flip; "none"

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[2]


# ----------------------------------------------------------------------------- readers


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as err:
        raise DataError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(data, dict) or b"data" not in data:
        raise DataError(f"{path}: CIFAR pickle without a 'data' entry")
    return data


def _cifar_split(files: list[Path], label_key: bytes) -> ImageSplit:
    images, labels = [], []
    for path in files:
        d = _unpickle(path)
        data = np.asarray(d[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' should be N×3072 uint8, got shape {data.shape}")
        if label_key not in d:
            raise DataError(f"{path}: missing {label_key.decode()!r}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.tensor(list(d[label_key]), dtype=torch.int64))
    return ImageSplit(torch.cat(images), torch.cat(labels))


def _find_folder(root: str | os.PathLike, folder: str, required: list[str], what: str) -> Path:
    root = Path(root)
    candidates = [root, root / folder]
    for c in candidates:
        if all((c / r).exists() for r in required):
            return c
    raise FileNotFoundError(
        f"{what}: expected the folder {folder}/ with {', '.join(required)} at {root} or {root / folder}; "
        f"missing {[r for r in required if not (candidates[-1] / r).exists()]}"
    )


def load_cifar10(root: str | os.PathLike) -> DataSet:
    """CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder or its parent)."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    folder = _find_folder(root, "cifar-10-batches-py", [*files, "test_batch"], "CIFAR-10")
    train = _cifar_split([folder / f for f in files], b"labels")
    test = _cifar_split([folder / "test_batch"], b"labels")
    return DataSet("cifar10", train, test, 10, *CIFAR10_STATS, augment="cifar")


def load_cifar100(root: str | os.PathLike) -> DataSet:
    """CIFAR-100 (fine labels) from ``root`` (the ``cifar-100-python`` folder or its parent)."""
    folder = _find_folder(root, "cifar-100-python", ["train", "test"], "CIFAR-100")
    train = _cifar_split([folder / "train"], b"fine_labels")
    test = _cifar_split([folder / "test"], b"fine_labels")
    return DataSet("cifar100", train, test, 100, *CIFAR100_STATS, augment="cifar")


def _read_image(path: Path, size: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from err
    if arr.shape != (size, size, 3):
        raise DataError(f"{path}: expected a {size}×{size} RGB image, got shape {arr.shape}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def load_tiny_imagenet(root: str | os.PathLike) -> DataSet:
    """TinyImageNet (200 classes, 64×64) from ``root`` (``tiny-imagenet-200`` or its parent).

    The labelled ``val`` split serves as the test split (the official test split has no labels).
    """
    folder = _find_folder(
        root,
        "tiny-imagenet-200",
        ["wnids.txt", "train", "val/images", "val/val_annotations.txt"],
        "TinyImageNet",
    )
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()]
    if not wnids:
        raise DataError(f"{folder / 'wnids.txt'} lists no class ids")
    index = {w: i for i, w in enumerate(wnids)}
    train_imgs, train_labels = [], []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"TinyImageNet: no images in {folder / 'train' / wnid / 'images'}")
        train_imgs += [_read_image(f, 64) for f in files]
        train_labels += [index[wnid]] * len(files)
    test_imgs, test_labels = [], []
    for line_no, line in enumerate(
        (folder / "val" / "val_annotations.txt").read_text().splitlines(), 1
    ):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(
                f"{folder / 'val' / 'val_annotations.txt'}:{line_no}: expected 'file<TAB>wnid...', got {line!r}"
            )
        test_imgs.append(_read_image(folder / "val" / "images" / parts[0], 64))
        test_labels.append(index[parts[1]])
    train = ImageSplit(torch.stack(train_imgs), torch.tensor(train_labels))
    test = ImageSplit(torch.stack(test_imgs), torch.tensor(test_labels))
    return DataSet("tiny-imagenet", train, test, len(wnids), *TINY_STATS, augment="cifar")


def _stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.float() / 255.0
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> DataSet:
    """scikit-learn's 8×8 digits (values 0..16 scaled to 0..255), a fixed shuffled split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(labels))
    test_idx, train_idx = order[:n_test], order[n_test:]
    train = ImageSplit(images[train_idx], labels[train_idx])
    mean, std = _stats(train.images)
    return DataSet("digits", train, ImageSplit(images[test_idx], labels[test_idx]), 10, mean, std)


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    if len(raw) < 8:
        raise DataError(f"{path}: too short for an IDX file")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        raise DataError(f"{path}: IDX magic {magic:#x}, expected {expected_magic:#x}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(
            f"{path}: IDX header says {dims} ({expected} bytes) but the file holds {len(raw) - offset}"
        )
    del count
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"Fashion-MNIST: expected {stem} or {stem}.gz in {folder}")


def load_fashion_mnist(
    root: str | os.PathLike = FASHION_MNIST_DEFAULT, pad_to: int | None = 32
) -> DataSet:
    """Fashion-MNIST from its IDX files (gzipped or not), zero-padded to ``pad_to`` pixels if given."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST: folder {folder} not found (Debian: apt-get install dataset-fashion-mnist, "
            "or pass the folder holding train-images-idx3-ubyte[.gz] ...)"
        )
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"), 0x803)
        labels = _read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"), 0x801)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"Fashion-MNIST {prefix}: {images.shape[0]} images but {labels.shape[0]} labels"
            )
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        if pad_to is not None and pad_to > x.shape[-1]:
            p = pad_to - x.shape[-1]
            x = F.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
        splits.append(ImageSplit(x, torch.from_numpy(labels.astype(np.int64))))
    mean, std = _stats(splits[0].images)
    return DataSet("fashion-mnist", splits[0], splits[1], 10, mean, std)


DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet")


def load_dataset(name: str, root: str | os.PathLike | None = None) -> DataSet:
    """Load a data set by name; ``root`` is its folder (not needed for digits)."""
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_fashion_mnist(root or FASHION_MNIST_DEFAULT)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
    if root is None:
        raise ValueError(f"data set {name!r} needs --data-root: the folder holding its files")
    return {
        "cifar10": load_cifar10,
        "cifar100": load_cifar100,
        "tiny-imagenet": load_tiny_imagenet,
    }[name](root)


# ----------------------------------------------------------------------------- batches


def _generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 100_003 + batch) % 2**63)


def random_crop_flip(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by ``padding``, crop back at random offsets, flip half horizontally. ``[B, C, H, W]``."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[
        torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def cutout(images: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """Zero one ``length``×``length`` square per image at a random centre (clipped at the border)."""
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b,), generator=generator)
    cx = torch.randint(0, w, (b,), generator=generator)
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() * 2 < length) & (
        (xs - cx[:, None, None]).abs() * 2 < length
    )
    return images.masked_fill(inside[:, None], 0.0)


@dataclass
class BatchLoader:
    """Deterministic mini-batches of a split: ``(images float [B, C, H, W], labels [B])``.

    The order of epoch e comes from a generator seeded with (seed, e); augmentation of batch i
    from (seed, e, i). ``start`` skips the first batches (resume). With ``world > 1`` each global
    batch of ``batch_size`` is split across ranks (a DistributedSampler over batches), so the
    global batch and the data order do not depend on the number of processes.
    """

    data: DataSet
    split: str
    batch_size: int
    train: bool
    seed: int = 0
    cutout: int = 0  # Cutout square side (0 = off)
    drop_last: bool = False
    rank: int = 0  # data parallel: this process takes samples rank, rank + world, ... of each batch
    world: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        self._split: ImageSplit = getattr(self.data, self.split)
        if len(self._split) == 0:
            raise DataError(f"{self.data.name} {self.split} split is empty")
        self._mean = torch.tensor(self.data.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(self.data.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self._split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self._split)
        order = (
            torch.randperm(n, generator=_generator(self.seed, epoch, -1))
            if self.train
            else torch.arange(n)
        )
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self._split.images[idx].float() / 255.0
            g = _generator(self.seed, epoch, i)
            # Augment the whole global batch, then take this rank's share: the same samples get
            # the same crops whatever the number of processes.
            if self.train and self.data.augment == "cifar":
                x = random_crop_flip(x, 4, g)
            x = (x - self._mean) / self._std
            if self.train and self.cutout:
                x = cutout(x, self.cutout, g)
            share = slice(self.rank, None, self.world)
            yield x[share], self._split.labels[idx][share]
