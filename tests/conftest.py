"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path


def tiny_digits_run(out: Path, **changes) -> Path:
    """Train a small real digits run (teacher + KD student) into ``out/r``; ``changes`` override
    the config (sizes, epochs). Returns the run directory."""
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.dist import DistEnv

    settings = {"data": "digits", "method": "kd", "batch_size": 64, "out_dir": str(out), "run_name": "r",
                "progress": False, **changes}
    recipe.run(DistillConfig(**settings), DistEnv())
    return out / "r"
