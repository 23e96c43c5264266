"""The training loop: one short, plain function used for teachers and students alike.

A *stage* is one model trained to the end: the ANN teacher (``T = 1``, cross-entropy) or the SNN
student (``T`` steps, any method of ``methods.LOSSES``). Methods plug in as loss functions.

Determinism and exact resume: the data order of epoch ``e`` and the augmentation/encoding noise of
batch ``s`` come from generators seeded by ``(seed, stage, e)`` and ``(seed, stage, e, s)``, never
from global state. A checkpoint records ``(epoch, step_in_epoch)``, so a resumed run replays exactly
the batches an uninterrupted one would — on CPU in deterministic mode, bitwise.
Partial last batches are dropped (``N // batch_size`` steps per epoch).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from htakl_deploy.atomic import write_json
from htakl_deploy.distill.checkpoint import load_checkpoint, save_checkpoint
from htakl_deploy.distill.config import DistillConfig
from htakl_deploy.distill.data import ArrayDataset, augment_batch, encode
from htakl_deploy.distill.dist import DistEnv, all_sum, broadcast_flag
from htakl_deploy.distill.methods import LOSSES, METHOD_NEEDS
from htakl_deploy.distill.methods.inputs import loss_inputs, method_module, method_tap
from htakl_deploy.distill.models import Classifier
from htakl_deploy.distill.runlog import MetricsLog
from htakl_deploy.errors import TrainingDiverged, UserError

STAGE_IDS = {"teacher": 1, "student": 2}
CPU = torch.device("cpu")
STEP_LOG_EVERY = 10


@dataclass
class Stage:
    """One model to train: its role, timesteps, method and (for students) the frozen teacher."""

    role: str
    model: Classifier
    timesteps: int
    method: str
    epochs: int
    teacher: Classifier | None = None

    def __post_init__(self) -> None:
        if self.role not in STAGE_IDS:
            raise ValueError(f"role must be one of {sorted(STAGE_IDS)}, got {self.role!r}")


def seeded_generator(*key: int) -> torch.Generator:
    """A generator whose seed is a hash of ``key`` (independent streams per epoch/step)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def make_inputs(
    x_bchw: torch.Tensor, timesteps: int, encoding: str, generator: torch.Generator
) -> torch.Tensor:
    """Images ``[B,C,H,W]`` in [0, 1] → network input ``[T,B,C,H,W]``."""
    return encode(x_bchw, timesteps, encoding, generator)


def predict(logits_tbc: torch.Tensor) -> torch.Tensor:
    """Class decision from per-timestep logits: argmax of their mean over T."""
    return logits_tbc.mean(0).argmax(-1)


@torch.no_grad()
def evaluate(
    model: Classifier,
    data: ArrayDataset,
    timesteps: int,
    encoding: str,
    batch_size: int,
    env: DistEnv,
    seed: int,
    device: torch.device = CPU,
) -> float:
    """Top-1 accuracy on all of ``data`` (sharded over processes, summed)."""
    model.eval()
    correct = total = 0
    n = len(data)
    for s, start in enumerate(range(0, n, batch_size)):
        idx = torch.arange(start, min(start + batch_size, n))[env.rank :: env.world_size]
        if len(idx) == 0:
            continue
        x, y = data.batch(idx)
        x_tbchw = make_inputs(x, timesteps, encoding, seeded_generator(seed, 99, s))
        logits = model(x_tbchw.to(device, non_blocking=True))
        correct += int((predict(logits) == y.to(device)).sum())
        total += len(idx)
    correct, total = all_sum(env, [float(correct), float(total)])
    return correct / max(total, 1.0)


def _lr_lambda(schedule: str, total_steps: int):
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def fit(
    stage: Stage,
    train: ArrayDataset,
    test: ArrayDataset,
    cfg: DistillConfig,
    stage_dir: Path,
    env: DistEnv,
    device: torch.device = CPU,
) -> dict[str, Any]:
    """Train ``stage.model`` to ``stage.epochs``, resuming from ``stage_dir/last.pt`` if present.

    The models must already be on ``device``; batches are drawn, augmented and encoded on the CPU
    (seeded CPU generators, so every device sees the same data) and moved there per step.
    Returns the final metrics (also written to ``stage_dir/done.json`` by rank 0).
    """
    model = stage.model
    stage_id = STAGE_IDS[stage.role]
    loss_fn = LOSSES[stage.method]
    loss_cfg = cfg.loss_config()
    needs = METHOD_NEEDS.get(stage.method)
    tap = method_tap(model, stage.method, loss_cfg)
    # a method's own trainable part (e.g. BKDSNN's generator): same optimiser, saved with the model
    aux = method_module(model, stage.method, loss_cfg, tap, cfg.seed) if stage.role == "student" else None
    local_batch = cfg.batch_size // env.world_size
    steps_per_epoch = len(train) // cfg.batch_size
    total_steps = steps_per_epoch * stage.epochs
    encoding = cfg.encoding if stage.timesteps > 1 or stage.role == "student" else "direct"

    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.schedule, total_steps))
    if env.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model
    aux_net = aux
    if env.enabled and aux is not None:  # its gradients are averaged over processes like the model's
        aux_net = DistributedDataParallel(aux, device_ids=[device.index] if device.type == "cuda" else None)
    if stage.teacher is not None:
        stage.teacher.eval()

    last_path, best_path = stage_dir / "last.pt", stage_dir / "best.pt"
    metrics = MetricsLog(stage_dir / "metrics.jsonl")
    start_epoch = start_step = global_step = 0
    best_acc = -1.0
    if last_path.exists():
        ckpt = load_checkpoint(last_path, flag="resume", role=stage.role)
        model.load_state_dict(ckpt["model"])
        if aux is not None:
            if "method_module" not in ckpt:
                raise UserError(f"--resume: {last_path} has no state of the {stage.method} module; "
                                "it was not written by a run of this method")
            aux.load_state_dict(ckpt["method_module"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, start_step = ckpt["epoch"], ckpt["step_in_epoch"]
        global_step, best_acc = ckpt["global_step"], ckpt["best_acc"]
        if env.is_main:
            metrics.truncate_after(global_step)

    # loss_sum, correct, seen of an epoch interrupted mid-way, summed over processes; rank 0
    # carries them on, so the epoch's metrics match an uninterrupted run
    partial = [0.0, 0.0, 0.0]
    if last_path.exists() and env.is_main:
        partial = list(ckpt.get("epoch_partial", partial))

    def checkpoint(path: Path, epoch: int, step_in_epoch: int, sums: list[float]) -> None:
        if env.is_main:
            save_checkpoint(
                path,
                {
                    "role": stage.role,
                    "model_spec": model.spec,
                    "model": model.state_dict(),
                    **({"method_module": aux.state_dict()} if aux is not None else {}),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "step_in_epoch": step_in_epoch,
                    "global_step": global_step,
                    "best_acc": best_acc,
                    "epoch_partial": sums,
                    "config": cfg.to_dict(),
                },
            )

    record: dict[str, Any] = {}
    for epoch in range(start_epoch, stage.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=seeded_generator(cfg.seed, stage_id, epoch))
        first = start_step if epoch == start_epoch else 0
        loss_sum, correct, seen = partial if first else (0.0, 0.0, 0.0)
        t0 = time.perf_counter()
        bar = tqdm(
            range(first, steps_per_epoch),
            desc=f"{stage.role} {epoch + 1}/{stage.epochs}",
            disable=not (cfg.progress and env.is_main and sys.stderr.isatty()),
            leave=False,
            dynamic_ncols=True,
        )
        for step in bar:
            batch_idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            idx = batch_idx[env.rank :: env.world_size][:local_batch]
            g = seeded_generator(cfg.seed, stage_id, epoch, step)
            x, y = train.batch(idx)
            x = augment_batch(x, train.augment, g)
            x_tbchw = make_inputs(x, stage.timesteps, encoding, g).to(device, non_blocking=True)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            inputs = loss_inputs(net, stage.model, stage.teacher, needs, tap, x_tbchw, x, y, g,
                                 cfg.samd_cam_class, module=aux_net)
            out = inputs.student_tbc
            loss = loss_fn(inputs, loss_cfg)
            if broadcast_flag(env, not bool(torch.isfinite(loss))):
                kept = last_path if last_path.exists() else None
                raise TrainingDiverged(
                    f"{stage.role}: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(method {stage.method}, lr {scheduler.get_last_lr()[0]:.3g}); "
                    + (f"last good checkpoint kept: {kept}" if kept else "no checkpoint was written yet")
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1

            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += float((predict(out.detach()) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
            if env.is_main and global_step % STEP_LOG_EVERY == 0:
                metrics.append(
                    {"kind": "step", "epoch": epoch + 1, "global_step": global_step,
                     "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}
                )
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and step + 1 < steps_per_epoch:
                checkpoint(last_path, epoch, step + 1, all_sum(env, [loss_sum, correct, seen]))
        bar.close()
        train_s = time.perf_counter() - t0

        loss_sum, correct, seen = all_sum(env, [loss_sum, correct, seen])
        test_acc = evaluate(model, test, stage.timesteps, encoding, cfg.batch_size, env, cfg.seed, device)
        improved = test_acc > best_acc
        best_acc = max(best_acc, test_acc)
        record = {
            "kind": "epoch",
            "epoch": epoch + 1,
            "global_step": global_step,
            "train_loss": loss_sum / max(seen, 1.0),
            "train_acc": correct / max(seen, 1.0),
            "test_acc": test_acc,
            "best_test_acc": best_acc,
            "lr": scheduler.get_last_lr()[0],
            "epoch_train_s": train_s,
            "images_per_s": seen / train_s if train_s > 0 else None,
        }
        if env.is_main:
            metrics.append(record)
            if cfg.progress:
                tqdm.write(
                    f"{stage.role} epoch {epoch + 1}/{stage.epochs}: loss {record['train_loss']:.4f} "
                    f"train acc {record['train_acc']:.4f} test acc {test_acc:.4f} "
                    f"({record['images_per_s']:.0f} img/s)",
                    file=sys.stderr,
                )
        checkpoint(last_path, epoch + 1, 0, [0.0, 0.0, 0.0])
        if improved:
            checkpoint(best_path, epoch + 1, 0, [0.0, 0.0, 0.0])

    if not record:  # resumed after the last epoch had finished: re-read the final record
        epochs = [r for r in metrics.read() if r["kind"] == "epoch"]
        record = epochs[-1] if epochs else {}
    done = {**record, "role": stage.role, "method": stage.method, "timesteps": stage.timesteps,
            "best_test_acc": best_acc, "last": str(last_path), "best": str(best_path)}
    if env.is_main:
        write_json(stage_dir / "done.json", done)
    return done
