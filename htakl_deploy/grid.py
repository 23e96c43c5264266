"""Grids of runs on Ray: a ``[grid]`` table in a ``run --config`` file, or cells a script builds.

    # configs/paper/cifar100-resnet19.toml
    data = "cifar100"
    model = "resnet19"
    ...
    [grid]
    method = ["kdsnn", "lasnn", "bkdsnn", "hta-kl"]
    timesteps = [1, 2, 4]

``htakl-deploy run --config FILE`` runs every combination (the file's order, the last axis
fastest), each the whole ``run`` pipeline in its own run directory ``<run_name or file
stem>-<cell>`` (e.g. ``cifar100-resnet19-hta-kl-T4``), each cell a Ray task
(``htakl_deploy.cluster``) on a private local cluster or, with ``--ray-address``, on an existing
one. What holds on one machine and on many:

- every cell's config is checked before the first starts;
- cells whose method needs a teacher and that name none share one teacher per data set, data
  folder, training subset and model: the ANN twin trained once, with the first such cell's
  settings, in ``<base>-teacher`` (``<base>-teacher-<data>-<model>`` when the grid has several),
  before the cells that need it start (cells that need none start at once);
- a cell declares its resources: ``--cell-cpus`` CPUs (its torch/numba threads) and one GPU when
  its ``device`` is ``cuda`` (or ``auto`` on a cluster that has GPUs): a GPU cell waits for a GPU;
- finished cells are skipped (no Ray at all when nothing is left); an interrupted cell — Ctrl-C, a
  killed worker, a lost node — continues from its last checkpoint (a dead worker's cell is run
  again at once; Ctrl-C: repeat the command);
- a cell that fails is reported by name with its log (``<run dir>/grid.log``) and the others go
  on; the command ends non-zero with the list;
- one progress line per finished cell.

Run directories are written by the workers: every node must see ``--out-dir`` (and the data) at
the same path (docs/SCALING.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from htakl_deploy.errors import UserError

LOG_NAME = "grid.log"
#: what makes two cells' teachers the same: the data it sees and the architecture it twins
TEACHER_KEY = ("data", "data_root", "limit_train", "encoding", "model")


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


@dataclass(frozen=True)
class Cell:
    """One run of a grid: ``cfg`` (its run directory is ``cfg.out_dir / cfg.run_name``) and the
    pipeline ``settings``; ``teacher``: the name of the shared teacher it waits for, if any."""

    name: str
    cfg: Any  # DistillConfig
    settings: Any  # PipelineConfig
    teacher: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out_dir) / self.cfg.run_name


@dataclass(frozen=True)
class Teacher:
    """A shared ANN teacher: a teacher-only run of ``cfg``; cells load ``checkpoint``."""

    name: str
    cfg: Any  # DistillConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out_dir) / self.cfg.run_name

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "teacher" / "last.pt"

    @property
    def done(self) -> bool:
        return (self.run_dir / "teacher" / "done.json").is_file()


def absolute(cfg):
    """``cfg`` with its paths absolute: a worker's working folder is not the command's."""
    paths = {k: str(Path(getattr(cfg, k)).resolve()) for k in ("out_dir", "data_root", "teacher")
             if getattr(cfg, k) is not None}
    return cfg.replace(**paths)


def share_teachers(cells: list[Cell], base: str) -> tuple[list[Cell], list[Teacher]]:
    """Give every cell that needs a teacher and names none the shared teacher of its group
    (``TEACHER_KEY``), trained with the group's first cell's settings (see the module docstring)."""
    from htakl_deploy.distill.losses import TEACHERLESS

    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cells):
        if c.cfg.teacher is None and c.cfg.method not in TEACHERLESS:
            groups.setdefault(tuple(getattr(c.cfg, k) for k in TEACHER_KEY), []).append(i)
    teachers, out = [], list(cells)
    for key, members in groups.items():
        first = cells[members[0]].cfg
        suffix = "" if len(groups) == 1 else f"-{first.data}-{first.model}"
        name = f"{base}-teacher{suffix}"
        if any(t.name == name for t in teachers):  # same data and model, other data folder or subset
            name = f"{name}-{len(teachers) + 1}"
        teacher = Teacher(name, first.replace(run_name=name, teacher=None, progress=False))
        teachers.append(teacher)
        for i in members:
            out[i] = Cell(cells[i].name, cells[i].cfg.replace(teacher=str(teacher.checkpoint)), cells[i].settings,
                          teacher=name)
    return out, teachers


def finished(cell: Cell) -> bool:
    """The cell's pipeline reached its report with these settings (``run`` would skip it all)."""
    from htakl_deploy.pipeline import read_pipeline_file

    if not (cell.run_dir / "config.json").is_file():
        return False
    saved = read_pipeline_file(cell.run_dir) or {}
    return bool(saved.get("stages", {}).get("report", {}).get("done")) and saved.get("settings") == cell.settings.to_dict()


def gpus_for(cfg, cluster_gpus: float) -> float:
    """One GPU for a cell that trains on CUDA (``auto``: when the cluster has GPUs), else none."""
    return 1.0 if cfg.device == "cuda" or (cfg.device == "auto" and cluster_gpus > 0) else 0.0


# ----------------------------------------------------------------------------- on a worker
def pipeline_cell(cfg, settings) -> dict[str, Any]:
    """One grid cell on a worker: the ``run`` pipeline in the cell's run directory, continuing it
    (with its saved config) if one is there."""
    from htakl_deploy.distill import recipe
    from htakl_deploy.pipeline import run_pipeline

    run_dir = Path(cfg.out_dir) / cfg.run_name
    if (run_dir / "config.json").is_file():
        saved, teacher_only = recipe.read_run(run_dir)
        return run_pipeline(saved, settings, resume_dir=str(run_dir), teacher_only=teacher_only, progress=False)
    return run_pipeline(cfg, settings, progress=False)


def teacher_run(cfg) -> dict[str, Any]:
    """A shared teacher on a worker: trained (or continued) as a teacher-only run."""
    import json

    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.dist import DistEnv

    run_dir = Path(cfg.out_dir) / cfg.run_name
    done = run_dir / "teacher" / "done.json"
    print(f"shared teacher: {cfg.model} on {cfg.data}, {cfg.resolved_teacher_epochs} epochs → {run_dir}", flush=True)
    if not done.is_file():
        if (run_dir / "config.json").is_file():
            saved, _ = recipe.read_run(run_dir)
            recipe.run(saved, DistEnv(), teacher_only=True, resume_dir=run_dir)
        else:
            recipe.run(cfg, DistEnv(), teacher_only=True)
    return {"run_dir": str(run_dir), **json.loads(done.read_text(encoding="utf-8"))}


# ----------------------------------------------------------------------------- the driver
def run_grid(cells: list[Cell], teachers: list[Teacher] = (), *, address: str | None = None,
             cpus: int | None = None, cell_cpus: float = 1.0, say: Callable[[str], None] = print,
             on_done: Callable[[dict], None] | None = None, retries: int = 1) -> list[dict[str, Any]]:
    """Run ``cells`` (and the ``teachers`` they wait for) on Ray: see the module docstring.
    Returns one record per cell, in order: ``{"cell", "run_dir", "status": skipped|done|failed,
    "error", "log", "wall_s", "result"}``; ``on_done`` gets each record as its cell ends."""
    from htakl_deploy import cluster

    if cell_cpus <= 0:
        raise UserError(f"--cell-cpus: got {cell_cpus}, expected a number > 0")
    for c in cells:
        if c.cfg.device.startswith("cuda:"):
            raise UserError(f"cell {c.name}: device {c.cfg.device!r}: on Ray a cell names no GPU; use 'cuda' "
                            "(Ray gives each cell its own GPU)")
    gpu = next((c for c in cells if c.cfg.device == "cuda"), None)
    if gpu is not None and not address:
        import torch

        if not torch.cuda.is_available():  # the local cluster's GPUs are this machine's: none would ever start
            raise UserError(f"cell {gpu.name} trains on CUDA (device = 'cuda') and torch sees no GPU here; set "
                            "device = 'cpu' or 'auto', or run the grid on a cluster with GPUs (--ray-address)")
    n = len(cells)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for i, c in enumerate(cells, 1):
        if finished(c):
            records[c.name] = {"cell": c.name, "run_dir": str(c.run_dir), "status": "skipped"}
            say(f"[grid {i}/{n}] {c.name}: already done, skipped ({c.run_dir})")
        else:
            todo.append(c)
    needed = {c.teacher for c in todo if c.teacher}
    teacher_jobs = [t for t in teachers if t.name in needed and not t.done]
    if todo:
        with cluster.ray_session(address, cpus) as session:
            if session.cpus < cell_cpus:
                raise UserError(f"--cell-cpus {cell_cpus:g}: the Ray cluster has {session.cpus:g} CPUs; no cell could start")
            jobs = [cluster.Job(t.name, teacher_run, {"cfg": t.cfg}, cpus=cell_cpus,
                                gpus=gpus_for(t.cfg, session.gpus), log=str(t.run_dir / LOG_NAME)) for t in teacher_jobs]
            jobs += [cluster.Job(c.name, pipeline_cell, {"cfg": c.cfg, "settings": c.settings}, cpus=cell_cpus,
                                 gpus=gpus_for(c.cfg, session.gpus), log=str(c.run_dir / LOG_NAME),
                                 after=c.teacher if any(t.name == c.teacher for t in teacher_jobs) else None)
                     for c in todo]
            where = session.address or f"a local Ray cluster ({session.cpus:g} CPUs, {session.gpus:g} GPUs)"
            say(f"[grid] {len(todo)} of {n} cells to run on {where}, {cell_cpus:g} CPU(s) each"
                + (f"; first the shared teacher{'s' if len(teacher_jobs) > 1 else ''} "
                   f"{', '.join(t.name for t in teacher_jobs)}" if teacher_jobs else ""))
            index = {c.name: i for i, c in enumerate(cells, 1)}

            def done(o) -> None:
                if o.name not in index:  # a teacher
                    say(f"[grid] teacher {o.name}: " + (f"trained in {_duration(o.wall_s)}, test accuracy "
                                                         f"{100 * o.result.get('test_acc', 0):.2f} %" if o.ok
                                                         else f"FAILED: {o.error}; log {o.log}"))
                    return
                cell = cells[index[o.name] - 1]
                rec = {"cell": o.name, "run_dir": str(cell.run_dir), "status": "done" if o.ok else "failed",
                       "error": o.error, "log": o.log, "wall_s": o.wall_s, "attempts": o.attempts,
                       "result": o.result if o.ok else None}
                records[o.name] = rec
                say(f"[grid {index[o.name]}/{n}] {o.name}: " + (_result_line(o.result, o.wall_s) if o.ok
                                                              else f"FAILED: {o.error}; log {o.log}"))
                if on_done is not None:
                    on_done(rec)

            cluster.run_jobs(session, jobs, on_done=done, say=say, retries=retries)
    return [records[c.name] for c in cells]


def _result_line(result: dict[str, Any], wall_s: float) -> str:
    acc = " ".join(f"{b} {100 * a:.2f} %" for b, a in result.get("accuracy", {}).items())
    student = result.get("student_test_acc")
    return (f"done in {_duration(wall_s)}" + (f": student {100 * student:.2f} %" if student is not None else "")
            + (f", {acc}" if acc else "") + f" ({result['run_dir']})")


def _duration(s: float) -> str:
    from htakl_deploy.pipeline import _duration as duration

    return duration(s)
