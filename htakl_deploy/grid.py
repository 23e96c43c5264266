"""Grids of runs from one config file: a ``[grid]`` table in a ``run --config`` file.

    # configs/paper/cifar100-resnet19.toml
    data = "cifar100"
    model = "resnet19"
    ...
    [grid]
    method = ["kdsnn", "lasnn", "bkdsnn", "hta-kl"]
    timesteps = [1, 2, 4]

``htakl-deploy run --config FILE`` then runs every combination (in the file's order, the last
axis fastest), each in its own run directory ``<run_name or file stem>-<cell>`` (e.g.
``cifar100-resnet19-hta-kl-T4``). Every cell's config is checked before the first one starts.
Cells whose method needs a teacher and that name none share the teacher trained by the first
cell of the same data set and model. Running the same command again skips finished cells and resumes an interrupted one, so a
grid killed at any point is continued by repeating the command.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

from htakl_deploy.errors import UserError


def grid_cells(grid: Any, accepted: set[str], where: str) -> list[dict[str, Any]]:
    """Every combination of the ``[grid]`` axes (``{key: [values]}``)."""
    from htakl_deploy.runconfig import unknown_key_message

    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{where}: [grid] must be a table of keys, each with a list of values")
    axes = {}
    for key, values in grid.items():
        name = str(key).replace("-", "_")
        if name not in accepted:
            raise UserError(unknown_key_message(key, accepted, f"{where} [grid]"))
        if name in ("run_name", "out_dir"):
            raise UserError(f"{where} [grid]: {key!r} cannot be a grid axis (each cell names its own run)")
        if not isinstance(values, list) or not values:
            raise UserError(f"{where} [grid]: {key!r} must be a non-empty list, got {values!r}")
        axes[name] = values
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def cell_name(cell: dict[str, Any]) -> str:
    parts = []
    for k, v in cell.items():
        parts.append(str(v) if k == "method" else f"T{v}" if k == "timesteps" else f"{k.replace('_', '-')}{v}")
    return "-".join(parts)


def run_grid(cells: list[tuple[str, Any, Any]], say: Callable[[str], None], progress: bool) -> list[dict]:
    """Run ``cells`` (name, DistillConfig, PipelineConfig), skipping finished ones, resuming
    interrupted ones, sharing the first trained teacher. Returns one result per cell."""
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.losses import TEACHERLESS
    from htakl_deploy.pipeline import read_pipeline_file, run_pipeline

    shared: dict[tuple, str] = {}  # (data, model) → the teacher the first such cell trained
    results = []
    for i, (name, cfg, settings) in enumerate(cells, 1):
        run_dir = Path(cfg.out_dir) / cfg.run_name
        say(f"[grid {i}/{len(cells)}] {name} → {run_dir}")
        saved = read_pipeline_file(run_dir) if (run_dir / "config.json").is_file() else None
        report = (saved or {}).get("stages", {}).get("report", {})
        if report.get("done") and saved.get("settings") == settings.to_dict():
            say("      already done, skipped")
            results.append({"cell": name, "run_dir": str(run_dir), "skipped": True})
        elif (run_dir / "config.json").is_file():
            saved_cfg, teacher_only = recipe.read_run(run_dir)
            results.append({"cell": name, **run_pipeline(saved_cfg, settings, resume_dir=str(run_dir),
                                                         teacher_only=teacher_only, say=say, progress=progress)})
        else:
            if cfg.teacher is None and cfg.method not in TEACHERLESS and (cfg.data, cfg.model) in shared:
                cfg = cfg.replace(teacher=shared[(cfg.data, cfg.model)])
            results.append({"cell": name, **run_pipeline(cfg, settings, say=say, progress=progress)})
        if (cfg.data, cfg.model) not in shared and (run_dir / "teacher" / "done.json").is_file():
            shared[(cfg.data, cfg.model)] = str(run_dir / "teacher" / "last.pt")
    return results
