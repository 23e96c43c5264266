"""Benchmark: the paper's CIFAR students (ResNet-20, VGG-16, ResNet-19) on Loihi 2, before and after
the calibration, and ResNet-19 made to fit.

For each model, ``paper_runs.make_run(model, images, root, firing)`` (a student whose layers fire
at a trained network's rates, 10 % by default) is mapped:

- **before**: Loihi 2 as modelled before Intel's compiles were read (Loihi 1's storage formats and
  axon limits at Loihi 2's 8,192 neurons per core: every synapse stored, 4,096 input axons);
- **after**: the calibrated target (hw/targets/loihi2.toml), as Lava's compiler partitions
  (``compiler``) and with the fewest cores our model allows (``packed``); a network with a
  fan-in no core holds is rewritten first (``hw.map_transform.deployable``: ResNet-19's fc1).

With ``--images N`` test images through the emulator: each plan's spikes (the rewritten plan's
decisions against the untransformed plan's, every readout value compared) and the latency and
energy per inference with the range the calibration leaves. With ``--lava K`` the rewritten plan
runs K images in Lava ``fixed_pt`` too (ResNet-19: half an hour for one image on a loaded machine: run it under
``flock /work/coord/heavy.lock``): every spike and relay payload against the emulator.

Run: ``python bench/loihi2_students.py [--models resnet20 vgg16 resnet19] [--images 2] [--lava 1]
[--root /tmp/paper-runs] [--json bench/results/loihi2_students.json]``; prints the table for
docs/MAPPING.md (``--md`` rewrites its ``<!-- loihi2_students -->`` section).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from paper_runs import add_firing_flag, data_root, make_run  # noqa: E402

from htakl_deploy.atomic import write_json  # noqa: E402
from htakl_deploy.errors import UserError  # noqa: E402
from htakl_deploy.hw.target import load_target  # noqa: E402

MARK = "<!-- loihi2_students -->"


def before_target():
    """Loihi 2 as modelled before the calibration: Loihi 1's formats at 8,192 neurons per core."""
    t1 = load_target("loihi1")
    return replace(t1, name="loihi2-before", neurons_per_core=8192, chips_per_board=8)


def recording(plan, res):
    from htakl_deploy.energy.spikefile import SpikeRecording

    layers = {n: s.astype(np.uint8) for n, s in res.spikes.items() if plan.populations[n].neuron == "lif"}
    x = np.zeros((res.readout_u.shape[0], res.readout_u.shape[1], 1, 1, 1), np.float32)
    return SpikeRecording(layers, x, attrs={"backend": "emulator"})


def one(model: str, root: str, firing, images: int, lava: int) -> dict:
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.map_estimate import estimate
    from htakl_deploy.hw.map_transform import deployable
    from htakl_deploy.hw.mapping import map_plan, map_strategies
    from htakl_deploy.hw.simulate import load_samples, read_artefact

    run_dir = make_run(model, max(images, 2), root, firing)
    plan = read_artefact(run_dir / "export" / "student.lava.npz")
    row: dict = {"model": model, "run": str(run_dir), "populations": len(plan.populations)}
    try:
        m0 = map_plan(plan, before_target(), "fewest")
        row["before"] = {"cores": m0.cores, "chips": m0.chips}
    except UserError as e:
        row["before"] = {"error": str(e)}
    t2 = load_target("loihi2")
    t0 = time.perf_counter()
    try:
        new, decisions = plan, []
        map_plan(plan, t2, "compiler")
    except UserError as e:
        row["untransformed"] = {"error": str(e)}
        new, decisions = deployable(plan, t2)
    maps = map_strategies(new, t2)
    row["map_s"] = time.perf_counter() - t0
    row["map_loadavg_1m"] = os.getloadavg()[0]
    row["decisions"] = decisions
    row["after"] = {k: {"cores": v.cores, "chips": v.chips} for k, v in maps.items()}
    if images:
        x_tb, _ = load_samples(plan, images, 4, data_root(run_dir))
        res = emulate(plan, x_tb)
        res_new = emulate(new, x_tb) if new is not plan else res
        row["decisions_equal"] = bool(np.array_equal(res.readout_u, res_new.readout_u))
        row["argmax_equal"] = bool(np.array_equal(res.logits.mean(0).argmax(-1), res_new.logits.mean(0).argmax(-1)))
        row["spikes_equal"] = all(np.array_equal(res.spikes[n], res_new.spikes[n]) for n in res.spikes)
        est = estimate(maps["compiler"], recording(new, res_new))
        pi = est["per_inference"]
        row["estimate"] = {"images": images, "latency_us": pi["latency_ns"] / 1e3,
                           "step_us": pi["step_latency_ns_mean"] / 1e3,
                           "energy_uj": pi["energy"]["total_pj"] / 1e6,
                           "dynamic_uj": pi["energy"]["dynamic_pj"] / 1e6,
                           "ranges": pi.get("ranges"), "synops": pi["synops"]}
        if lava and new is not plan:
            from htakl_deploy.hw.lava_net import run_lava

            t0 = time.perf_counter()
            lv = run_lava(new, x_tb[:, :lava], backend="fixed_pt")
            em = emulate(new, x_tb[:, :lava])
            row["lava"] = {"images": lava, "seconds": time.perf_counter() - t0, "loadavg_1m": os.getloadavg()[0],
                           "every_spike_equal": all(np.array_equal(lv.spikes[n], em.spikes[n]) for n in em.spikes),
                           "spikes": int(sum(np.count_nonzero(v) for v in em.spikes.values())),
                           "readout_equal": bool(np.array_equal(lv.readout_u, em.readout_u))}
    return row


def markdown(rows: list[dict]) -> str:
    lines = [MARK, "", "This section is written by `bench/loihi2_students.py`.", "",
             "| student | before: cores (chips) | after, `compiler` | after, `packed` | rewrite | emulator: rewritten = "
             "untransformed | Lava = emulator (rewritten) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["before"]
        before = f"{b['cores']} ({b['chips']})" if "cores" in b else "does not fit"
        a = r["after"]
        rew = "; ".join(f"{d['population']}: {d['chosen']} ("
                        + ", ".join(f"{o['option']} {o['cores']} cores" for o in d["options"]) + ")"
                        for d in r["decisions"]) or "none needed"
        same = "—" if "decisions_equal" not in r else (
            "every readout value and spike" if r["decisions_equal"] and r["spikes_equal"] else "NO")
        lv = r.get("lava")
        lava = "—" if not lv else (f"every spike ({lv['spikes']:,}), {lv['images']} image(s), {lv['seconds']:.0f} s "
                                   f"at load {lv['loadavg_1m']:.1f}"
                                   if lv["every_spike_equal"] and lv["readout_equal"] else "NO")
        lines.append(f"| {r['model']} | {before} | {a['compiler']['cores']} ({a['compiler']['chips']}) | "
                     f"{a['packed']['cores']} ({a['packed']['chips']}) | {rew} | {same} | {lava} |")
    lines += ["", "| student | latency / inference | energy / inference (range the calibration leaves) |", "|---|---|---|"]
    for r in rows:
        e = r.get("estimate")
        if not e:
            continue
        rg = e.get("ranges") or {}
        span = (f" ({rg['total_pj'][0] / 1e6:.1f} – {rg['total_pj'][1] / 1e6:.1f} µJ)" if rg else "")
        lines.append(f"| {r['model']} | {e['latency_us']:.1f} µs ({e['step_us']:.2f} µs/step) | "
                     f"{e['energy_uj']:.1f} µJ{span} |")
    return "\n".join(lines + ["", MARK])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "vgg16", "resnet19"])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--lava", type=int, default=0)
    ap.add_argument("--root", default="/tmp/paper-runs")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "loihi2_students.json"))
    ap.add_argument("--md", default=None)
    add_firing_flag(ap)
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        rows.append(one(model, args.root, args.firing, args.images, args.lava))
        print(rows[-1], flush=True)
    write_json(args.json, {"rows": rows, "firing": args.firing})
    text = markdown(rows)
    print(text)
    if args.md:
        from loihi2_pilotnet import write_md

        write_md(Path(args.md), text, MARK)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
