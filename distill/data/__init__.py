"""Image data sets held in memory, their augmentation, and spike encodings.

Every loader returns ``(train, test)`` :class:`ArrayDataset` s with images ``[N, C, H, W]``
(uint8 or float32 in [0, 1]); :meth:`ArrayDataset.batch` gives float32 in [0, 1],
:func:`augment_batch` augments a training batch and :func:`encode` turns it into
``[T, B, C, H, W]``.
"""

from .augment import augment_batch
from .base import ArrayDataset, AugmentSpec
from .encoding import ENCODINGS, encode
from .registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "ENCODINGS",
    "ArrayDataset",
    "AugmentSpec",
    "augment_batch",
    "encode",
    "load_dataset",
]
