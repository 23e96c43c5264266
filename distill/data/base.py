"""The in-memory data set every loader returns, and the augmentation it carries.

Images are kept as one tensor ``[N, C, H, W]`` (uint8 0..255, or float32 in [0, 1]) so a
batch is one index operation; conversion to float happens per batch, which keeps
Fashion-MNIST/CIFAR in memory at a quarter of the float size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation of one data set.

    Attributes:
        crop_padding: random crop of the original size taken from the image zero-padded by
            this many pixels on every side (0 = no crop).
        hflip: random horizontal flip with probability 0.5.
    """

    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int):
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not isinstance(self.hflip, bool):
            raise ValueError(f"hflip must be a bool, got {self.hflip!r}")

    @property
    def is_identity(self) -> bool:
        """True when this spec leaves every image unchanged."""
        return self.crop_padding == 0 and not self.hflip


# eq=False: the generated __eq__ would compare tensors with ``==``, which raises for
# tensors of more than one element; identity comparison is the meaningful one here.
@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled image data set held in memory.

    Attributes:
        name: data set name as in ``DATASETS`` (e.g. ``"digits"``).
        images: ``[N, C, H, W]``, uint8 (0..255) or float32 in [0, 1].
        labels: ``[N]`` int64 in ``[0, num_classes)``.
        num_classes: number of classes.
        augment: augmentation meant for this data set's *training* split.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    augment: AugmentSpec

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: images must be a tensor [N, C, H, W], got "
                f"{getattr(self.images, 'shape', type(self.images))}"
            )
        if self.images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(
                f"{self.name}: images dtype must be uint8 or float32, got {self.images.dtype}"
            )
        if self.images.dtype == torch.float32 and self.images.numel() > 0:
            lo, hi = self.images.min().item(), self.images.max().item()
            if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
                raise ValueError(
                    f"{self.name}: float32 images must lie in [0, 1], got [{lo}, {hi}]"
                )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dim() != 1:
            raise ValueError(f"{self.name}: labels must be a 1-D tensor [N]")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"{self.name}: labels dtype must be int64, got {self.labels.dtype}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels"
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise ValueError(f"{self.name}: num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.labels.numel() > 0:
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"{self.name}: labels must lie in [0, {self.num_classes}), got [{lo}, {hi}]"
                )
        if not isinstance(self.augment, AugmentSpec):
            raise ValueError(f"{self.name}: augment must be an AugmentSpec, got {self.augment!r}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather samples ``idx`` (``[B]`` integer tensor).

        Returns:
            ``(x, y)``: x float32 ``[B, C, H, W]`` in [0, 1], y int64 ``[B]``.
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 1:
            raise ValueError("idx must be a 1-D integer tensor [B]")
        if idx.dtype.is_floating_point or idx.dtype in (torch.bool, torch.complex64):
            raise ValueError(f"idx must be an integer tensor, got dtype {idx.dtype}")
        idx = idx.to(device=self.images.device, dtype=torch.int64)
        x = self.images[idx]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        else:
            x = x.contiguous()
        return x, self.labels[idx]

    def subset(self, n: int) -> ArrayDataset:
        """The first ``n`` samples (all, if ``n >= len(self)``) in the split's *evaluation order*
        (``stratified_order``): every class in proportion to its share of the split, whatever
        order the split is stored in — never a class-sorted folder's first ``n``. A smaller
        subset is the beginning of a larger one, in the same order (``simulate --samples 50``
        runs the first 50 images a ``--limit-test 360`` run was evaluated on)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"subset size n must be an int >= 1, got {n!r}")
        idx = stratified_order(self.labels)[:n]
        return ArrayDataset(
            name=self.name,
            images=self.images[idx],
            labels=self.labels[idx],
            num_classes=self.num_classes,
            augment=self.augment,
        )


def stratified_order(labels: torch.Tensor) -> torch.Tensor:
    """Every index of ``labels`` once, ordered so that each prefix holds every class in
    proportion to its count, within one sample: the ``r``-th sample of a class of ``c`` (in
    stored order) gets the key ``(r + 1/2) / c``, and the samples are sorted by key (ties: the
    earlier sample first). Deterministic, and the same images of each class whatever order the
    classes are stored in."""
    y = labels.cpu().numpy().astype(np.int64)
    counts = np.bincount(y)
    by_class = np.argsort(y, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(y), dtype=np.int64)
    rank[by_class] = np.arange(len(y)) - np.repeat(starts, counts)
    key = (rank + 0.5) / counts[y]
    return torch.from_numpy(np.lexsort((np.arange(len(y)), key)))
