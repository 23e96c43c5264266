"""Benchmark: exported students at paper scale (ResNet-20, ResNet-19, VGG-16) through Lava ``fixed_pt``.

For each run directory (``htakl-deploy run`` / ``export --target lava``): its first ``--samples``
test images through ``hw.lava_net.run_lava`` (the path ``simulate --backend lava-fixed_pt`` and
``export --lava-check`` take) in a fresh process each, one run directory after the other, and
the same images through the emulator. Reports the phases (build the process graph, start = Lava
compiles, forks and runs the first step, mean time per further step, read-back of the
recordings), samples per Lava step, the OS processes Lava forked, the peak memory of the whole
process tree (measured as in ``bench/emulator_vs_lava.py``: the process's ``VmHWM`` + each
child's peak private memory), and the share of identical spikes (every neuron and step of every
layer) and whether the readout is identical.

Run: ``python bench/lava_scale.py RUN_DIR [RUN_DIR ...] [--samples 2] [--json out.json]``.
Memory: one run directory at a time; a ResNet-20 needs a few GB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


VARIANTS = ("worker", "in-process")  # Lava in its torch-free worker process (the default) or in this one


def child(run_dir: str, samples: int, variant: str = "worker", data_root: str | None = None) -> dict:
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.simulate import spike_agreement

    evl = _bench_module("emulator_vs_lava")
    path, plan, x_tb = evl.setup(run_dir, samples, data_root)
    timings: dict = {}
    out: dict = {}

    def run() -> None:
        t0 = time.perf_counter()
        out["lava"] = run_lava(plan, x_tb, backend="fixed_pt", timings=timings, worker=variant == "worker")
        out["lava_s"] = time.perf_counter() - t0

    with evl.ChildPoller() as poll:
        parent = peak_memory(run)
    kids = poll.children.values()
    t0 = time.perf_counter()
    emu = emulate(plan, x_tb)
    emu_s = time.perf_counter() - t0
    lava = out["lava"]
    r = {
        "artefact": str(path), "model": plan.metadata.get("config", {}).get("model"), "variant": variant,
        "samples": int(x_tb.shape[1]), "timesteps": int(x_tb.shape[0]),
        "populations": len(plan.populations), "links": len(plan.links),
        "neurons": int(sum(p.size for p in plan.populations.values())),
        "lava_s": out["lava_s"], "phases": timings, "emulator_s": emu_s,
        "peak_tree_mb": parent["peak_mb"] + sum(c["private_peak_mb"] for c in kids),
        "parent_peak_mb": parent["peak_mb"], "children": len(kids),
        "tree_pss_peak_mb": poll.tree_pss_peak_mb,
        "spike_agreement": spike_agreement(lava.spikes, emu.spikes)["all"],
        "readout_identical": bool(np.array_equal(lava.readout_u, emu.readout_u)),
        "spikes": int(sum(int(s.sum()) for s in emu.spikes.values())),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(r))
    return r


def row(r: dict) -> str:
    ph = r["phases"]
    same = "100 %" if r["spike_agreement"] == 1.0 else f"{100 * r['spike_agreement']:.4f} %"
    return (f"| {r['model']} ({r.get('variant', 'in-process')}) | {r['samples']} (T={r['timesteps']}, {ph['copies']} per step) | {ph['build_s']:.1f} | "
            f"{ph['start_s']:.1f} | {ph['step_s']:.2f} × {ph['steps']} | {ph['readback_s']:.3f} | {r['lava_s']:.0f} | "
            f"{r['peak_tree_mb'] / 1024:.2f} | {r['children'] + 1} | {same}"
            f"{'' if r['readout_identical'] else ' (readout differs)'} |")


HEADER = ("| model | samples | build (s) | start (s) | per step (s) × steps | read-back (s) | total (s) | "
          "peak tree memory (GB) | OS processes | spikes identical to the emulator |\n|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run directories (or export/ folders, or student.lava.npz files)")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--variants", default="worker",
                   help=f"comma-separated, run one after the other per run directory: {', '.join(VARIANTS)}")
    p.add_argument("--data-root", help="the data folder (a run's saved config never names one)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants):
        p.error(f"--variants: expected some of {VARIANTS}, got {args.variants!r}")
    if args.child:
        return [child(args.run_dirs[0], args.samples, variants[0], args.data_root)]
    results = []
    for run_dir in args.run_dirs:
        for variant in variants:
            r = in_fresh_process(__file__, [run_dir, "--child", "--samples", str(args.samples), "--variants", variant,
                                                 *(["--data-root", args.data_root] if args.data_root else [])])
            results.append(r)
            print(row(r), flush=True)
    print(HEADER)
    for r in results:
        print(row(r))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
