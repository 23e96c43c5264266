"""Fashion-MNIST from its idx files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``).

idx format (big-endian): int32 magic (2051 for 3-D uint8 images, 2049 for 1-D uint8
labels), one uint32 per dimension, then the uint8 values in C order, nothing after.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from htakl_deploy.errors import UserError

from .base import ArrayDataset, AugmentSpec

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_AUGMENT = AugmentSpec(crop_padding=2, hflip=True)
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _find(root: Path, stem: str) -> Path | None:
    """The ``.gz`` file if present, else the uncompressed one, else None."""
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one idx file of uint8 values; the number of dims is ``magic & 0xFF``.

    Raises:
        UserError: naming ``path`` if it is unreadable, truncated or not this idx type.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read {path}: {e} (truncated or corrupt?)") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: {len(raw)} bytes, too short for an idx header (truncated?)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise UserError(f"{path}: idx magic number {found}, expected {magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise UserError(
            f"{path}: {len(raw)} bytes but the header {dims} implies {expected} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _split(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if images.shape[1:] != (28, 28):
        raise UserError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if labels.size and labels.max() > 9:
        raise UserError(f"{labels_path}: label {labels.max()} outside 0..9")
    return ArrayDataset(
        name="fashion-mnist",
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=10,
        augment=FASHION_MNIST_AUGMENT,
    )


def load_fashion_mnist(root: str | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Load (train, test) Fashion-MNIST: uint8 ``[N, 1, 28, 28]``, 10 classes.

    ``root`` defaults to ``/usr/share/datasets/fashion-mnist``; each file may be gzipped.
    """
    root_path = Path(root if root is not None else FASHION_MNIST_ROOT)
    found = {s: _find(root_path, s) for s in FASHION_MNIST_FILES}
    missing = [s + ".gz" for s, path in found.items() if path is None]
    if missing:
        raise UserError(
            f"Fashion-MNIST file(s) missing in {root_path}: {', '.join(missing)}. Install them "
            "with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass "
            "--data-root DIR with the four files "
            + ", ".join(s + ".gz" for s in FASHION_MNIST_FILES)
            + " (gzipped or not)"
        )
    paths = {s: path for s, path in found.items() if path is not None}
    train = _split(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test = _split(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return train, test
