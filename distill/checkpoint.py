"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

Format (a plain dict of tensors and primitives, version 1)::

    {"format": "htakl-deploy/checkpoint", "version": 1, "role": "teacher" | "student",
     "model_spec": {...build_model kwargs...}, "model": state_dict,
     "optimizer": state_dict, "scheduler": state_dict,
     "epoch": completed epochs (int), "step_in_epoch": int, "global_step": int,
     "best_acc": float, "config": {...}}

``epoch``/``step_in_epoch`` say where training resumes: epoch ``epoch``, batch ``step_in_epoch``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from htakl_deploy.atomic import atomic_path
from htakl_deploy.errors import UserError

FORMAT = "htakl-deploy/checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "role", "model_spec", "model")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)  # through a Python file: a full disk is an OSError (atomic_path's one line)


def resolve_checkpoint(path: str | Path, role: str, flag: str | None = None) -> Path:
    """A checkpoint file as given, or ``RUN_DIR/<role>/last.pt`` for a run directory. With
    ``flag``, a folder without that file is a ``UserError`` saying so."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = path / role / "last.pt"
    if flag is not None and not found.is_file():
        raise UserError(f"{_label(flag)}: {path} is a folder without {role}/last.pt "
                        f"(expected a run directory or a {role} checkpoint file)")
    return found


def _label(flag: str) -> str:
    """How an error names where the file came from: a positional (``CHECKPOINT``) as is, a flag
    name (``teacher``) as ``--teacher``."""
    return flag if flag.isupper() or flag.startswith("-") else f"--{flag}"


def _torch_load(path: Path, label: str) -> Any:
    """``torch.load(weights_only=True)``; failures become one line of ours (torch's own text
    suggests loading with ``weights_only=False``, which would run code from the file)."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{label}: {path} is not a readable checkpoint (not a PyTorch checkpoint file: "
                        "another kind of file, or truncated)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise UserError(f"{label}: {path} is not a readable checkpoint: it holds objects other than "
                            "tensors and plain data, and such files are never loaded (they could run code)") from None
        raise UserError(f"{label}: {path} is not a readable checkpoint (corrupt or truncated)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        raise UserError(f"{label}: {path} is not a readable checkpoint (corrupt or truncated)") from None


def check_finite(state: dict[str, Any], label: str, path: Path) -> None:
    """Every tensor of a state dict finite; NaN/inf weights are refused naming the tensor."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise UserError(f"{label}: {path}: tensor {name!r} holds {kind} values (a diverged or damaged model)")


def load_checkpoint(path: str | Path, *, flag: str = "checkpoint", role: str | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a ``UserError`` naming ``flag`` and file.

    ``flag``: how the file was given — a flag name (``"teacher"`` → ``--teacher``) or a
    positional argument in capitals (``"CHECKPOINT"``)."""
    path, label = Path(path), _label(flag)
    if path.is_dir():
        raise UserError(f"{label}: {path} is a directory, expected a checkpoint file")
    if not path.is_file():
        raise UserError(f"{label}: file not found: {path}")
    ckpt = _torch_load(path, label)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{label}: {path} is not an htakl-deploy checkpoint (no '{FORMAT}' header)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{label}: {path} lacks keys {missing}")
    if ckpt["version"] != VERSION or isinstance(ckpt["version"], bool):
        raise UserError(f"{label}: {path} has checkpoint version {ckpt['version']!r}, this tool reads {VERSION}")
    if role is not None and ckpt["role"] != role:
        raise UserError(f"{label}: {path} holds a {ckpt['role']} model, expected a {role}")
    if not isinstance(ckpt["model_spec"], dict) or not isinstance(ckpt["model"], dict):
        raise UserError(f"{label}: {path}: 'model_spec' and 'model' must be tables")
    if "config" in ckpt and not isinstance(ckpt["config"], dict):
        raise UserError(f"{label}: {path}: 'config' must be a table")
    check_finite(ckpt["model"], label, path)
    return ckpt
