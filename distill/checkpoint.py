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
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resolve_checkpoint(path: str | Path, role: str) -> Path:
    """A checkpoint file as given, or ``RUN_DIR/<role>/last.pt`` for a run directory."""
    path = Path(path)
    return path / role / "last.pt" if path.is_dir() else path


def load_checkpoint(path: str | Path, *, flag: str = "checkpoint", role: str | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a ``UserError`` naming ``flag`` and file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--{flag}: file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--{flag}: {path} is not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"--{flag}: {path} is not an htakl-deploy checkpoint (no '{FORMAT}' header)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"--{flag}: {path} lacks keys {missing}")
    if ckpt["version"] != VERSION:
        raise UserError(f"--{flag}: {path} has checkpoint version {ckpt['version']}, this tool reads {VERSION}")
    if role is not None and ckpt["role"] != role:
        raise UserError(f"--{flag}: {path} holds a {ckpt['role']} model, expected a {role}")
    return ckpt
