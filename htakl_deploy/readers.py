"""Reading files the user points at (or that came with a run directory or artefact) without
trusting them: one-line ``UserError`` naming the file for anything unexpected, and no way for
a file to make the tool run code or read other files.

- ``read_json_table``: UTF-8 JSON whose top level is an object.
- ``check_text_size``: a config, target, energy model or run file is a regular file of at most
  ``TEXT_MAX_BYTES`` (a 10 GB "config" or ``/dev/zero`` is refused before it is read).
- ``check_h5`` (every HDF5 reader: NIR graphs, spike recordings, netx, calibration inputs): the
  file may not reach into other files — no external links, no external raw storage, no virtual
  datasets (h5py follows them silently) — and no dataset may declare more data than the file
  holds: an unfiltered dataset stores every byte it declares, a compressed one at most
  ``MAX_RATIO`` : 1 (deflate, HDF5's gzip, cannot do better than ~1032 : 1), so a 55 KB file that
  declares 10⁹ floats is refused — naming the dataset — before anything is allocated. What a
  reader loads whole must also fit ``memory_budget()``.
- ``check_npz`` / ``check_npy``: the same for numpy files: every array's header shape against the
  bytes the file (or zip member, and its compressed size) really holds, and the budget.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from htakl_deploy.errors import UserError

TEXT_MAX_BYTES = 16 << 20  # a config / target / energy model / run JSON file: far above any real one
MAX_RATIO = 1100  # more than deflate's ~1032:1 (HDF5 gzip, zip deflate): a dataset claiming more lies
SLACK_BYTES = 64 << 10  # small datasets: headers and rounding
BUDGET_ENV = "HTAKL_DEPLOY_READ_BUDGET_MB"


def _size(n: float) -> str:
    from htakl_deploy.atomic import _size as fmt

    return fmt(n)


def memory_budget() -> int:
    """Bytes a reader may load at once: ``$HTAKL_DEPLOY_READ_BUDGET_MB`` MiB, else half the
    machine's memory (``MemTotal``; 8 GiB where that cannot be read)."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return int(float(env) * (1 << 20))
        except ValueError:
            raise UserError(f"${BUDGET_ENV}: got {env!r}, expected a number of MiB") from None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 8 << 30


def _over_budget(path: Path, where: str, total: int, what: str) -> UserError:
    return UserError(f"{where}{path}: {what} {_size(total)} to load, more than the memory budget "
                     f"{_size(memory_budget())} (half this machine's memory; set ${BUDGET_ENV} to change it)")


def check_text_size(path: str | os.PathLike, label: str = "", what: str = "text file",
                    max_bytes: int = TEXT_MAX_BYTES) -> None:
    """Refuse a text input that is not a regular file or is larger than ``max_bytes``."""
    path = Path(path)
    where = f"{label}: " if label else ""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise UserError(f"{where}{path} is not a regular file (a device or pipe), expected a {what}")
    try:
        size = path.stat().st_size
    except OSError:
        return  # missing: the caller's own message
    if size > max_bytes:
        raise UserError(f"{where}{path} is {_size(size)}, over the {_size(max_bytes)} limit for {what}s")


def describe_missing(path: Path, label: str, noun: str, expected: str | None = None) -> UserError:
    """The error for a path that is not the file expected: a folder says so, not 'not found'."""
    where = f"{label}: " if label else ""
    if path.is_dir():
        return UserError(f"{where}{path} is a directory, expected {expected or 'a ' + noun}")
    return UserError(f"{where}{path}: no such {noun}" + (f" (expected {expected})" if expected else ""))


def read_json_table(path: str | os.PathLike, label: str = "") -> dict[str, Any]:
    path = Path(path)
    where = f"{label}: " if label else ""
    if not path.is_file():
        raise describe_missing(path, label, "JSON file")
    check_text_size(path, label, "JSON file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where}{path} is not UTF-8 text (expected JSON)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"{where}cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}{path}: expected a JSON object (a table of keys), got {type(value).__name__}")
    return value


def check_h5(path: str | os.PathLike, label: str = "", *, streamed: Iterable[str] = ()) -> None:
    """Refuse an HDF5 file that reaches into other files or whose datasets declare more data than
    it holds (see the module docstring); ``streamed``: top-level groups/datasets the reader reads
    block by block (their chunks, not their whole size, must fit the budget)."""
    import h5py

    path = Path(path)
    where = f"{label}: " if label else ""
    problems: list[str] = []
    budget, whole = memory_budget(), [0]
    streamed = tuple(f"/{s.strip('/')}" for s in streamed)

    def check_dataset(obj: "h5py.Dataset", full: str) -> None:
        if obj.external:
            problems.append(f"dataset {full!r} keeps its data in external file(s); files that reach into "
                            "other files are refused")
            return
        if obj.is_virtual:
            problems.append(f"dataset {full!r} is a virtual dataset (data in other files); files that reach "
                            "into other files are refused")
            return
        if obj.dtype.kind == "O" or h5py.check_vlen_dtype(obj.dtype) is not None:
            return  # variable-length strings: small, and h5py reads them element by element
        declared = int(obj.size) * obj.dtype.itemsize
        if declared == 0:
            return
        stored = int(obj.id.get_storage_size())
        filtered = bool(obj.compression or obj.shuffle or obj.fletcher32 or obj.scaleoffset
                        or (obj.chunks and obj.id.get_create_plist().get_nfilters()))
        possible = stored * MAX_RATIO + SLACK_BYTES if filtered else stored + SLACK_BYTES
        if declared > possible:
            problems.append(f"dataset {full!r} declares {tuple(obj.shape)} {obj.dtype} ({_size(declared)}) but "
                            f"the file holds {_size(stored)} of it" + (" (compressed)" if filtered else "")
                            + ": the file lies about its size (or is truncated)")
            return
        if full.startswith(streamed):
            chunk = int(np_prod(obj.chunks or obj.shape)) * obj.dtype.itemsize
            if chunk > budget:
                problems.append(f"dataset {full!r} has chunks of {_size(chunk)}, more than the memory budget")
        else:
            whole[0] += declared

    def visit(f: "h5py.Group", prefix: str) -> None:
        for name in f:
            link = f.get(name, getlink=True)
            full = f"{prefix}/{name}"
            if isinstance(link, h5py.ExternalLink):
                problems.append(f"{full!r} is an external link to {link.filename}; files that reach into other "
                                "files are refused")
            elif isinstance(link, h5py.SoftLink):
                continue  # stays inside the file; reached (and checked) by its target's path
            else:
                obj = f[name]
                if isinstance(obj, h5py.Group):
                    visit(obj, full)
                elif isinstance(obj, h5py.Dataset):
                    check_dataset(obj, full)
            if problems:
                return

    try:
        with h5py.File(path, "r") as f:
            visit(f, "")
    except (OSError, KeyError, ValueError, RuntimeError):
        if not problems:
            return  # not readable HDF5: the format's own reader reports it
    if problems:
        raise UserError(f"{where}{path}: {problems[0]}")
    if whole[0] > budget:
        raise _over_budget(path, where, whole[0], "its datasets hold")


def np_prod(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def npy_header(fh) -> tuple[tuple[int, ...], bool, Any, int]:
    """(shape, fortran order, dtype, header bytes) of the ``.npy`` stream ``fh``, nothing else read
    (ValueError if it is not a version 1 or 2 ``.npy`` header)."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(fh)
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f".npy format version {version}")
    shape, fortran, dtype = read(fh, max_header_size=10000)
    return tuple(int(v) for v in shape), bool(fortran), dtype, fh.tell()


def check_npy(path: str | os.PathLike, label: str = "") -> None:
    """Refuse a ``.npy`` file whose header declares more data than the file holds or than the budget."""
    path = Path(path)
    where = f"{label}: " if label else ""
    try:
        with open(path, "rb") as fh:
            shape, _, dtype, offset = npy_header(fh)
    except (OSError, ValueError, SyntaxError, TypeError, EOFError):
        return  # not a readable .npy: numpy's own reader reports it
    declared = np_prod(shape) * dtype.itemsize
    held = path.stat().st_size - offset
    if dtype.hasobject:
        return  # refused by allow_pickle=False
    if declared > held:
        raise UserError(f"{where}{path}: its header declares {shape} {dtype} ({_size(declared)}) but the file holds "
                        f"{_size(held)}: the file lies about its size (or is truncated)")
    if declared > memory_budget():
        raise _over_budget(path, where, declared, "its array holds")


def check_npz(path: str | os.PathLike, label: str = "") -> None:
    """Refuse an ``.npz`` whose arrays declare more data than their zip members hold, whose members
    claim more than ``MAX_RATIO`` : 1 compression, or that holds more than the budget."""
    import zipfile

    path = Path(path)
    where = f"{label}: " if label else ""
    total = 0
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # not a zip: numpy's own reader reports it
    with zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > info.compress_size * MAX_RATIO + SLACK_BYTES:
                raise UserError(f"{where}{path}: member {info.filename!r} claims {_size(info.file_size)} from "
                                f"{_size(info.compress_size)} compressed: the file lies about its size")
            if not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as fh:
                    shape, _, dtype, offset = npy_header(fh)
            except (OSError, ValueError, SyntaxError, TypeError, zipfile.BadZipFile, EOFError):
                continue  # numpy's own reader reports it
            declared = np_prod(shape) * dtype.itemsize
            if not dtype.hasobject and declared > info.file_size - offset:
                raise UserError(f"{where}{path}: array {info.filename[:-4]!r} declares {shape} {dtype} "
                                f"({_size(declared)}) but the file holds {_size(info.file_size - offset)} of it: the "
                                "file lies about its size (or is truncated)")
            total += declared
    if total > memory_budget():
        raise _over_budget(path, where, total, "its arrays hold")
