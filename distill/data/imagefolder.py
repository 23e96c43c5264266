"""A folder of images, one sub-folder per class: ``root/<class>/*.{png,jpg,jpeg,bmp}``.

Split: if ``root`` holds both ``train/`` and ``test/``, each is such a folder (their class
lists must be equal). Otherwise the split is made here, deterministically: within each class
the files are sorted by name, shuffled with ``numpy.random.default_rng(0)`` and the first
``max(1, round(n / 10))`` go to test (none for a class with a single image), so about 90/10
per class and the same split on every run and machine.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from htakl_deploy.errors import UserError

from .base import ArrayDataset, AugmentSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLIT_SEED = 0
TEST_FRACTION = 0.1


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names) and ``(file, class index)`` pairs in sorted order."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"image folder {root} has no class sub-folders (expected {root}/<class>/*.png)"
        )
    samples: list[tuple[Path, int]] = []
    for k, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise UserError(
                f"class folder {root / cls} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        samples.extend((p, k) for p in files)
    return classes, samples


def _read(path: Path, mode: str, size_hw: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 ``[H, W]`` (mode L) or ``[H, W, 3]`` (RGB), resized to ``size_hw``."""
    try:
        with warnings.catch_warnings():  # PIL's decompression-bomb warning: refused like the error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert(mode)
                if size_hw is not None and (im.height, im.width) != size_hw:
                    im = im.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def _size_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in image_size)):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise UserError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise UserError(f"image_size must be positive, got {image_size!r}")
    return size


def _to_dataset(files: list[tuple[Path, int]], mode: str, size_hw: tuple[int, int],
                num_classes: int) -> ArrayDataset:
    arrays = [_read(p, mode, size_hw) for p, _ in files]
    images = np.stack(arrays)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return ArrayDataset(
        name="image-folder",
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.tensor([k for _, k in files], dtype=torch.int64),
        num_classes=num_classes,
        augment=AugmentSpec(crop_padding=min(size_hw) // 8, hflip=True),
    )


def split_per_class(samples: list[tuple[Path, int]], seed: int = SPLIT_SEED,
                    test_fraction: float = TEST_FRACTION
                    ) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Deterministic stratified split (see module docstring); both lists keep sorted order."""
    rng = np.random.default_rng(seed)
    labels = np.array([k for _, k in samples])
    test_idx: set[int] = set()
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)  # already sorted by file name
        n_test = 0 if len(idx) < 2 else max(1, round(len(idx) * test_fraction))
        test_idx.update(int(i) for i in rng.permutation(idx)[:n_test])
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    test = [s for i, s in enumerate(samples) if i in test_idx]
    return train, test


def load_image_folder(
    root: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Load (train, test) from an image folder: uint8 ``[N, C, H, W]``, C = 1 or 3.

    Args:
        root: the folder (required).
        image_size: side or ``(H, W)`` every image is resized to (PIL bilinear); default the
            size of the first training image in sorted order.
        grayscale: convert to L (one channel) instead of RGB.
    """
    if root is None:
        raise UserError("image-folder needs --data-root DIR (DIR/<class>/*.png, or DIR/train "
                        "and DIR/test laid out that way)")
    base = Path(root)
    mode = "L" if grayscale else "RGB"
    has_train, has_test = (base / "train").is_dir(), (base / "test").is_dir()
    if has_train and has_test:
        classes, train = _scan(base / "train")
        test_classes, test = _scan(base / "test")
        if test_classes != classes:
            raise UserError(
                f"{base / 'train'} and {base / 'test'} have different class folders: "
                f"{classes} vs {test_classes}"
            )
    else:
        if has_train or has_test:
            one = "train" if has_train else "test"
            other = "test" if has_train else "train"
            raise UserError(f"{base} has {one}/ but no {other}/: give both, or neither "
                            "(then a 90/10 split is made)")
        classes, samples = _scan(base)
        train, test = split_per_class(samples)
    size_hw = _size_hw(image_size)
    if size_hw is None:
        first = _read(train[0][0], mode, None)
        size_hw = (int(first.shape[0]), int(first.shape[1]))
    if not test:
        raise UserError(f"{base}: no test images (each class needs at least 2 images for the "
                        "automatic split)")
    return (_to_dataset(train, mode, size_hw, len(classes)),
            _to_dataset(test, mode, size_hw, len(classes)))
