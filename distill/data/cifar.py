"""CIFAR-10 / CIFAR-100 from the "python version" pickle batches the user downloaded.

Layouts read (the official archives, extracted):

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (each a
  dict with ``b'data'`` uint8 ``[N, 3072]`` and ``b'labels'`` list of N ints in 0..9);
  ``batches.meta`` (class names) is not needed.
- ``cifar-100-python/``: ``train``, ``test`` (``b'data'``, ``b'fine_labels'`` in 0..99);
  ``meta`` is not needed.

Each row of ``b'data'`` holds the red, green then blue 32x32 planes, row-major, so it
reshapes directly to ``[3, 32, 32]``.

Security: these files are Python pickles, and a plain ``pickle.load`` can run arbitrary code.
They are read with ``CifarUnpickler``, which admits only what the official batches hold — dicts,
lists, str/bytes/numbers and numpy arrays (``numpy`` ``_reconstruct``/``ndarray``/``dtype``, and
``_codecs.encode`` that protocol-2 pickles use for bytes) — and refuses any other global (a
function to call, a class to build) with one line naming the file: nothing in the file runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from htakl_deploy.errors import UserError

from .base import ArrayDataset, AugmentSpec

CIFAR_AUGMENT = AugmentSpec(crop_padding=4, hflip=True)
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_DIR = "cifar-100-python"
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)


def _resolve(name: str, root: str | None, folder: str, files: tuple[str, ...]) -> Path:
    """The folder holding ``files``: ``root`` itself or ``root/folder``."""
    expected = f"{', '.join(files)} (the extracted {folder}/ folder of the python version)"
    if root is None:
        raise UserError(f"{name} needs --data-root DIR pointing at {folder}/ or its parent; "
                        f"expected files: {expected}")
    base = Path(root)
    for cand in (base / folder, base):
        if all((cand / f).is_file() for f in files):
            return cand
    cand = base / folder if (base / folder).is_dir() else base
    missing = [f for f in files if not (cand / f).is_file()]
    raise UserError(f"{name}: missing {', '.join(missing)} in {cand}; expected files: {expected}")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a CIFAR batch never holds."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    import _codecs

    from numpy._core import multiarray, numeric

    reconstruct = multiarray._reconstruct
    return {
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,  # protocol-5 pickles of arrays
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,  # how numpy 1 (and the files) name it
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of ``_allowed_globals``."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch -> (uint8 ``[N, 3, 32, 32]``, int64 ``[N]``)."""
    try:
        with open(path, "rb") as f:
            # encoding='bytes' keeps the Python-2 era keys as bytes
            obj = CifarUnpickler(f, encoding="bytes").load()
    except RefusedGlobal as e:
        raise UserError(f"CIFAR batch {path} refers to {e}, which CIFAR batches never hold "
                        "(only dicts, lists, strings, numbers and numpy arrays are read); refused, nothing ran") from None
    except Exception as e:  # noqa: BLE001 - a damaged pickle can raise almost anything
        raise UserError(f"cannot read CIFAR batch {path}: not a CIFAR python-version batch "
                        f"(corrupt or truncated?): {type(e).__name__}") from None
    if not isinstance(obj, dict) or b"data" not in obj or label_key not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path}: expected a dict with b'data' and {label_key!r}, got {keys}")
    data, labels = obj[b"data"], obj[label_key]
    if not isinstance(data, np.ndarray) or not isinstance(labels, (list, np.ndarray)):
        raise UserError(f"{path}: b'data' must be a numpy array and {label_key!r} a list, got "
                        f"{type(data).__name__}, {type(labels).__name__}")
    if isinstance(labels, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise UserError(f"{path}: {label_key!r} must hold integers")
        labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise UserError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.size:
        raise UserError(f"{path}: labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _load(name: str, folder: Path, files: tuple[str, ...], label_key: bytes,
          num_classes: int) -> ArrayDataset:
    parts = [_read_batch(folder / f, label_key, num_classes) for f in files]
    return ArrayDataset(
        name=name,
        images=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        labels=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        num_classes=num_classes,
        augment=CIFAR_AUGMENT,
    )


def load_cifar10(root: str | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Load (train, test) CIFAR-10: uint8 ``[N, 3, 32, 32]``, 10 classes.

    ``root``: the ``cifar-10-batches-py`` folder or its parent. The pickles are read with
    ``CifarUnpickler`` (arrays and plain data only).
    """
    folder = _resolve("cifar10", root, CIFAR10_DIR, CIFAR10_TRAIN + CIFAR10_TEST)
    return (_load("cifar10", folder, CIFAR10_TRAIN, b"labels", 10),
            _load("cifar10", folder, CIFAR10_TEST, b"labels", 10))


def load_cifar100(root: str | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Load (train, test) CIFAR-100 with fine labels: uint8 ``[N, 3, 32, 32]``, 100 classes.

    ``root``: the ``cifar-100-python`` folder or its parent. The pickles are read with
    ``CifarUnpickler`` (arrays and plain data only).
    """
    folder = _resolve("cifar100", root, CIFAR100_DIR, CIFAR100_TRAIN + CIFAR100_TEST)
    return (_load("cifar100", folder, CIFAR100_TRAIN, b"fine_labels", 100),
            _load("cifar100", folder, CIFAR100_TEST, b"fine_labels", 100))
