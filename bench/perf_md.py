"""Write docs/PERFORMANCE.md from the JSON of bench/train_overhead.py, counter_overhead.py, scale_out.py.

Run: ``python bench/perf_md.py --train T.json --counter C.json --scale S.json [--scale S2.json ...]
[--out docs/PERFORMANCE.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy
import torch


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return sha + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load(loads: list) -> str:
    return ", ".join(f"{x:.2f}" for x in loads)


def train_section(t: dict) -> list[str]:
    out = [
        "## Training loop vs a plain SpikingJelly loop",
        "",
        f"`python bench/train_overhead.py --json …` — digits, {t['train_images_per_epoch']} training "
        f"images/epoch, batch {t['batch_size']}, T={t['timesteps']}, KD loss, {t['reps']} interleaved "
        f"epochs per variant (medians), {t['torch_threads']} torch threads; load average "
        f"{load(t['loadavg_before'])} → {load(t['loadavg_after'])}.",
        "",
        "| variant | epoch (s, median) | images/s | peak memory added (MB) |",
        "|---|---|---|---|",
    ]
    names = {"ours": "ours (`fit`, augmentation off)", "plain": "plain SpikingJelly loop",
             "ours+aug": "ours with digits' crop augmentation"}
    for v, label in names.items():
        m = t.get("memory", {}).get(v, {})
        out.append(f"| {label} | {t['epoch_s_median'][v]:.3f} | {t['images_per_s'][v]:.0f} | "
                   f"{m.get('delta_mb', float('nan')):.1f} (RSS {m.get('rss_before_mb', float('nan')):.0f} → "
                   f"peak {m.get('peak_mb', float('nan')):.0f}) |")
    out += [
        "",
        f"**ours / plain epoch time: ×{t['ratio_time_ours_over_plain']:.3f}** (target ≤ 1.10); with "
        f"augmentation ×{t['ratio_time_ours_aug_over_plain']:.3f}. The whole `fit` call of one epoch "
        f"(+ evaluation on 128 test images and the checkpoint) takes "
        f"{t['ours_call_s_median']['ours']:.3f} s.",
        f"Memory: {t.get('memory_note', 'not measured')}.",
        "",
    ]
    return out


def counter_section(c: dict) -> list[str]:
    out = [
        "## Energy counter vs inference",
        "",
        f"`python bench/counter_overhead.py --checkpoint RUN/student/last.pt --json …` — digits, "
        f"{c['samples']} test images, T={c['timesteps']}, {c['repeats']} interleaved repeats (medians), "
        f"{c['torch_threads']} torch threads; load average {load(c['loadavg_before'])} → "
        f"{load(c['loadavg_after'])}. Student: {c['checkpoint'] or 'freshly initialised'}.",
        "",
        "| variant | time (s, median) | samples/s | peak memory added (MB) | tracemalloc peak (MB) |",
        "|---|---|---|---|---|",
    ]
    names = {"float": "float student forward (torch, float32)", "emulator": "bit-exact emulator",
             "count": "`count_ops` (with NeuroBench cross-check, the default)",
             "count-nb-off": "`count_ops(neurobench=False)`"}
    for v, label in names.items():
        m = c.get("memory", {}).get(v, {})
        out.append(f"| {label} | {c['s_median'][v]:.4f} | {c['samples_per_s'][v]:.0f} | "
                   f"{m.get('delta_mb', float('nan')):.1f} | {m.get('tracemalloc_peak_mb', float('nan')):.1f} |")
    out += [
        "",
        f"**count / float forward: ×{c['ratio_count_over_float']:.2f}; count / emulator: "
        f"×{c['ratio_count_over_emulator']:.2f}**; without the NeuroBench cross-check the counter "
        f"takes ×{c['ratio_count_nb_off_over_float']:.2f} of the float forward.",
        f"Memory: {c.get('memory_note', 'not measured')}.",
        "",
    ]
    return out


def scale_section(runs: list[dict]) -> list[str]:
    out = [
        "## Scale-out: torchrun, 2 processes vs 1",
        "",
        "`python bench/scale_out.py [--epochs E --teacher-epochs E_t] --json …` runs "
        "`htakl-deploy distill` three times, one after the other, on the same digits cell (same "
        "global batch, epochs, seed): 1 process × 1 thread; `python -m torch.distributed.run "
        "--nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port <free>` (what "
        "`torchrun --standalone` does), 2 processes × 1 thread (`OMP_NUM_THREADS=1`), global batch "
        "split 64 + 64; and 1 process × 2 threads. images/s = median "
        "of the student's epochs (`metrics.jsonl`, training steps only); wall = the whole command.",
        "",
        "| epochs (student / teacher) | variant | student images/s | wall (s) | student acc | teacher acc | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        f = r["flags"]
        e, et = f[f.index("--epochs") + 1], f[f.index("--teacher-epochs") + 1]
        for v in r["variants"]:
            out.append(f"| {e} / {et} | {v['processes']} proc × {v['threads_per_process']} thread | "
                       f"{v['student_images_per_s_median']:.0f} | {v['wall_s']:.1f} | "
                       f"{100 * v['student_test_acc']:.2f} % | {100 * v['teacher_test_acc']:.2f} % | "
                       f"{load(r['loadavg_before'])} |")
    out.append("")
    for r in runs:
        f = r["flags"]
        e = f[f.index("--epochs") + 1]
        out.append(f"- {e} student epochs: **2 processes / 1 process: throughput "
                   f"×{r['ratio_throughput_nproc_over_1']:.2f}**, wall-time ratio 1 proc / 2 proc ×{r['ratio_wall_1_over_nproc']:.2f} "
                   f"(> 1: two processes finish sooner; start-up of torchrun and gloo included); 2 processes vs 1 process with 2 threads: "
                   f"×{r['ratio_throughput_nproc_over_1p_nthreads']:.2f}; student accuracy "
                   f"{100 * r['acc_diff_nproc_minus_1']:+.2f} pt (360 test images: 1 image = 0.28 pt).")
    out += ["", "With 5 / 2 epochs the teacher is far from trained and every student is near chance, "
            "so only the 20 / 10 row says anything about accuracy. Single-run numbers: no repeats.", ""]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--counter", required=True)
    p.add_argument("--scale", action="append", required=True)
    p.add_argument("--note", action="append", default=[], help="an extra line for the header")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"))
    args = p.parse_args(argv)
    t, c = (json.loads(Path(x).read_text()) for x in (args.train, args.counter))
    scales = [json.loads(Path(x).read_text()) for x in args.scale]
    loads = [t["loadavg_before"][0], c["loadavg_before"][0], *(s["loadavg_before"][0] for s in scales)]
    lines = [
        "# Performance",
        "",
        "Generated by `bench/perf_md.py` from the JSON of `bench/train_overhead.py`, "
        "`bench/counter_overhead.py` and `bench/scale_out.py` (each measures its variants side by "
        "side in one process or one after the other, never concurrently).",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; git {git_sha()}",
        f"- machine: {os.cpu_count()} CPUs ({cpu_name()}), {platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}",
        f"- 1-minute load average at the start of each benchmark: {', '.join(f'{x:.2f}' for x in loads)}"
        + (" — **the machine was shared** (another engineer's jobs ran at times), so absolute "
           "figures are noisy; the ratios are measured interleaved to share the noise"
           if max(loads) > 1.0 else ""),
        *[f"- {n}" for n in args.note],
        "",
        *train_section(t), *counter_section(c), *scale_section(scales),
    ]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
