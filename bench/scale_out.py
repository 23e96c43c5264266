"""Benchmark: `torchrun --nproc_per_node 2` data-parallel distillation vs one process.

The same digits cell (same global batch, epochs, seed, method) is trained by ``htakl-deploy
distill`` started three ways, one after the other (never concurrently): one process with one
thread, two torchrun processes with one thread each (``OMP_NUM_THREADS=1``), and — for context —
one process with as many threads as processes. Throughput is the median ``images_per_s`` of the
student's epochs (``student/metrics.jsonl``: training steps only, evaluation excluded); wall time
is the whole command (start-up, teacher, student, evaluation). Prints the 2-process / 1-process
ratios and the final accuracy of each (equal within noise: the BatchNorm statistics are per
process, so the runs are not bitwise equal).

Run: ``python bench/scale_out.py [--epochs 5] [--teacher-epochs 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from htakl_deploy.atomic import write_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distill_cmd(nproc: int, flags: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "htakl_deploy", "distill", *flags]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
            str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "htakl_deploy", "distill", *flags]


def run_variant(name: str, nproc: int, threads: int, flags: list[str], out_dir: Path) -> dict:
    """One ``distill`` command; its summary and student epoch records."""
    cmd = distill_cmd(nproc, [*flags, "--out-dir", str(out_dir), "--run-name", name, "--no-progress"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    run = out_dir / name
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    epochs = [r for r in map(json.loads, (run / "student" / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "epoch"]
    return {
        "name": name, "processes": nproc, "threads_per_process": threads, "wall_s": wall_s,
        "student_images_per_s_median": statistics.median(e["images_per_s"] for e in epochs),
        "student_train_s": sum(e["epoch_train_s"] for e in epochs),
        "student_test_acc": summary["student"]["test_acc"],
        "teacher_test_acc": summary["teacher"]["test_acc"],
        "command": " ".join(["OMP_NUM_THREADS=" + str(threads), *cmd[1:]]),
    }


def bench(epochs: int = 5, teacher_epochs: int = 2, batch_size: int = 128, method: str = "hta-kl",
          extra: list[str] | None = None, out_dir: str | None = None, nproc: int = 2) -> dict:
    flags = ["--method", method, "--epochs", str(epochs), "--teacher-epochs", str(teacher_epochs),
             "--batch-size", str(batch_size), *(extra or [])]
    with tempfile.TemporaryDirectory(prefix="scale_out_") as tmp:
        root = Path(out_dir or tmp)
        load_before = os.getloadavg()
        one = run_variant("p1-t1", 1, 1, flags, root)
        many = run_variant(f"p{nproc}-t1", nproc, 1, flags, root)
        threads = run_variant(f"p1-t{nproc}", 1, nproc, flags, root)
    return {
        "flags": flags, "global_batch": batch_size, "nproc": nproc, "cpu_count": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "variants": [one, many, threads],
        "ratio_throughput_nproc_over_1": many["student_images_per_s_median"] / one["student_images_per_s_median"],
        "ratio_throughput_nproc_over_1p_nthreads":
            many["student_images_per_s_median"] / threads["student_images_per_s_median"],
        "ratio_wall_1_over_nproc": one["wall_s"] / many["wall_s"],
        "acc_diff_nproc_minus_1": many["student_test_acc"] - one["student_test_acc"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128, help="global batch")
    p.add_argument("--method", default="hta-kl")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--limit-train", type=int, help="fewer training images (smoke tests)")
    p.add_argument("--out-dir", help="keep the run directories here (default: a temporary one)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    extra = ["--limit-train", str(args.limit_train)] if args.limit_train else []
    r = bench(args.epochs, args.teacher_epochs, args.batch_size, args.method, extra, args.out_dir, args.nproc)
    print(f"digits, {args.method}, global batch {args.batch_size}, student {args.epochs} epochs, "
          f"teacher {args.teacher_epochs}; {r['cpu_count']} CPUs, load {r['loadavg_before'][0]:.2f}")
    print(f"{'variant':>8} {'student img/s':>14} {'wall s':>8} {'student acc':>12} {'teacher acc':>12}")
    for v in r["variants"]:
        print(f"{v['name']:>8} {v['student_images_per_s_median']:>14.0f} {v['wall_s']:>8.1f} "
              f"{100 * v['student_test_acc']:>11.2f}% {100 * v['teacher_test_acc']:>11.2f}%")
    print(f"{args.nproc} processes / 1 process (1 thread each): throughput x"
          f"{r['ratio_throughput_nproc_over_1']:.2f}, wall x{r['ratio_wall_1_over_nproc']:.2f}; "
          f"vs 1 process with {args.nproc} threads: x{r['ratio_throughput_nproc_over_1p_nthreads']:.2f}; "
          f"accuracy difference {100 * r['acc_diff_nproc_minus_1']:+.2f} pt")
    if args.json:
        write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
