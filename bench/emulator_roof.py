"""Benchmark: the emulator against a float32 forward and the float32 convolution roof.

On a paper-scale student (default ResNet-20, 3×32×32, T=4; ``paper_runs.make_run``), the same
``--images`` direct-encoded test images, interleaved ``--reps`` times (medians):

- ``emulator``          ``hw.emulator.emulate`` as ``simulate`` runs it (``hw.kernels`` fast path);
- ``emulator-general``  ``emulate(fast=False)``: the general int64/float64 path (the path before
                        issue 19); both give the same integers (checked here on every rep);
- ``float32-forward``   the float student (SpikingJelly, ``Classifier.forward``) in float32;
- ``roof``              only the network's convolutions and matrix products, float32, on random
                        0/1 inputs of the emulator's shapes (``[T·B, C, H, W]``): what any exact
                        float32 implementation of the integer network must at least spend.

Dense-equivalent GMAC/s = the ANN twin's MACs per image per step (``dense_ops_per_sample``,
padding taps included) × T × images / seconds, for every variant; the emulator's share of the
roof is its GMAC/s over the roof's. ``--machine-roof`` adds one large 3×3 convolution
(128→128 channels, 32×32, batch 64) as the machine's float32 convolution peak.

Run: ``python bench/emulator_roof.py [--model resnet20] [--images 64] [--reps 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from htakl_deploy.atomic import write_json
from paper_runs import add_firing_flag, data_root, make_run


def roof_fn(plan, x_int: np.ndarray):
    """A closure running every link's float32 product on random 0/1 (pixels for the input) data."""
    from htakl_deploy.hw import kernels

    g = torch.Generator().manual_seed(0)
    t, b = x_int.shape[:2]
    jobs = []
    for link in plan.links:
        src_shape = plan.input_shape if link.src == "input" else plan.populations[link.src].shape
        kind, w = kernels._weights(link, src_shape, torch.device("cpu"))
        x = (torch.from_numpy(x_int).float() if link.src == "input"
             else (torch.rand(t, b, *src_shape, generator=g) < 0.1).float())
        jobs.append((link, kind, w, x))

    def run():
        with torch.no_grad():
            for link, kind, w, x in jobs:
                if kind == "conv":
                    c = link.conv
                    torch.nn.functional.conv2d(x.reshape(t * b, *x.shape[2:]), w, None, c["stride"], c["padding"],
                                               c["dilation"], c["groups"])
                elif kind == "dense":
                    x.reshape(t * b, -1) @ w
                else:
                    w @ x.reshape(t * b, -1).numpy().T
    return run


def machine_roof(reps: int) -> float:
    x = (torch.rand(64, 128, 32, 32) < 0.1).float()
    w = torch.randn(128, 128, 3, 3)
    times = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, w, None, 1, 1)
            times.append(time.perf_counter() - t0)
    return 64 * 128 * 32 * 32 * 128 * 9 / statistics.median(times[1:]) / 1e9


def bench(model: str = "resnet20", images: int = 64, reps: int = 3, root: str | None = None,
          with_machine_roof: bool = True, firing: float | None = 0.1) -> dict:
    from htakl_deploy.distill.models import build_model
    from htakl_deploy.export.quantize import quantize_input
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.simulate import load_samples, read_artefact, resolve_artefact

    root = root or os.path.join(tempfile.gettempdir(), "htakl_bench")
    run_dir = make_run(model, max(images, 2), root, firing)
    plan = read_artefact(resolve_artefact(run_dir))
    x_tb, _ = load_samples(plan, images, 4, data_root(run_dir))
    t_steps = x_tb.shape[0]
    student = build_model(**plan.metadata["model_spec"]).eval()
    macs = student.dense_ops_per_sample()["total"]
    x_f32 = torch.from_numpy(x_tb).float()
    x_int = quantize_input(x_tb, plan.input_scale)
    variants = {
        "emulator": lambda: emulate(plan, x_tb, batch_size=images),
        "emulator-general": lambda: emulate(plan, x_tb, batch_size=images, fast=False),
        "float32-forward": lambda: student(x_f32),
        "roof": roof_fn(plan, x_int),
    }
    emulate(plan, x_tb[:, :2])  # numba compile / cache load, first-call allocations
    times = {k: [] for k in variants}
    identical = True
    load_before = os.getloadavg()
    for i in range(reps):
        order = list(variants) if i % 2 == 0 else list(variants)[::-1]
        out = {}
        for k in order:
            t0 = time.perf_counter()
            with torch.no_grad():
                out[k] = variants[k]()
            times[k].append(time.perf_counter() - t0)
        a, b = out["emulator"], out["emulator-general"]
        identical &= all(np.array_equal(a.spikes[n], b.spikes[n]) for n in a.spikes) and \
            np.array_equal(a.readout_u, b.readout_u)
    rows = {}
    for k, ts in times.items():
        s = statistics.median(ts)
        rows[k] = {"s": s, "times_s": ts, "images_per_s": images / s, "gmac_per_s": macs * t_steps * images / s / 1e9}
    result = {"model": model, "images": images, "timesteps": t_steps, "reps": reps, "dense_macs_per_step": macs,
              "rows": rows, "identical_integers": bool(identical),
              "firing_rate": float(np.mean([s.mean() for s in out["emulator"].spikes.values()])),
              "emulator_share_of_roof": rows["emulator"]["gmac_per_s"] / rows["roof"]["gmac_per_s"],
              "emulator_vs_float32_forward": rows["emulator"]["s"] / rows["float32-forward"]["s"],
              "general_vs_emulator": rows["emulator-general"]["s"] / rows["emulator"]["s"],
              "threads": torch.get_num_threads(), "load_before": load_before}
    if with_machine_roof:
        result["machine_roof_gmac_per_s"] = machine_roof(reps)
    result["load_after"] = os.getloadavg()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--root", help="where the generated run is kept (default: $TMPDIR/htakl_bench)")
    ap.add_argument("--no-machine-roof", dest="machine_roof", action="store_false")
    add_firing_flag(ap)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    r = bench(args.model, args.images, args.reps, args.root, args.machine_roof, args.firing)
    for k, row in r["rows"].items():
        print(f"{k:<17} {row['s']:8.2f} s  {row['images_per_s']:7.2f} images/s  {row['gmac_per_s']:6.2f} GMAC/s")
    print(f"emulator = {100 * r['emulator_share_of_roof']:.0f} % of the float32 roof, "
          f"{r['emulator_vs_float32_forward']:.2f}x the float32 forward's time; general path "
          f"{r['general_vs_emulator']:.2f}x slower; identical integers: {r['identical_integers']}")
    if "machine_roof_gmac_per_s" in r:
        print(f"machine roof (one 128->128 3x3 conv, 32x32, batch 64): {r['machine_roof_gmac_per_s']:.1f} GMAC/s")
    print(f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}, {r['threads']} threads")
    if args.json:
        write_json(args.json, r)


if __name__ == "__main__":
    main()
