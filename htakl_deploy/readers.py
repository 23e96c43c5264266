"""Reading files the user points at (or that came with a run directory or artefact) without
trusting them: one-line ``UserError`` naming the file for anything unexpected, and no way for
a file to make the tool run code or read other files.

- ``read_json_table``: UTF-8 JSON whose top level is an object.
- ``check_h5_self_contained``: an HDF5 file (spike recordings, NIR graphs) may not reach into
  other files — no external links, no external raw storage, no virtual datasets — because h5py
  follows them silently when a dataset is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from htakl_deploy.errors import UserError


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


def check_h5_self_contained(path: str | os.PathLike, label: str = "") -> None:
    """Refuse an HDF5 file holding external links, external storage or virtual datasets."""
    import h5py

    path = Path(path)
    where = f"{label}: " if label else ""
    problems: list[str] = []

    def visit(f: "h5py.Group", prefix: str) -> None:
        for name in f:
            link = f.get(name, getlink=True)
            full = f"{prefix}/{name}"
            if isinstance(link, h5py.ExternalLink):
                problems.append(f"{full!r} is an external link to {link.filename}")
                continue
            if isinstance(link, h5py.SoftLink):
                continue  # stays inside the file; reached (and checked) by its target's path
            obj = f[name]
            if isinstance(obj, h5py.Group):
                visit(obj, full)
            elif isinstance(obj, h5py.Dataset):
                if obj.external:
                    problems.append(f"dataset {full!r} keeps its data in external file(s)")
                elif obj.is_virtual:
                    problems.append(f"dataset {full!r} is a virtual dataset (data in other files)")
            if problems:
                return

    try:
        with h5py.File(path, "r") as f:
            visit(f, "")
    except OSError:
        return  # not readable HDF5: the format's own reader reports it
    if problems:
        raise UserError(f"{where}{path}: {problems[0]}; files that reach into other files are refused")

