"""Benchmark: the ``torch-float`` backend in float32 (its default) against float64.

For each run directory given, the float student (``student_float.nir`` next to the exported
artefact) on the same ``--samples`` direct-encoded test images, ``hw.simulate.float_student_spikes``
in float32 and in float64, interleaved ``--reps`` times (medians; one warm-up call each), in one
process: wall time, and how far float32 departs from float64 — every LIF layer's spikes compared
element by element (the fraction equal), the class decisions (argmax of the mean logits over T),
the largest |logit difference|, and each dtype's accuracy.

Run: ``python bench/torch_float.py RUN_DIR [RUN_DIR ...] [--samples 360] [--reps 3] [--json out.json]``
(a run made by ``paper_runs.make_run`` finds its generated data by itself; others pass
``--data-root``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from htakl_deploy.atomic import write_json


def one_run(run_dir: str, samples: int, reps: int, data_root: str | None) -> dict:
    from htakl_deploy.hw.simulate import (float_student_graph, float_student_spikes, load_samples, read_artefact,
                                          resolve_artefact)

    path = resolve_artefact(run_dir)
    plan = read_artefact(path)
    generated = Path(run_dir).parent.parent / "data"  # paper_runs.make_run's layout
    root = data_root or (str(generated) if generated.is_dir() else None)
    x_tb, y = load_samples(plan, samples, int(plan.metadata.get("timesteps", 4)), root)
    graph = float_student_graph(path)
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    out = {k: float_student_spikes(path, x_tb[:, :2], graph, d) for k, d in dtypes.items()}  # warm-up
    times = {k: [] for k in dtypes}
    load_before = os.getloadavg()
    for i in range(reps):
        for k in (list(dtypes) if i % 2 == 0 else list(dtypes)[::-1]):
            t0 = time.perf_counter()
            out[k] = float_student_spikes(path, x_tb, graph, dtypes[k])
            times[k].append(time.perf_counter() - t0)
    (s32, l32), (s64, l64) = out["float32"], out["float64"]
    equal = sum(int((s32[k] == s64[k]).sum()) for k in s64)
    total = sum(s64[k].size for k in s64)
    p32, p64 = l32.mean(0).argmax(-1), l64.mean(0).argmax(-1)
    rows = {k: {"s": statistics.median(v), "times_s": v, "samples_per_s": x_tb.shape[1] / statistics.median(v)}
            for k, v in times.items()}
    return {"run": str(run_dir), "model": plan.metadata.get("model_spec", {}).get("name", "?"),
            "samples": int(x_tb.shape[1]), "timesteps": int(x_tb.shape[0]), "reps": reps, "rows": rows,
            "float64_over_float32_time": rows["float64"]["s"] / rows["float32"]["s"],
            "spike_agreement": equal / total, "spikes_differing": total - equal, "spikes_compared": total,
            "spike_agreement_per_layer": {k: float((s32[k] == s64[k]).mean()) for k in s64},
            "firing_rate": sum(int(s64[k].sum()) for k in s64) / total,
            "decision_agreement": float((p32 == p64).mean()),
            "max_abs_logit_diff": float(np.abs(l32 - l64).max()),
            "accuracy": {"float32": float((p32 == y).mean()), "float64": float((p64 == y).mean())},
            "threads": torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR")
    ap.add_argument("--samples", type=int, default=360)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data-root")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    results = []
    for run in args.runs:
        r = one_run(run, args.samples, args.reps, args.data_root)
        results.append(r)
        print(f"{r['run']}: {r['samples']} samples, float32 {r['rows']['float32']['s']:.3f} s, float64 "
              f"{r['rows']['float64']['s']:.3f} s (x{r['float64_over_float32_time']:.2f}); spikes equal "
              f"{100 * r['spike_agreement']:.4f} % ({r['spikes_differing']} of {r['spikes_compared']} differ), "
              f"decisions equal {100 * r['decision_agreement']:.2f} %, max |logit diff| {r['max_abs_logit_diff']:.2e}; "
              f"accuracy f32 {r['accuracy']['float32']:.4f} f64 {r['accuracy']['float64']:.4f}; "
              f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}", flush=True)
    if args.json:
        write_json(args.json, {"runs": results})


if __name__ == "__main__":
    main()
