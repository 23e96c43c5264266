"""scikit-learn's embedded 8x8 digits: the data set that is always there."""

from __future__ import annotations

import numpy as np
import torch

from htakl_deploy.errors import UserError

from .base import ArrayDataset, AugmentSpec

#: The split is fixed so every run, checkpoint and report refers to the same test images:
#: ``train_test_split(test_size=0.2, random_state=0, stratify=labels)`` -> 1437 / 360.
DIGITS_TEST_SIZE = 0.2
DIGITS_SPLIT_SEED = 0

# A flipped digit is another symbol (or none), so no flip; 1 px shift on 8 px images.
DIGITS_AUGMENT = AugmentSpec(crop_padding=1, hflip=False)


def load_digits_split(root: str | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Load (train, test) digits: float32 ``[N, 1, 8, 8]`` in [0, 1] (pixel / 16), 10 classes.

    ``root`` must be None: the data are embedded in scikit-learn.
    """
    if root is not None:
        raise UserError(
            f"digits is embedded in scikit-learn and reads no files; drop --data-root ({root})"
        )
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )

    def part(idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            name="digits",
            images=torch.from_numpy(np.ascontiguousarray(images[idx])),
            labels=torch.from_numpy(labels[idx].copy()),
            num_classes=10,
            augment=DIGITS_AUGMENT,
        )

    return part(idx_train), part(idx_test)
