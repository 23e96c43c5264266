"""Benchmark: one training step with HTA-KL vs KD on the same model and batch.

Both losses run side by side in one process, interleaved step by step so that machine noise hits
both alike; the median step time of each and their ratio are printed (target: HTA-KL ≤ 1.05 × KD).
Three cases: the digits convnet on 128 real digits images (8×8, 10 classes), the convnet on 28×28
random images (10 classes) and the 8×8 convnet with 1000 classes.

Peak memory: each (case, loss) again in a fresh subprocess (``--child``): the same setup (data,
student, teacher, optimiser), resident memory after it, then the kernel's peak (``VmHWM``, reset
after setup; ``htakl_deploy.memory.peak_memory``) over ``--mem-steps`` training steps with that
loss alone; the difference is the peak memory the training steps add.

Run: ``python bench/loss_step.py [--steps 40] [--mem-steps 5] [--no-memory] [--cases digits ...]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from types import SimpleNamespace

import torch

from htakl_deploy.distill.data import load_dataset
from htakl_deploy.distill.losses import LossConfig, LossInputs
from htakl_deploy.distill.methods import LOSSES
from htakl_deploy.distill.models import build_model
from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory

METHODS = ("kd", "hta-kl")
# name → (label, in_shape (None: the digits images'), classes, batch, T, timed steps from --steps)
CASES = {
    "digits": ("digits convnet, 8×8 digits images, 10 classes", None, 10, 128, 4, lambda s: s),
    "28x28": ("convnet, 28×28 random images, 10 classes", (1, 28, 28), 10, 128, 4, lambda s: max(s // 2, 5)),
    "1000-classes": ("8×8 convnet, 1000 classes", (1, 8, 8), 1000, 128, 4, lambda s: s),
}


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


def setup(in_shape, num_classes, batch, timesteps, images=None) -> SimpleNamespace:
    """Student, frozen teacher, optimiser, batch ``x_tb`` ``[T, B, ...]``, labels and teacher logits."""
    torch.manual_seed(0)
    model = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=True)
    teacher = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=False).eval()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = images if images is not None else torch.rand(batch, *in_shape)
    y = torch.randint(0, num_classes, (batch,))
    with torch.no_grad():
        zt = teacher(x.unsqueeze(0))[0]
    x_tb = x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)
    return SimpleNamespace(model=model, opt=opt, x_tb=x_tb, y=y, zt=zt, cfg=LossConfig())


def bench(in_shape, num_classes, batch, timesteps, steps, images=None):
    s = setup(in_shape, num_classes, batch, timesteps, images)
    model, opt, x_tb, y, zt, cfg = s.model, s.opt, s.x_tb, s.y, s.zt, s.cfg
    times = {"kd": [], "hta-kl": []}
    for m in times:  # warm-up
        for _ in range(3):
            time_step(model, opt, x_tb, y, zt, m, cfg)
    load_before = os.getloadavg()
    for i in range(steps):  # alternate the order so neither method always runs first
        for m in (("kd", "hta-kl") if i % 2 == 0 else ("hta-kl", "kd")):
            times[m].append(time_step(model, opt, x_tb, y, zt, m, cfg))
    load_after = os.getloadavg()
    with torch.no_grad():
        out = model(x_tb)
    med = {m: statistics.median(v) for m, v in times.items()}
    loss_only = {m: time_loss_only(out, y, zt, m, cfg) for m in times}
    return {
        "in_shape": list(in_shape), "batch": batch, "timesteps": timesteps, "steps": steps,
        "step_s_median": med, "step_ratio_hta_over_kd": med["hta-kl"] / med["kd"],
        "loss_only_s": loss_only, "loss_only_ratio": loss_only["hta-kl"] / loss_only["kd"],
        "num_classes": num_classes, "torch_threads": torch.get_num_threads(),
        "images_per_s": {m: batch / t for m, t in med.items()},
        "loadavg_before": load_before, "loadavg_after": load_after,
    }


def case_args(name: str, steps: int, digits=None) -> tuple:
    """``bench``/``setup`` arguments of a case: (in_shape, classes, batch, T, steps, images)."""
    _, in_shape, num_classes, batch, timesteps, n_steps = CASES[name]
    images = None
    if in_shape is None:
        digits = digits if digits is not None else load_dataset("digits")[0]
        in_shape, images = digits.in_shape, digits.batch(torch.arange(batch))[0]
    return in_shape, num_classes, batch, timesteps, n_steps(steps), images


def measure_memory(case: str, method: str, mem_steps: int) -> dict:
    """Peak RSS growth of ``mem_steps`` training steps of ``method`` on ``case``, in a fresh process."""
    return in_fresh_process(__file__, ["--child", method, "--case", case, "--mem-steps", str(mem_steps)],
                            threads=torch.get_num_threads())


def child(method: str, case: str, mem_steps: int) -> dict:
    in_shape, num_classes, batch, timesteps, _, images = case_args(case, 0)
    s = setup(in_shape, num_classes, batch, timesteps, images)

    def train() -> None:
        for _ in range(mem_steps):
            time_step(s.model, s.opt, s.x_tb, s.y, s.zt, method, s.cfg)

    r = {"case": case, "method": method, "steps": mem_steps, **peak_memory(train)}
    print(json.dumps(r))
    return r


def main(argv: list[str] | None = None) -> list[dict] | dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--mem-steps", type=int, default=5, help="training steps per memory subprocess")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-(case, loss) subprocesses")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                    help="which cases to run (default: all three)")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)  # memory child: this loss
    ap.add_argument("--case", choices=list(CASES), default="digits", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.case, args.mem_steps)
    digits, _ = load_dataset("digits")
    cases = []
    for name in args.cases:
        c = bench(*case_args(name, args.steps, digits))
        cases.append({"case": name, "label": CASES[name][0], **c})
    if not args.no_memory:  # after all timing, one subprocess at a time
        for c in cases:
            c["memory"] = {m: measure_memory(c["case"], m, args.mem_steps) for m in METHODS}
            c["memory_note"] = (f"fresh subprocess per case and loss: VmRSS after setup (data, student, "
                                f"teacher, optimiser), VmHWM (reset after setup) over {args.mem_steps} "
                                "training steps; delta = peak RSS added by the steps")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {cases[0]['loadavg_before'][0]:.2f}")
    print(f"{'input':>12} {'C':>5} {'kd step ms':>11} {'hta-kl step ms':>15} {'ratio':>7} "
          f"{'loss-only ratio':>16} {'kd +MB':>7} {'hta-kl +MB':>11}")
    for c in cases:
        mem = {m: c.get("memory", {}).get(m, {}).get("delta_mb") for m in METHODS}
        mem = {m: "-" if v is None else f"{v:.1f}" for m, v in mem.items()}
        print(f"{str(tuple(c['in_shape'])):>12} {c['num_classes']:>5} {1e3 * c['step_s_median']['kd']:>11.2f} "
              f"{1e3 * c['step_s_median']['hta-kl']:>15.2f} {c['step_ratio_hta_over_kd']:>7.3f} "
              f"{c['loss_only_ratio']:>16.2f} {mem['kd']:>7} {mem['hta-kl']:>11}")
    if args.json:
        write_json(args.json, cases)
    return cases


if __name__ == "__main__":
    main()
