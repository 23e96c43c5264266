"""Benchmark: the same test images through Lava ``fixed_pt`` (Loihi2SimCfg) and the emulator.

Both run in this process on the same samples of the same exported student: Lava once (its wall
time includes building and compiling the process graph — what a user waits for), the emulator
``--repeats`` times (median). Prints samples/s of each, their ratio (target: emulator ≥ 1000×
Lava) and whether every spike and the readout are identical.

Run: ``python bench/emulator_vs_lava.py RUN_DIR [--samples 100] [--json out.json]``, where RUN_DIR
holds ``export/student.lava.npz`` (``htakl-deploy run`` or ``htakl-deploy export --target lava``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.lava_net import run_lava
from htakl_deploy.hw.simulate import load_samples, read_artefact, resolve_artefact, spike_agreement


def bench(artefact: str, samples: int = 100, repeats: int = 5) -> dict:
    path = resolve_artefact(artefact)
    plan = read_artefact(path)
    x_tb, _ = load_samples(plan, samples, int(plan.metadata.get("timesteps", 4)), None)
    n = x_tb.shape[1]
    t0 = time.perf_counter()
    lava = run_lava(plan, x_tb, backend="fixed_pt", chunk_samples=n)
    lava_s = time.perf_counter() - t0
    emulate(plan, x_tb)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emu = emulate(plan, x_tb)
        times.append(time.perf_counter() - t0)
    emu_s = statistics.median(times)
    return {
        "artefact": str(path), "samples": n, "timesteps": int(x_tb.shape[0]),
        "lava_s": lava_s, "lava_samples_per_s": n / lava_s,
        "emulator_s_median": emu_s, "emulator_samples_per_s": n / emu_s,
        "ratio_emulator_over_lava": lava_s / emu_s,
        "spike_agreement": spike_agreement(lava.spikes, emu.spikes)["all"],
        "readout_identical": bool(np.array_equal(lava.readout_u, emu.readout_u)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artefact", help="run directory, its export/ folder or a student.lava.npz")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    r = bench(args.artefact, args.samples, args.repeats)
    print(f"{r['samples']} samples, T={r['timesteps']}")
    print(f"  Lava fixed_pt  {r['lava_s']:8.2f} s   {r['lava_samples_per_s']:10.2f} samples/s")
    print(f"  emulator       {r['emulator_s_median']:8.4f} s   {r['emulator_samples_per_s']:10.1f} samples/s")
    print(f"  emulator / Lava throughput: x{r['ratio_emulator_over_lava']:.0f}; spikes identical: "
          f"{r['spike_agreement'] == 1.0}; readout identical: {r['readout_identical']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
