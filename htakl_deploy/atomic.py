"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written checkpoint, config or report, even if the writer is killed.
The file gets the permissions any new file would get (``0666`` less the user's umask), not the
``0600`` of ``tempfile.mkstemp``: run directories are shared. A folder or file that cannot be
created or written (read-only, a file where a folder is expected, disk full) is a ``UserError``
naming the path, and the temporary file is removed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from htakl_deploy.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dir(path: str | os.PathLike, label: str | None = None) -> Path:
    """``mkdir -p path``; a path that is (or passes through) a file, or a folder that cannot be
    created, is a ``UserError`` (``label``: the flag or argument that named it)."""
    path = Path(path)
    where = f"{label}: " if label else ""
    if path.exists() and not path.is_dir():
        raise UserError(f"{where}{path} is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{where}cannot create folder {path}: {e.strerror or e}") from None
    return path


def check_writable_dir(path: str | os.PathLike, label: str) -> None:
    """Fail early (before any work) if ``path`` is a file, lies under a file, or sits in a
    folder this process cannot write to. Creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{label}: {path} is a file, expected a folder")
        probe = path
    else:
        probe = path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"{label}: {path} lies under {probe}, which is a file")
    if not os.access(probe, os.W_OK | os.X_OK):  # mode bits, ACLs and read-only mounts (also for root)
        raise UserError(f"{label}: cannot write in {probe}: permission denied or read-only")


def check_file_target(path: str | os.PathLike, label: str) -> None:
    """Fail early if the output file ``path`` is an existing folder or its folder is unusable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{label}: {path} is a directory, expected a file name")
    check_writable_dir(path.parent, label)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _strict(obj: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats are written as null (valid JSON everywhere)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False, default=_default) + "\n")


def _default(obj: Any) -> Any:
    """numpy scalars and arrays (reports hold a few) as plain JSON values."""
    import numpy as np

    if isinstance(obj, np.generic):
        return _strict(obj.item())
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
