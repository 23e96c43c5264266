"""Run directories: resolved config, provenance, metrics as JSON lines.

Layout of a run directory::

    config.json        the resolved DistillConfig
    provenance.json    versions, git SHA, command line, seed, world size, start time
    teacher/           only when the teacher was trained in this run
        metrics.jsonl  one JSON object per line: {"kind": "epoch"|"step", "global_step", ...}
        last.pt best.pt
        done.json      final metrics; its presence means the stage finished
    student/           the same for the distilled student
    summary.json       final accuracies and paths
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from htakl_deploy.atomic import appending, write_text

TRACKED_PACKAGES = ("htakl-deploy", "torch", "spikingjelly", "numpy", "scikit-learn", "nir", "lava-nc", "lava-dl")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(start: Path | None = None) -> dict[str, Any]:
    """SHA and dirtiness of the source checkout this package runs from (None outside git)."""
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip() != ""
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def provenance(seed: int, world_size: int, argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "git": git_state(),
        "argv": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "seed": seed,
        "world_size": world_size,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started_unix_s": time.time(),
    }


class MetricsLog:
    """Append-only JSON-lines file; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with appending(self.path) as fh:  # a full disk: one line naming the file
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_after(self, global_step: int) -> None:
        if not self.path.exists():
            return
        kept = [
            line for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("global_step", 0) <= global_step
        ]
        write_text(self.path, "".join(line + "\n" for line in kept))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
