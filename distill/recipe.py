"""The distillation pipeline: check everything, open a run directory, (train a teacher,) distil.

Every user mistake is found *before* the run directory is created, so a rejected command leaves
nothing behind. ``resume_dir`` continues a run with its saved config: finished stages are skipped,
an interrupted stage continues from its ``last.pt``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as tdist

from htakl_deploy.atomic import check_writable_dir, write_json
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
from htakl_deploy.readers import read_json_table


def load_splits(cfg: DistillConfig) -> tuple[ArrayDataset, ArrayDataset]:
    """The data set's (train, test), each cut to its ``--limit-*`` (``ArrayDataset.subset``: every
    class in proportion). The test split is in its evaluation order (``stratified_order``) even
    uncut, so every evaluation of fewer images (``simulate --samples``, Lava's ``--lava-samples``,
    export's check) runs the first images of every larger one, in the same order."""
    kwargs = {} if cfg.data_root is None else {"root": cfg.data_root}
    train, test = load_dataset(cfg.data, **kwargs)
    if train.num_classes < 2:
        raise UserError(f"--data {cfg.data}: the data set has {train.num_classes} class; a classifier needs at least 2")
    if cfg.limit_train:
        train = train.subset(cfg.limit_train)
    return train, test.subset(cfg.limit_test or len(test))


def load_test(cfg: DistillConfig) -> ArrayDataset:
    """The test images a run was (or is) evaluated on: what export, simulate and the API read.
    Nothing about training is checked here (an evaluation needs no batch of training images)."""
    return load_splits(cfg)[1]


def load_data(cfg: DistillConfig) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) for training: ``load_splits`` with the training set checked (two classes)."""
    train, test = load_splits(cfg)
    present = int(torch.unique(train.labels).numel())
    if present < 2:
        raise UserError(f"--data {cfg.data}: the training images hold {present} class"
                        + (f" (--limit-train {cfg.limit_train})" if cfg.limit_train else "")
                        + "; distillation needs at least 2")
    return train, test


#: the batch size a run gets when none is given (``DistillConfig.batch_size``)
DEFAULT_BATCH_SIZE = DistillConfig.batch_size


def fit_batch_size(cfg: DistillConfig, n_train: int) -> tuple[DistillConfig, str | None]:
    """The config with a batch size the training set can fill, and a note when it was lowered.

    Partial batches are dropped (``distill.train``), so a batch larger than the training set
    trains nothing. The default (128) is lowered to the largest power of two that gives at least
    four steps an epoch; any other batch size that large is refused with the largest that fits."""
    if n_train >= cfg.batch_size:
        return cfg, None
    fitted = 1 << max(0, (max(1, n_train // 4)).bit_length() - 1)
    if cfg.batch_size != DEFAULT_BATCH_SIZE:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set ({n_train} images; "
                        f"partial batches are dropped): give --batch-size {n_train} or less, e.g. {fitted}")
    note = (f"--batch-size lowered from {cfg.batch_size} to {fitted}: the training set holds {n_train} "
            "images (four steps an epoch; give --batch-size to choose)")
    return cfg.replace(batch_size=fitted), note


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
    label = flag if flag.isupper() or flag.startswith("-") or " " in flag else f"--{flag}"
    spec = ckpt["model_spec"]
    problem = model_spec_problem(spec)
    if problem:
        raise UserError(f"{label}: {path}: model_spec {problem}")
    want_spiking = {"student": True, "teacher": False}.get(ckpt.get("role"))
    if want_spiking is not None and spec["spiking"] != want_spiking:
        raise UserError(f"{label}: {path}: a {ckpt['role']} checkpoint with spiking={spec['spiking']} "
                        f"(the student is the SNN, the teacher its ANN twin)")
    try:
        model = build_model(**spec)
        problem = state_dict_problem(model.state_dict(), ckpt["model"])
        if problem:
            raise UserError(f"{label}: {path} does not match its architecture ({spec['arch']}): {problem}")
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError, AttributeError, IndexError) as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"{label}: {path} does not match its architecture: {first}") from None
    return model


def state_dict_problem(want: dict, got: Any) -> str | None:
    """The first tensor a checkpoint's state dict lacks, has too many of, or holds in another shape
    (torch's own message stops at 'Error(s) in loading state_dict' on its first line)."""
    if not isinstance(got, dict):
        return f"its weights are a {type(got).__name__}, expected a table of tensors"
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [k for k in want if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(want[k].shape)]
    if shapes:
        k = shapes[0]
        return (f"tensor {k!r} has shape {list(got[k].shape)}, the architecture's is {list(want[k].shape)}"
                + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        return f"tensor {missing[0]!r} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    if extra:
        return f"tensor {str(extra[0])!r} is not part of it" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    return None


def model_spec_problem(spec: Any) -> str | None:
    """What is wrong with a checkpoint's ``model_spec`` (``build_model`` keywords), or None."""
    import inspect

    if not isinstance(spec, dict):
        return f"must be a table, got {type(spec).__name__}"
    accepted = set(inspect.signature(build_model).parameters)
    unknown = sorted(map(str, set(spec) - accepted))
    if unknown:
        return f"has unknown keys {unknown}"
    for key in ("arch", "in_shape", "num_classes", "spiking"):
        if key not in spec:
            return f"lacks {key!r}"
    from htakl_deploy.distill.models import ARCHS

    if spec["arch"] not in ARCHS:
        return f"names architecture {spec['arch']!r}; known: {', '.join(sorted(ARCHS))}"
    shape = spec["in_shape"]
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in shape)):
        return f"in_shape must be 3 positive integers (C, H, W), got {shape!r}"
    n = spec["num_classes"]
    if not (isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= 100_000):
        return f"num_classes must be an integer >= 2, got {n!r}"
    if not isinstance(spec["spiking"], bool):
        return f"spiking must be true or false, got {spec['spiking']!r}"
    for key, low in (("tau", 1.0), ("v_threshold", 0.0)):
        v = spec.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) and v > low):
            return f"{key} must be a finite number > {low}, got {v!r}"
    return None


def load_teacher(path: str | Path, data: ArrayDataset, arch: str | None = None) -> Classifier:
    """A teacher checkpoint (a file, or a run directory holding ``teacher/last.pt``); with
    ``arch``, it must be that architecture's ANN twin (docs/DISTILL.md's teacher)."""
    path = resolve_checkpoint(path, "teacher", flag="teacher")
    ckpt = load_checkpoint(path, flag="teacher", role="teacher")
    spec = ckpt["model_spec"]
    problem = model_spec_problem(spec)
    if problem:
        raise UserError(f"--teacher: {path}: model_spec {problem}")
    if arch is not None and spec["arch"] != arch:
        raise UserError(f"--teacher: {path} is a {spec['arch']} teacher; the teacher must be the ANN twin of "
                        f"the student (--model {arch})")
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


def _has_checkpoint(run_dir: Path) -> bool:
    """A run directory worth keeping after a failure: ``--resume`` continues from a checkpoint."""
    return any((run_dir / stage / "last.pt").is_file() for stage in ("teacher", "student"))


def open_run(cfg: DistillConfig, env: DistEnv, teacher_only: bool, resume_dir: str | Path | None = None):
    """Claim the run directory (``htakl_deploy.rundir``: one writer per run; of two commands on one
    name exactly one goes on) and, for a new run, create it with its provenance and config.
    Returns ``(run_dir, claim)``; the claim (None on other ranks) is held until training ends."""
    from htakl_deploy.rundir import claim

    if resume_dir is not None:
        run_dir, label, new_run = Path(resume_dir), "--resume", False
    else:
        run_dir, label, new_run = Path(cfg.out_dir) / (cfg.run_name or _run_name(cfg, teacher_only)), "--out-dir", True
    held, problem = None, None
    if env.is_main:
        try:
            held = claim(run_dir, label, new_run=new_run, keep=_has_checkpoint).acquire()
        except UserError as e:
            problem = str(e)
    run_dir, problem = _agree(env, (run_dir, problem))
    if problem:
        raise UserError(problem)
    if env.is_main and new_run:
        try:
            write_json(run_dir / "provenance.json", provenance(cfg.seed, env.world_size))
            write_json(run_dir / "config.json", {"teacher_only": teacher_only, **cfg.to_dict()})
        except BaseException:
            held.release(failed=True)  # a refused command leaves no run directory behind
            raise
    return run_dir, held


def read_run(run_dir: str | Path) -> tuple[DistillConfig, bool]:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise UserError(f"--resume: {run_dir} is not a run directory (not a folder)")
    if not path.is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (no config.json)")
    values = read_json_table(path, "--resume")
    teacher_only = values.pop("teacher_only", False)
    if not isinstance(teacher_only, bool):
        raise UserError(f"--resume: {path}: 'teacher_only' must be true or false, got {teacher_only!r}")
    return config_from_dict(values, source=f"--resume: {path}"), teacher_only


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
    if resume_dir is None and env.is_main:
        check_writable_dir(cfg.out_dir, "--out-dir")
    train, test = load_data(cfg)
    cfg, note = fit_batch_size(cfg, len(train))
    if note and env.is_main:
        print(f"htakl-deploy: note: {note}", file=sys.stderr)
    needs_teacher = teacher_only or cfg.method not in TEACHERLESS
    teacher = load_teacher(cfg.teacher, train, cfg.model) if (needs_teacher and cfg.teacher) else None
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

    run_dir, held = open_run(cfg, env, teacher_only, resume_dir)
    try:
        if on_open is not None and env.is_main:
            on_open(run_dir)

        summary: dict[str, Any] = {"run_dir": str(run_dir), "data": cfg.data, "model": cfg.model,
                                   "method": cfg.method, "timesteps": cfg.timesteps, "device": describe(device),
                                   "train_samples": len(train), "test_samples": len(test),
                                   "batch_size": cfg.batch_size}
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
    except BaseException as e:
        if held is not None:  # an error (not Ctrl-C) before the first checkpoint: no run directory left
            held.release(failed=isinstance(e, Exception))
        raise
    if held is not None:
        held.release()
    return summary


def _fit_or_reuse(stage: Stage, train, test, cfg, stage_dir: Path, env: DistEnv,
                  device: torch.device) -> dict[str, Any]:
    done_path = stage_dir / "done.json"
    if done_path.exists():  # finished before an interruption: load its final weights
        ckpt = load_checkpoint(stage_dir / "last.pt", flag="resume", role=stage.role)
        stage.model.load_state_dict(ckpt["model"])
        return json.loads(done_path.read_text(encoding="utf-8"))
    return fit(stage, train, test, cfg, stage_dir, env, device)
