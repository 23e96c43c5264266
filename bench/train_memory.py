"""Benchmark: training peak memory and step time with and without ``--checkpoint-activations``.

One HTA-KL distillation step as ``distill.train`` takes it — frozen ANN teacher forward at T=1
under ``no_grad``, SNN student forward over T steps, the ``hta-kl`` loss, backward, SGD step —
on random 3×32×32 images (memory and time do not depend on pixel values), for each variant
``(model, batch, checkpointing)`` in a fresh process (``memory.in_fresh_process``): resident
memory after building the models, then the kernel's peak (``VmHWM``, reset after setup) during
``--steps`` steps; the step time is the median of the steps after the first.

Variants default to the issue's case: ResNet-19, T=4, batch 32 with and without checkpointing
(side by side: the memory ratio and step-time cost), and batch 128 (the paper's) with it only —
without it, batch 128 extrapolates to ≈ 33 GB, beyond a 24 GB machine.

Run: ``python bench/train_memory.py [--variants resnet19:32:off,resnet19:32:on,resnet19:128:on]
[--steps 2] [--rows rows.jsonl] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory

DEFAULT = "resnet19:32:off,resnet19:32:on,resnet19:128:on"


def one_variant(model: str, batch: int, ckpt: bool, steps: int, timesteps: int) -> dict:
    from htakl_deploy.distill.losses import LossInputs
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.methods import LOSSES
    from htakl_deploy.distill.models import build_model

    cfg = DistillConfig(model=model, timesteps=timesteps, batch_size=batch, method="hta-kl",
                        checkpoint_activations=ckpt)
    torch.manual_seed(0)
    teacher = build_model(model, in_shape=(3, 32, 32), num_classes=100, spiking=False).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = build_model(model, in_shape=(3, 32, 32), num_classes=100, spiking=True).train()
    student.set_activation_checkpointing(ckpt)
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss_cfg = cfg.loss_config()
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 100, (batch,))
    times: list[float] = []

    def run():
        for _ in range(steps):
            t0 = time.perf_counter()
            with torch.no_grad():
                zt = teacher(x.unsqueeze(0))[0]
            out = student(x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1))
            loss = LOSSES["hta-kl"](LossInputs(out, y, zt), loss_cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)

    mem = peak_memory(run)
    return {"model": model, "batch": batch, "timesteps": timesteps, "checkpoint_activations": ckpt,
            "steps": steps, "step_s": statistics.median(times[1:] or times), "step_times_s": times,
            "peak_mb": mem["peak_mb"], "rss_before_mb": mem["rss_before_mb"], "delta_mb": mem["delta_mb"],
            "how": mem["how"], "threads": torch.get_num_threads()}


def bench(variants: str = DEFAULT, steps: int = 2, timesteps: int = 4, rows_file: str | None = None) -> dict:
    """Each variant in a fresh process; with ``rows_file`` every finished variant's row is appended
    there at once (JSON lines) and variants already in it are not run again (a long run that is
    stopped — or a variant that needs more memory than is free now — can be continued later)."""
    rows = []
    done = {}
    if rows_file and os.path.exists(rows_file):
        for line in open(rows_file, encoding="utf-8"):
            r = json.loads(line)
            done[f"{r['model']}:{r['batch']}:{'on' if r['checkpoint_activations'] else 'off'}"] = r
    load_before = os.getloadavg()
    for spec in variants.split(","):
        if spec in done:
            rows.append(done[spec])
            continue
        rows.append(in_fresh_process(__file__, ["--variant", spec, "--steps", str(steps),
                                                "--timesteps", str(timesteps)], threads=torch.get_num_threads()))
        rows[-1]["load_when_done"] = os.getloadavg()
        if rows_file:
            with open(rows_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")
    by = {(r["model"], r["batch"], r["checkpoint_activations"]): r for r in rows}
    ratios = []
    for (model, batch, ckpt), r in by.items():
        off = by.get((model, batch, False))
        if ckpt and off:
            ratios.append({"model": model, "batch": batch, "memory_ratio": r["delta_mb"] / off["delta_mb"],
                           "step_time_ratio": r["step_s"] / off["step_s"]})
    return {"rows": rows, "ratios": ratios, "load_before": load_before, "load_after": os.getloadavg(),
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=DEFAULT, help="model:batch:on|off, comma-separated")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--rows", metavar="FILE", help="JSON lines of finished variants: appended to, reused")
    args = ap.parse_args()
    if args.variant:
        model, batch, ckpt = args.variant.split(":")
        print(json.dumps(one_variant(model, int(batch), ckpt == "on", args.steps, args.timesteps)))
        return
    result = bench(args.variants, args.steps, args.timesteps, args.rows)
    for r in result["rows"]:
        print(f"{r['model']} batch {r['batch']} T={r['timesteps']} checkpointing "
              f"{'on ' if r['checkpoint_activations'] else 'off'}: peak {r['peak_mb'] / 1024:.2f} GB "
              f"(+{r['delta_mb'] / 1024:.2f} GB over setup), step {r['step_s']:.1f} s")
    for q in result["ratios"]:
        print(f"{q['model']} batch {q['batch']}: checkpointing memory x{q['memory_ratio']:.2f}, "
              f"step time x{q['step_time_ratio']:.2f}")
    print(f"load before {result['load_before'][0]:.1f}, after {result['load_after'][0]:.1f}; "
          f"{result['threads']} threads")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
