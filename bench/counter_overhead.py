"""Benchmark: the energy counter (``energy.counter.count_ops``) vs plain inference on the same samples.

One digits student (a trained ``--checkpoint``, else a freshly initialised one), BN folded, and
the same test images, all in this process, interleaved repeat by repeat (medians):

- ``float``: the float student's forward (``Classifier`` under ``no_grad``, float32) — plain inference;
- ``emulator``: the bit-exact Loihi fixed-point emulator (``quantize`` → ``plan_from_quantized`` →
  ``emulate``), whose spikes (with the integer input) are the recording that is counted;
- ``count``: ``count_ops(graph, recording)`` with the NeuroBench cross-check (the default of
  ``htakl-deploy energy``), and ``count-nb-off`` without it.

Ratios: count / float and count / emulator time (target: counting costs no more than running).
Peak memory: each variant again in a fresh subprocess (``--variant``; the counting ones read the
parent's recording from a file, so no emulator run inflates their baseline), resident memory
after setup, then the kernel's peak (``VmHWM``, reset after setup) over 2 runs; the difference is
the peak memory the variant itself adds. tracemalloc's peak
is reported too: it sees Python's and numpy's allocations (all of the counter's) but not torch's.

Run: ``python bench/counter_overhead.py [--checkpoint RUN/student/last.pt] [--samples 360] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tracemalloc

import numpy as np
import torch

from htakl_deploy.distill.checkpoint import load_checkpoint
from htakl_deploy.distill.data import load_dataset
from htakl_deploy.distill.models import build_model
from htakl_deploy.energy.counter import count_ops
from htakl_deploy.energy.spikefile import SpikeRecording
from htakl_deploy.export.fold import fold_batchnorm
from htakl_deploy.export.graph import graph_from_classifier
from htakl_deploy.export.quantize import quantize
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import plan_from_quantized
from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory

VARIANTS = ("float", "emulator", "count", "count-nb-off")


class Setup:
    """Model, graph, plan, inputs ``[T, S, C, H, W]`` and the emulator's recording."""

    def __init__(self, checkpoint: str | None, samples: int, timesteps: int,
                 recording: str | None = None, need_recording: bool = True):
        _, test = load_dataset("digits")
        if checkpoint:
            ckpt = load_checkpoint(checkpoint, flag="checkpoint", role="student")
            model = build_model(**ckpt["model_spec"])
            model.load_state_dict(ckpt["model"])
        else:
            torch.manual_seed(0)
            model = build_model("convnet", in_shape=test.in_shape, num_classes=test.num_classes,
                                spiking=True)
        self.model = fold_batchnorm(model.eval()).eval()
        self.graph = graph_from_classifier(self.model)
        self.plan = plan_from_quantized(quantize(self.graph))
        n = min(samples, len(test))
        x, self.labels = test.batch(torch.arange(n))
        self.x_tb = x.unsqueeze(0).repeat(timesteps, 1, 1, 1, 1).contiguous()
        self.x_tb_np = self.x_tb.numpy()
        self.samples, self.timesteps = n, timesteps
        self.recording = None
        if recording:  # a memory child: read the parent's recording instead of emulating here
            with np.load(recording) as z:
                layers = {k[len("layer/"):]: z[k] for k in z.files if k.startswith("layer/")}
                self.recording = SpikeRecording(layers, z["input"], z["labels"], z["predictions"],
                                                {"backend": "emulator"})
        elif need_recording:
            emu = emulate(self.plan, self.x_tb_np)
            self.recording = SpikeRecording({k: v.astype(np.uint8) for k, v in emu.spikes.items()},
                                            emu.input_int, self.labels.numpy(),
                                            emu.logits.mean(0).argmax(-1), {"backend": "emulator"})

    def save_recording(self, path: str) -> None:
        r = self.recording
        np.savez(path, input=r.input, labels=r.labels, predictions=r.predictions,
                 **{f"layer/{k}": v for k, v in r.layers.items()})

    def run(self, variant: str):
        if variant == "float":
            with torch.no_grad():
                return self.model(self.x_tb)
        if variant == "emulator":
            return emulate(self.plan, self.x_tb_np)
        return count_ops(self.graph, self.recording, neurobench=(variant == "count"))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_memory(variant: str, checkpoint, samples, timesteps, repeats, recording: str) -> dict:
    args = ["--variant", variant, "--samples", str(samples), "--timesteps", str(timesteps),
            "--repeats", str(repeats), "--recording", recording]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    return in_fresh_process(__file__, args, threads=torch.get_num_threads())


def bench(checkpoint: str | None = None, samples: int = 360, timesteps: int = 4, repeats: int = 7,
          memory: bool = True) -> dict:
    s = Setup(checkpoint, samples, timesteps)
    for v in VARIANTS:  # warm-up
        s.run(v)
    times = {v: [] for v in VARIANTS}
    load_before = os.getloadavg()
    for i in range(repeats):
        for v in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
            times[v].append(timed(lambda: s.run(v)))
    med = {v: statistics.median(t) for v, t in times.items()}
    counts = s.run("count")
    result = {
        "checkpoint": checkpoint, "samples": s.samples, "timesteps": s.timesteps, "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "s_median": med, "samples_per_s": {v: s.samples / t for v, t in med.items()},
        "ratio_count_over_float": med["count"] / med["float"],
        "ratio_count_over_emulator": med["count"] / med["emulator"],
        "ratio_count_nb_off_over_float": med["count-nb-off"] / med["float"],
        "acs_per_sample": counts["per_sample"].get("acs"),
    }
    if memory:
        with tempfile.TemporaryDirectory(prefix="counter_overhead_") as tmp:
            rec = os.path.join(tmp, "recording.npz")
            s.save_recording(rec)
            result["memory"] = {v: measure_memory(v, checkpoint, samples, timesteps, 2, rec)
                                for v in VARIANTS}
        result["memory_note"] = (
            "fresh subprocess per variant (the count variants read the recording from a file, the "
            "others do not load it): VmRSS after setup, VmHWM (reset after setup) over 2 runs, "
            "delta = peak RSS added; tracemalloc_peak_mb = Python + numpy allocations only (torch's are not traced)")
    return result


def child(variant: str, args) -> None:
    s = Setup(args.checkpoint, args.samples, args.timesteps, args.recording,
              need_recording=variant.startswith("count"))
    traced = {}

    def runs() -> None:
        tracemalloc.start()
        for _ in range(args.repeats):
            s.run(variant)
        traced["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    mem = peak_memory(runs)
    print(json.dumps({"variant": variant, **mem, "tracemalloc_peak_mb": traced["peak"] / 2**20}))


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a student checkpoint (default: a freshly initialised convnet)")
    p.add_argument("--samples", type=int, default=360, help="digits test images (360 = all)")
    p.add_argument("--timesteps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant subprocesses")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # memory child
    p.add_argument("--recording", help=argparse.SUPPRESS)  # memory child: the parent's recording
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.variant:
        child(args.variant, args)
        return None
    r = bench(args.checkpoint, args.samples, args.timesteps, args.repeats, not args.no_memory)
    print(f"digits, {r['samples']} samples, T={r['timesteps']}, "
          f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'untrained student'}; "
          f"torch {torch.__version__}, {r['torch_threads']} threads, load {r['loadavg_before'][0]:.2f}")
    print(f"{'variant':>13} {'median s':>9} {'samples/s':>10} {'peak RSS +MB':>13} {'traced MB':>10}")
    for v in VARIANTS:
        m = r.get("memory", {}).get(v, {})
        mem, tr = m.get("delta_mb"), m.get("tracemalloc_peak_mb")
        print(f"{v:>13} {r['s_median'][v]:>9.4f} {r['samples_per_s'][v]:>10.0f} "
              f"{'-' if mem is None else f'{mem:.1f}':>13} {'-' if tr is None else f'{tr:.1f}':>10}")
    print(f"count / float forward: x{r['ratio_count_over_float']:.2f}; count / emulator: "
          f"x{r['ratio_count_over_emulator']:.2f}; without NeuroBench: x{r['ratio_count_nb_off_over_float']:.2f} "
          f"of float")
    if args.json:
        write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
