"""Benchmark: our training loop (``distill.train.fit``) vs a plain hand-written SpikingJelly loop.

Same student (``build_model('convnet', spiking=True)``, same initial weights), same frozen ANN
teacher, same digits tensors, global batch, T, SGD settings and loss (``kd`` from ``LOSSES``, so the
teacher forward and the loss cost the same on both sides; only the loop around them differs). Both
run in this process, interleaved epoch by epoch (the order alternates), and the median epoch time
of each gives images/s and the overhead ratio (target: ours ≤ 1.10 × plain).

- ``ours``: ``fit`` on a one-epoch ``Stage`` in a fresh stage directory; the time is the epoch's
  ``epoch_train_s`` from ``metrics.jsonl`` (training steps: data order, per-step generators,
  encoding, loss, scheduler, metrics, NaN check) — evaluation and the checkpoint are reported
  apart (``ours_call_s``: the whole ``fit`` call).
- ``plain``: ``randperm``; index the tensors; repeat over T; teacher forward under ``no_grad``;
  student forward; loss; ``zero_grad/backward/step``; ``functional.reset_net``.
- ``ours+aug``: ``fit`` with the data set's own augmentation (digits: random 1-pixel crop), as a
  user runs it; the two others run with augmentation off, so they do the same work.

Peak memory: each variant runs again in a fresh subprocess (``--variant``): resident memory after
setup (data, models), then the kernel's peak (``VmHWM``, reset after setup) during ``--mem-epochs``
epochs; the difference is the peak memory the training adds (tracemalloc would miss torch's
allocations, which bypass Python's allocator).

Run: ``python bench/train_overhead.py [--reps 7] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from spikingjelly.activation_based import functional

from htakl_deploy.distill.config import DistillConfig
from htakl_deploy.distill.data import AugmentSpec
from htakl_deploy.distill.dist import DistEnv
from htakl_deploy.distill.losses import LossInputs
from htakl_deploy.distill.methods import LOSSES
from htakl_deploy.distill.recipe import load_data, new_model
from htakl_deploy.distill.train import Stage, fit
from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory

VARIANTS = ("ours", "plain", "ours+aug")


def setup(limit_train: int | None, batch_size: int, timesteps: int):
    cfg = DistillConfig(method="kd", timesteps=timesteps, batch_size=batch_size, epochs=1,
                        limit_train=limit_train, limit_test=128, progress=False, schedule="constant")
    train, test = load_data(cfg)
    plain_train = dataclasses.replace(train, augment=AugmentSpec(crop_padding=0, hflip=False))
    teacher = new_model(cfg, train, spiking=False, seed=1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = new_model(cfg, train, spiking=True, seed=0)
    return cfg, train, plain_train, test, teacher, student


def epoch_ours(cfg, model, teacher, train, test, root: Path, tag: str) -> tuple[float, float]:
    """One epoch of ``fit``; (epoch_train_s, whole call s)."""
    stage_dir = Path(tempfile.mkdtemp(prefix=tag, dir=root))
    stage = Stage("student", model, cfg.timesteps, "kd", 1, teacher)
    t0 = time.perf_counter()
    done = fit(stage, train, test, cfg, stage_dir, DistEnv())
    return done["epoch_train_s"], time.perf_counter() - t0


def epoch_plain(cfg, model, opt, teacher, x_all, y_all, loss_cfg, g) -> float:
    """One epoch of the hand-written loop; seconds."""
    n, b, t = x_all.shape[0], cfg.batch_size, cfg.timesteps
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(n, generator=g)
    for step in range(n // b):
        idx = perm[step * b:(step + 1) * b]
        x, y = x_all[idx], y_all[idx]
        with torch.no_grad():
            zt = teacher(x.unsqueeze(0))[0]
        out = model(x.unsqueeze(0).repeat(t, 1, 1, 1, 1))
        loss = LOSSES["kd"](LossInputs(out, y, zt), loss_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        functional.reset_net(model)
    return time.perf_counter() - t0


class Runner:
    """The three variants on their own copies of the same initial student."""

    def __init__(self, limit_train, batch_size, timesteps, root: Path):
        self.cfg, self.train, self.plain_train, self.test, self.teacher, student = setup(
            limit_train, batch_size, timesteps)
        self.models = {v: copy.deepcopy(student) for v in VARIANTS}
        c = self.cfg
        self.opt = torch.optim.SGD(self.models["plain"].parameters(), lr=c.lr, momentum=c.momentum,
                                   weight_decay=c.weight_decay)
        self.x_all, self.y_all = self.plain_train.batch(torch.arange(len(self.plain_train)))
        self.loss_cfg = c.loss_config()
        self.g = torch.Generator().manual_seed(0)
        self.root = root
        self.images_per_epoch = (len(self.train) // c.batch_size) * c.batch_size

    def epoch(self, variant: str) -> tuple[float, float | None]:
        if variant == "plain":
            return epoch_plain(self.cfg, self.models["plain"], self.opt, self.teacher, self.x_all,
                               self.y_all, self.loss_cfg, self.g), None
        data = self.plain_train if variant == "ours" else self.train
        return epoch_ours(self.cfg, self.models[variant], self.teacher, data, self.test, self.root,
                          variant.replace("+", "_"))


def measure_memory(variant: str, args) -> dict:
    """Peak RSS growth of ``variant`` trained alone in a fresh process."""
    argv = ["--variant", variant, "--reps", str(args.mem_epochs), "--batch-size", str(args.batch_size),
            "--timesteps", str(args.timesteps)]
    if args.limit_train:
        argv += ["--limit-train", str(args.limit_train)]
    return in_fresh_process(__file__, argv, threads=torch.get_num_threads())


def bench(reps: int = 7, batch_size: int = 128, timesteps: int = 4, limit_train: int | None = None,
          memory: bool = True, mem_epochs: int = 2) -> dict:
    with tempfile.TemporaryDirectory(prefix="train_overhead_") as tmp:
        r = Runner(limit_train, batch_size, timesteps, Path(tmp))
        for v in VARIANTS:  # warm-up
            r.epoch(v)
        times = {v: [] for v in VARIANTS}
        calls = {v: [] for v in VARIANTS if v != "plain"}
        load_before = os.getloadavg()
        for i in range(reps):
            order = VARIANTS if i % 2 == 0 else VARIANTS[::-1]
            for v in order:
                s, call = r.epoch(v)
                times[v].append(s)
                if call is not None:
                    calls[v].append(call)
        n = r.images_per_epoch
    med = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "data": "digits", "train_images_per_epoch": n, "batch_size": batch_size, "timesteps": timesteps,
        "method": "kd", "reps": reps, "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "epoch_s_median": med,
        "images_per_s": {v: n / s for v, s in med.items()},
        "ours_call_s_median": {v: statistics.median(c) for v, c in calls.items()},
        "ratio_time_ours_over_plain": med["ours"] / med["plain"],
        "ratio_time_ours_aug_over_plain": med["ours+aug"] / med["plain"],
    }
    if memory:
        ns = argparse.Namespace(mem_epochs=mem_epochs, batch_size=batch_size, timesteps=timesteps,
                                limit_train=limit_train)
        result["memory"] = {v: measure_memory(v, ns) for v in VARIANTS}
        result["memory_note"] = ("fresh subprocess per variant: VmRSS after setup, VmHWM (reset "
                                 f"after setup) over {mem_epochs} epochs; delta = peak RSS added by training")
    return result


def child(variant: str, args) -> None:
    with tempfile.TemporaryDirectory(prefix="train_overhead_mem_") as tmp:
        r = Runner(args.limit_train, args.batch_size, args.timesteps, Path(tmp))

        def train() -> None:
            for _ in range(args.reps):
                r.epoch(variant)

        print(json.dumps({"variant": variant, **peak_memory(train)}))


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=7, help="timed epochs per variant")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--limit-train", type=int, help="fewer training images (smoke tests)")
    p.add_argument("--mem-epochs", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant subprocesses")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # memory child
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.variant:
        child(args.variant, args)
        return None
    r = bench(args.reps, args.batch_size, args.timesteps, args.limit_train, not args.no_memory,
              args.mem_epochs)
    print(f"digits, {r['train_images_per_epoch']} images/epoch, batch {r['batch_size']}, "
          f"T={r['timesteps']}, kd; torch {torch.__version__}, {r['torch_threads']} threads, "
          f"load {r['loadavg_before'][0]:.2f}")
    print(f"{'variant':>9} {'epoch s':>8} {'images/s':>9} {'peak RSS +MB':>13}")
    for v in VARIANTS:
        mem = r.get("memory", {}).get(v, {}).get("delta_mb")
        print(f"{v:>9} {r['epoch_s_median'][v]:>8.3f} {r['images_per_s'][v]:>9.0f} "
              f"{'-' if mem is None else f'{mem:.1f}':>13}")
    print(f"ours / plain epoch time: x{r['ratio_time_ours_over_plain']:.3f} "
          f"(with augmentation x{r['ratio_time_ours_aug_over_plain']:.3f}); whole fit call "
          f"(+evaluation, checkpoint) {r['ours_call_s_median']['ours']:.3f} s")
    if args.json:
        write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
