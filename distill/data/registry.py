"""Data set names -> loaders, and the one entry point that looks them up."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from htakl_deploy.errors import UserError

from .base import ArrayDataset
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits_split
from .idx import load_fashion_mnist
from .imagefolder import load_image_folder

#: Each loader takes ``root`` (plus its own keyword options) and returns ``(train, test)``.
DATASETS: dict[str, Callable[..., tuple[ArrayDataset, ArrayDataset]]] = {
    "digits": load_digits_split,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image-folder": load_image_folder,
}


def load_dataset(name: str, root: str | None = None, **kw) -> tuple[ArrayDataset, ArrayDataset]:
    """Load data set ``name`` from ``root`` (None = its default location, if it has one).

    Raises:
        UserError: unknown name, options the loader does not take, or missing/bad files.
    """
    loader = DATASETS.get(name)
    if loader is None:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    try:
        inspect.signature(loader).bind(root, **kw)
    except TypeError as e:
        accepted = [p for p in inspect.signature(loader).parameters if p != "root"]
        raise UserError(
            f"data set {name!r} does not take options {sorted(kw)}; it accepts {accepted or 'none'}"
        ) from e
    return loader(root, **kw)
