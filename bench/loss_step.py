"""Benchmark: one training step with HTA-KL vs KD on the same model and batch.

Both losses run side by side in one process, interleaved step by step so that machine noise hits
both alike; the median step time of each and their ratio are printed (target: HTA-KL ≤ 1.05 × KD).
Run: ``python bench/loss_step.py [--steps 40] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from htakl_deploy.distill.data import load_dataset
from htakl_deploy.distill.losses import LossConfig, LossInputs
from htakl_deploy.distill.methods import LOSSES
from htakl_deploy.distill.models import build_model


def time_step(model, opt, x_tb, y, zt, method, cfg) -> float:
    t0 = time.perf_counter()
    out = model(x_tb)
    loss = LOSSES[method](LossInputs(out, y, zt), cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def time_loss_only(out, y, zt, method, cfg, reps=200) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        LOSSES[method](LossInputs(out, y, zt), cfg)
    return (time.perf_counter() - t0) / reps


def bench(in_shape, num_classes, batch, timesteps, steps, images=None):
    torch.manual_seed(0)
    model = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=True)
    teacher = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=False).eval()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = images if images is not None else torch.rand(batch, *in_shape)
    y = torch.randint(0, num_classes, (batch,))
    with torch.no_grad():
        zt = teacher(x.unsqueeze(0))[0]
    x_tb = x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)
    cfg = LossConfig()
    times = {"kd": [], "hta-kl": []}
    for m in times:  # warm-up
        for _ in range(3):
            time_step(model, opt, x_tb, y, zt, m, cfg)
    for i in range(steps):  # alternate the order so neither method always runs first
        for m in (("kd", "hta-kl") if i % 2 == 0 else ("hta-kl", "kd")):
            times[m].append(time_step(model, opt, x_tb, y, zt, m, cfg))
    with torch.no_grad():
        out = model(x_tb)
    med = {m: statistics.median(v) for m, v in times.items()}
    loss_only = {m: time_loss_only(out, y, zt, m, cfg) for m in times}
    return {
        "in_shape": list(in_shape), "batch": batch, "timesteps": timesteps, "steps": steps,
        "step_s_median": med, "step_ratio_hta_over_kd": med["hta-kl"] / med["kd"],
        "loss_only_s": loss_only, "loss_only_ratio": loss_only["hta-kl"] / loss_only["kd"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    digits, _ = load_dataset("digits")
    idx = torch.arange(128)
    cases = [
        bench(digits.in_shape, 10, 128, 4, args.steps, images=digits.batch(idx)[0]),
        bench((1, 28, 28), 10, 128, 4, max(args.steps // 2, 5)),
        bench((1, 8, 8), 1000, 128, 4, args.steps),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'input':>12} {'C':>5} {'kd step ms':>11} {'hta-kl step ms':>15} {'ratio':>7} "
          f"{'loss-only ratio':>16}")
    for c, C in zip(cases, (10, 10, 1000)):
        print(f"{str(tuple(c['in_shape'])):>12} {C:>5} {1e3 * c['step_s_median']['kd']:>11.2f} "
              f"{1e3 * c['step_s_median']['hta-kl']:>15.2f} {c['step_ratio_hta_over_kd']:>7.3f} "
              f"{c['loss_only_ratio']:>16.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(cases, fh, indent=2)


if __name__ == "__main__":
    main()
