"""Benchmark: peak memory of ``simulate`` (emulator) and ``energy`` against the number of samples.

On a paper-scale student (default ResNet-20, 3×32×32, T=4; ``paper_runs.make_run`` with as many
generated test images as the largest ``--samples``), for each sample count, each in a fresh
process (``memory.in_fresh_process``): ``hw.simulate.simulate(backend="emulator", batch_size=B,
record=...)`` then ``energy.report.report_for_files`` on its spike file; resident memory after
imports and the kernel's peak (``VmHWM``, reset after setup) while each ran, wall time, and the
spike file's size. Flat peak memory across sample counts = bounded by the batch.

``--neurobench-samples all,256,0`` runs ``energy`` once per value on the same spike file (the
NeuroBench-style cross-check on every sample, on 256 spread over the recording — the default of
``htakl-deploy energy`` — and off), so each variant's energy time / simulate time is measured side by
side; ``--neurobench`` is ``--neurobench-samples all``.

Run: ``python bench/stream_memory.py [--model resnet20] [--samples 250,500,1000] [--batch-size 64]
[--record spikes] [--neurobench-samples all,256] [--progress-log FILE] [--json out.json]``; for a run
stopped early: ``python bench/stream_memory.py --stopped LOG --model M --samples N --batch-size B --json out.json``
(its rate and memory from the progress log).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory
from paper_runs import add_firing_flag, data_root, make_run


def _logger(path: str | None, t0: float):
    """A ``simulate`` progress callback appending one JSON line per batch to ``path`` (samples
    done, seconds, the process's resident memory and its peak so far): a long run that is
    stopped still tells its rate and memory."""
    def log(done: int) -> None:
        status = dict(line.split(":", 1) for line in open("/proc/self/status", encoding="ascii") if ":" in line)
        row = {"done": done, "s": round(time.perf_counter() - t0, 2), "load": os.getloadavg()[0],
               **{k.lower() + "_mb": int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}}
        with open(path, "a", encoding="ascii") as fh:
            fh.write(json.dumps(row) + "\n")
    return log if path else None


def one(stage: str, run_dir: str, samples: int, batch: int, record: str, out: str, neurobench: int | None,
        progress_log: str | None = None) -> dict:
    """One stage in this (fresh) process; ``neurobench``: the energy stage's NeuroBench samples
    (None: all, 0: off)."""
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import report_for_files
    from htakl_deploy.hw.simulate import simulate

    res: dict = {}
    t0 = time.perf_counter()
    if stage == "simulate":
        mem = peak_memory(lambda: res.update(simulate(run_dir, backend="emulator", samples=samples, batch_size=batch,
                                                      out_dir=out, compare=False, record=record,
                                                      data_root=data_root(run_dir),
                                                      progress=_logger(progress_log, t0))))
        extra = {"accuracy": res["accuracy"], "emulator_s": res["wall_s"],
                 "file_mb": os.path.getsize(Path(out) / "spikes.h5") / 1e6,
                 "firing_rate": sum(res["firing_rate"].values()) / len(res["firing_rate"])}
    else:
        graph = Path(run_dir) / "export" / "student_quant.nir"
        mem = peak_memory(lambda: res.update(report_for_files(Path(out) / "spikes.h5", graph, load_preset("paper-45nm"),
                                                              neurobench_samples=neurobench)))
        extra = {"acs_per_sample": res["per_sample"]["acs"], "neurobench_samples": res.get("neurobench_samples", 0),
                 "neurobench_eff_acs_per_sample": res["per_sample"]["neurobench_eff_acs"]}
    return {"stage": stage, "samples": samples, "wall_s": time.perf_counter() - t0, **mem, **extra}


def nb_word(n: int | None) -> str:
    return "all" if n is None else str(n)


def bench(model: str = "resnet20", samples=(250, 500, 1000), batch: int = 64, record: str = "spikes",
          neurobench=(0,), root: str | None = None, progress_log: str | None = None,
          firing: float | None = 0.1) -> dict:
    """``neurobench``: the energy variants, NeuroBench samples each (None: all, 0: off)."""
    root = root or os.path.join(tempfile.gettempdir(), "htakl_bench")
    run_dir = make_run(model, max(samples), root, firing)
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stream_") as tmp:
        for n in samples:
            out = os.path.join(tmp, str(n))
            for stage, nb in [("simulate", 0)] + [("energy", nb) for nb in neurobench]:
                args = ["--one", stage, "--run", str(run_dir), "--n", str(n), "--batch-size", str(batch),
                        "--record", record, "--out", out, "--neurobench-samples", nb_word(nb)] \
                    + (["--progress-log", progress_log] if progress_log and stage == "simulate" else [])
                rows.append(in_fresh_process(__file__, args, threads=torch.get_num_threads()))
                r = rows[-1]
                what = stage if stage == "simulate" else f"energy (NeuroBench on {nb_word(nb)})"
                print(f"{what:<30} {n:>6} samples: peak {r['peak_mb']:7.0f} MB (+{r['delta_mb']:.0f}), "
                      f"{r['wall_s']:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
            sim = next(r for r in rows if r["stage"] == "simulate" and r["samples"] == n)
            for r in rows:
                if r["stage"] == "energy" and r["samples"] == n:
                    print(f"  energy / simulate, NeuroBench on {r['neurobench_samples']} samples: "
                          f"×{r['wall_s'] / sim['wall_s']:.3f}")
    return {"model": model, "batch_size": batch, "record": record,
            "neurobench_variants": [nb_word(x) for x in neurobench], "neurobench": any(x != 0 for x in neurobench),
            "rows": rows, "target_firing": firing,
            "threads": torch.get_num_threads(), "load_before": load_before, "load_after": os.getloadavg()}


def nb_samples(text: str) -> int | None:
    return None if text == "all" else int(text)


def stopped_run(log: str, model: str, samples: int, batch: int, record: str, neurobench: bool) -> dict:
    """The JSON of a run stopped before its end, from its ``--progress-log``: every batch's line
    (samples done, seconds, load, VmRSS, VmHWM), for ``perf_md.py`` to show its rate and memory."""
    rows = [json.loads(line) for line in Path(log).read_text(encoding="ascii").splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{log}: no progress lines")
    return {"model": model, "batch_size": batch, "record": record, "neurobench": neurobench, "stopped": True,
            "target_samples": samples, "progress": rows, "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
            "load_before": [rows[0]["load"]], "load_after": [rows[-1]["load"]], "rows": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--samples", default="250,500,1000")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--record", default="spikes")
    ap.add_argument("--neurobench", action="store_true", help="same as --neurobench-samples all")
    ap.add_argument("--neurobench-samples", default="0", metavar="LIST",
                    help="energy variants: NeuroBench samples each, comma-separated ('all', a number, 0 = off; "
                         "default 0); one energy run per variant on the same spike file")
    ap.add_argument("--root")
    add_firing_flag(ap)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--progress-log", metavar="FILE", help="simulate appends a JSON line per batch here")
    ap.add_argument("--stopped", metavar="LOG", help="write --json for a run stopped early, from its --progress-log "
                    "(give the run's --model, --samples, --batch-size, --record, --neurobench)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stopped:
        r = stopped_run(args.stopped, args.model, int(args.samples), args.batch_size, args.record, args.neurobench)
        last = r["progress"][-1]
        print(f"stopped at {last['done']} of {r['target_samples']} samples after {last['s']:.0f} s; "
              f"VmHWM {max(x['vmhwm_mb'] for x in r['progress']):.0f} MB")
        if args.json:
            write_json(args.json, r)
        return
    variants = [None] if args.neurobench else [nb_samples(x) for x in args.neurobench_samples.split(",")]
    if args.one:
        print(json.dumps(one(args.one, args.run, args.n, args.batch_size, args.record, args.out, variants[0],
                             args.progress_log)))
        return
    r = bench(args.model, [int(s) for s in args.samples.split(",")], args.batch_size, args.record,
              variants, args.root, args.progress_log, args.firing)
    print(f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}, {r['threads']} threads")
    if args.json:
        write_json(args.json, r)


if __name__ == "__main__":
    main()
