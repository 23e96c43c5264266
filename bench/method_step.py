"""Benchmark: one training step of every method, relative to ``kd``, on the same model and batch.

The step is the loop's own (``methods.inputs.loss_inputs``, as the training loop calls it) plus backward and SGD
(over the student's parameters and, for a method with a trainable part such as BKDSNN's generator,
that module's, as in the loop); methods are interleaved step by step (rotating order) so machine
noise hits all alike, and the median step time and its ratio to ``kd`` are printed. The teacher's
backward passes per step are counted with hooks (SAMD's Grad-CAM: one, through the layers after
the tapped stage only). Run: ``python bench/method_step.py [--steps 20] [--batch 128] [--json F]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from htakl_deploy.atomic import write_json
from htakl_deploy.distill.data import load_dataset
from htakl_deploy.distill.losses import LossConfig
from htakl_deploy.distill.methods import LOSSES, METHOD_NEEDS
from htakl_deploy.distill.methods.inputs import loss_inputs, method_module, method_tap
from htakl_deploy.distill.models import build_model


def make_step(model, teacher, x, y, timesteps, method, cfg):
    needs = METHOD_NEEDS.get(method)
    tap = method_tap(model, method, cfg)
    module = method_module(model, method, cfg, tap, seed=0)
    params = list(model.parameters()) + (list(module.parameters()) if module is not None else [])
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    x_tb = x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1)

    def step() -> float:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        inputs = loss_inputs(model, model, teacher, needs, tap, x_tb, x, y, g, "label", module=module)
        loss = LOSSES[method](inputs, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def count_teacher_backwards(teacher, step) -> dict[str, int]:
    """Backward calls of the teacher's first and last layer during one step."""
    calls = {"first_stage": 0, "classifier": 0}
    first, last = teacher.tap_names[0], list(teacher._modules)[-1]
    mods = dict(teacher.named_modules())
    hooks = [mods[first].register_full_backward_hook(lambda *a: calls.__setitem__("first_stage", calls["first_stage"] + 1)),
             mods[last].register_full_backward_hook(lambda *a: calls.__setitem__("classifier", calls["classifier"] + 1))]
    step()
    for h in hooks:
        h.remove()
    return calls


def bench(x, y, num_classes, timesteps, steps, methods):
    torch.manual_seed(0)
    in_shape = tuple(x.shape[1:])
    model = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=True)
    teacher = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=False).eval()
    teacher.requires_grad_(False)
    cfg = LossConfig()
    steps_by = {m: make_step(model, teacher, x, y, timesteps, m, cfg) for m in methods}
    backwards = {m: count_teacher_backwards(teacher, steps_by[m]) for m in methods}
    for fn in steps_by.values():  # warm-up
        fn()
    times = {m: [] for m in methods}
    for i in range(steps):
        k = i % len(methods)
        for m in methods[k:] + methods[:k]:
            times[m].append(steps_by[m]())
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"in_shape": list(in_shape), "batch": len(x), "timesteps": timesteps, "steps": steps,
            "step_s_median": med, "ratio_to_kd": {m: med[m] / med["kd"] for m in methods},
            "teacher_backwards_per_step": backwards}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    digits, _ = load_dataset("digits")
    x, y = digits.batch(torch.arange(args.batch))
    methods = ["kd"] + sorted(m for m in LOSSES if m != "kd")
    load_before = list(os.getloadavg())
    r = bench(x, y, digits.num_classes, args.timesteps, args.steps, methods)
    r.update(loadavg_before=load_before, loadavg_after=list(os.getloadavg()),
             torch_threads=torch.get_num_threads(), torch=torch.__version__)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits {tuple(r['in_shape'])}, "
          f"batch {r['batch']}, T={r['timesteps']}, {r['steps']} steps")
    print(f"{'method':>8} {'step ms':>8} {'/ kd':>6} {'teacher bwd (first stage, fc)':>30}")
    for m in methods:
        b = r["teacher_backwards_per_step"][m]
        print(f"{m:>8} {1e3 * r['step_s_median'][m]:>8.2f} {r['ratio_to_kd'][m]:>6.2f} "
              f"{b['first_stage']:>19}, {b['classifier']}")
    if args.json:
        write_json(args.json, r)


if __name__ == "__main__":
    main()
