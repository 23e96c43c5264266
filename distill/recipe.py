"""The distillation pipeline: check everything, open a run directory, (train a teacher,) distil.

Every user mistake is found *before* the run directory is created, so a rejected command leaves
nothing behind. ``resume_dir`` continues a run with its saved config: finished stages are skipped,
an interrupted stage continues from its ``last.pt``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as tdist

from htakl_deploy.atomic import write_json
from htakl_deploy.distill.checkpoint import load_checkpoint, resolve_checkpoint
from htakl_deploy.distill.config import DistillConfig, config_from_dict
from htakl_deploy.distill.data import ArrayDataset, load_dataset
from htakl_deploy.distill.device import describe, device_for
from htakl_deploy.distill.dist import DistEnv
from htakl_deploy.distill.losses import TEACHERLESS
from htakl_deploy.distill.models import Classifier, build_model
from htakl_deploy.distill.runlog import provenance
from htakl_deploy.distill.methods.inputs import method_tap
from htakl_deploy.distill.train import Stage, fit
from htakl_deploy.errors import UserError


def load_data(cfg: DistillConfig) -> tuple[ArrayDataset, ArrayDataset]:
    kwargs = {} if cfg.data_root is None else {"root": cfg.data_root}
    train, test = load_dataset(cfg.data, **kwargs)
    if cfg.limit_train:
        train = train.subset(cfg.limit_train)
    if cfg.limit_test:
        test = test.subset(cfg.limit_test)
    if len(train) < cfg.batch_size:
        raise UserError(
            f"--batch-size {cfg.batch_size} is larger than the training set ({len(train)} images)"
        )
    return train, test


def new_model(cfg: DistillConfig, data: ArrayDataset, *, spiking: bool, seed: int) -> Classifier:
    """Build a freshly initialised model (init drawn from ``seed``, global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = build_model(
                cfg.model,
                in_shape=data.in_shape,
                num_classes=data.num_classes,
                spiking=spiking,
                tau=cfg.neuron_tau,
                v_threshold=cfg.v_threshold,
            )
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, 1, *data.in_shape))
            model.set_activation_checkpointing(cfg.checkpoint_activations)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0]
            raise UserError(
                f"--model {cfg.model} cannot take --data {cfg.data} images of shape "
                f"{data.in_shape}: {first}"
            ) from None
    return model


def model_from_checkpoint(ckpt: dict[str, Any], path: Path, flag: str) -> Classifier:
    try:
        model = build_model(**ckpt["model_spec"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise UserError(f"--{flag}: {path} does not match its architecture: {first}") from None
    return model


def load_teacher(path: str | Path, data: ArrayDataset) -> Classifier:
    """A teacher checkpoint (a file, or a run directory holding ``teacher/last.pt``)."""
    path = resolve_checkpoint(path, "teacher")
    ckpt = load_checkpoint(path, flag="teacher", role="teacher")
    spec = ckpt["model_spec"]
    if tuple(spec.get("in_shape", ())) != data.in_shape or spec.get("num_classes") != data.num_classes:
        raise UserError(
            f"--teacher: {path} was trained on images {tuple(spec.get('in_shape', ()))} with "
            f"{spec.get('num_classes')} classes; this data set has {data.in_shape}, {data.num_classes}"
        )
    teacher = model_from_checkpoint(ckpt, path, "teacher")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _run_name(cfg: DistillConfig, teacher_only: bool) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    what = "teacher" if teacher_only else f"{cfg.method}-T{cfg.timesteps}"
    return f"{cfg.data}-{cfg.model}-{what}-s{cfg.seed}-{stamp}"


def _agree(env: DistEnv, value: Any) -> Any:
    """Every process gets rank 0's ``value`` (run names hold timestamps, checks touch the disk)."""
    if not env.enabled:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def open_run(cfg: DistillConfig, env: DistEnv, teacher_only: bool) -> Path:
    run_dir = Path(cfg.out_dir) / (cfg.run_name or _run_name(cfg, teacher_only))
    problem = None
    if (run_dir / "config.json").exists():
        problem = (
            f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
            "or choose another --run-name"
        )
    run_dir, problem = _agree(env, (run_dir, problem))
    if problem:
        raise UserError(problem)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "provenance.json", provenance(cfg.seed, env.world_size))
        write_json(run_dir / "config.json", {"teacher_only": teacher_only, **cfg.to_dict()})
    return run_dir


def read_run(run_dir: str | Path) -> tuple[DistillConfig, bool]:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (no config.json)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"--resume: {path} is not valid JSON: {exc}") from None
    teacher_only = bool(values.pop("teacher_only", False))
    return config_from_dict(values), teacher_only


def run(
    cfg: DistillConfig,
    env: DistEnv,
    *,
    teacher_only: bool = False,
    resume_dir: str | Path | None = None,
    on_open: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Train (teacher and) student; returns the summary also written to ``summary.json``.

    With ``resume_dir``, ``cfg``/``teacher_only`` must be the run's saved ones (``read_run``).
    ``on_open(run_dir)`` is called on the main process once the run directory exists, after every
    check passed and before training (``run`` saves its pipeline settings there).
    """
    t_start = time.perf_counter()
    train, test = load_data(cfg)
    needs_teacher = teacher_only or cfg.method not in TEACHERLESS
    teacher = load_teacher(cfg.teacher, train) if (needs_teacher and cfg.teacher) else None
    student = None if teacher_only else new_model(cfg, train, spiking=True, seed=cfg.seed)
    if student is not None:
        method_tap(student, cfg.method, cfg.loss_config())  # a bad --kdsnn-stage fails here
    if needs_teacher and teacher is None:
        teacher = new_model(cfg, train, spiking=False, seed=cfg.seed + 1)
        train_teacher = True
    else:
        train_teacher = False

    device = device_for(cfg.device)  # a machine without the asked-for device fails before the run opens
    for model in (teacher, student):
        if model is not None:
            model.to(device)

    if resume_dir is not None:
        run_dir = Path(resume_dir)
    else:
        run_dir = open_run(cfg, env, teacher_only)
    if on_open is not None and env.is_main:
        on_open(run_dir)

    summary: dict[str, Any] = {"run_dir": str(run_dir), "data": cfg.data, "model": cfg.model,
                               "method": cfg.method, "timesteps": cfg.timesteps, "device": describe(device)}
    if train_teacher:
        stage_dir = run_dir / "teacher"
        stage_dir.mkdir(parents=True, exist_ok=True)
        stage = Stage("teacher", teacher, 1, "ce", cfg.resolved_teacher_epochs)
        summary["teacher"] = _fit_or_reuse(stage, train, test, cfg, stage_dir, env, device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    elif teacher is not None:
        summary["teacher"] = {"checkpoint": str(cfg.teacher)}

    if student is not None:
        stage_dir = run_dir / "student"
        stage_dir.mkdir(parents=True, exist_ok=True)
        stage = Stage("student", student, cfg.timesteps, cfg.method, cfg.resolved_epochs,
                      teacher if cfg.method not in TEACHERLESS else None)
        summary["student"] = _fit_or_reuse(stage, train, test, cfg, stage_dir, env, device)
        summary["student"]["num_params"] = student.num_params()
        summary["student"]["dense_ops_per_timestep"] = student.dense_ops_per_sample()["total"]
    summary["wall_s"] = time.perf_counter() - t_start
    if env.is_main:
        write_json(run_dir / "summary.json", summary)
    return summary


def _fit_or_reuse(stage: Stage, train, test, cfg, stage_dir: Path, env: DistEnv,
                  device: torch.device) -> dict[str, Any]:
    done_path = stage_dir / "done.json"
    if done_path.exists():  # finished before an interruption: load its final weights
        ckpt = load_checkpoint(stage_dir / "last.pt", flag="resume", role=stage.role)
        stage.model.load_state_dict(ckpt["model"])
        return json.loads(done_path.read_text(encoding="utf-8"))
    return fit(stage, train, test, cfg, stage_dir, env, device)
