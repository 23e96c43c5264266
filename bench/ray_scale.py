"""Benchmark: grids and sample shards on Ray vs one process (issue 28's must-shows).

``grid`` — a 4-cell digits grid (kd, hta-kl × T = 1, 2; one shared teacher), run three ways, one
after the other (never concurrently):

1. **sequential**: the cells one after the other in this process, 1 torch thread, no Ray — what
   the grid runner did before Ray (``grid.teacher_run`` then ``grid.pipeline_cell`` per cell);
2. **ray**: ``htakl-deploy run --config GRID --ray-cpus 2`` (a private 2-CPU local cluster, 1 CPU
   = 1 thread per cell);
3. **ray + kill**: the same, with the worker of one cell SIGKILLed once that cell has written its
   first student checkpoint: the cell runs again at once and continues from the checkpoint.

Every cell of 2 and 3 is compared with 1: the teacher's and the students' final weights bit for
bit, the float and emulator accuracies, every dataset of the emulator's spike file (values) and
the energy per sample. Wall time is the whole command (Ray's start-up included).

``shards`` — ``simulate --backend emulator`` on ``--images`` CIFAR-shaped test images through
``paper_runs.make_run``'s ResNet-20 student at 10 % firing: one process × 1 thread, one process ×
2 threads, and ``--shards 2`` (2 Ray tasks × 1 thread, start-up included), interleaved over
``--repeats``; the sharded ``spikes.h5`` compared with one process's byte for byte, and
``simulate.json`` number for number; then ``energy --neurobench-samples all`` one process vs ``--shards 2``.

    flock /work/coord/heavy.lock .venv/bin/python bench/ray_scale.py --json bench/results/ray_scale.json
    .venv/bin/python bench/perf_md.py --ray bench/results/ray_scale.json   # docs/PERFORMANCE.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_runs import data_root, make_run  # noqa: E402

from htakl_deploy.atomic import write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "htakl_deploy"]
GRID = """data = "digits"
epochs = {epochs}
teacher_epochs = {teacher_epochs}
lr = 0.05
lava = false
backends = ["emulator"]
export_targets = ["nir", "lava"]
map_target = "none"
[grid]
method = ["kd", "hta-kl"]
timesteps = [1, 2]
"""
KILLED = "kd-T2"


def _load() -> list[float]:
    return list(os.getloadavg())


# ----------------------------------------------------------------------------- grid
def sequential(config: Path, out: Path) -> float:
    """The grid's cells one after the other in this process (1 thread, no Ray)."""
    import argparse as ap

    import torch

    from htakl_deploy.cli import build_parser
    from htakl_deploy.cmd_run import grid_plan
    from htakl_deploy.distill.config import FIELD_NAMES, read_config_file
    from htakl_deploy.grid import pipeline_cell, share_teachers, teacher_run
    from htakl_deploy.runconfig import PIPELINE_FIELDS

    torch.set_num_threads(1)
    argv = ["run", "--config", str(config), "--out-dir", str(out)]
    args: ap.Namespace = build_parser(argv).parse_args(argv)
    accepted = FIELD_NAMES | set(PIPELINE_FIELDS)
    t0 = time.perf_counter()
    cells = grid_plan(args, read_config_file(config, accepted | {"grid"}), accepted)
    cells, teachers = share_teachers(cells, config.stem)
    for t in teachers:
        teacher_run(t.cfg)
    for c in cells:
        pipeline_cell(c.cfg, c.settings)
    return time.perf_counter() - t0


def on_ray(config: Path, out: Path, kill: str | None) -> dict:
    """``run --config`` on a 2-CPU local cluster; with ``kill``, that cell's worker is SIGKILLed
    once its first student checkpoint exists."""
    cmd = [*CLI, "run", "--config", str(config), "--out-dir", str(out), "--ray-cpus", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    if kill:
        run = out / f"{config.stem}-{kill}"
        while proc.poll() is None and not (run / "student" / "last.pt").is_file():
            time.sleep(0.05)
        log = (run / "grid.log").read_text() if (run / "grid.log").is_file() else ""
        heads = [line for line in log.splitlines() if line.startswith("--- ")]
        if proc.poll() is None and heads and not (run / "student" / "done.json").exists():
            killed = int(heads[-1].split(" pid ")[1].split()[0])
            epochs_done = sum(json.loads(r)["kind"] == "epoch" for r in (run / "student" / "metrics.jsonl")
                              .read_text().splitlines())
            os.kill(killed, signal.SIGKILL)
            killed = {"pid": killed, "cell": kill, "student_epochs_done": epochs_done,
                      "seconds_after_start": time.perf_counter() - t0}
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "killed": killed, "stdout": stdout,
            "command": "OMP_NUM_THREADS=1 htakl-deploy " + " ".join(cmd[3:])}


def _datasets(path: Path) -> dict:
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, np.asarray(o[()])) if isinstance(o, h5py.Dataset) else None)
    return out


def compare_cells(ref: Path, other: Path, names: list[str]) -> dict:
    """Per run directory: weights bit for bit, accuracies, spike datasets, energy per sample."""
    import numpy as np
    import torch

    def weights(p: Path):
        return torch.load(p, map_location="cpu", weights_only=True)["model"]

    rows = {}
    for name in names:
        a, b = ref / name, other / name
        stage = "teacher" if name.endswith("-teacher") else "student"
        wa, wb = weights(a / stage / "last.pt"), weights(b / stage / "last.pt")
        row = {"weights_identical": wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)}
        if stage == "student":
            sa, sb = (json.loads((r / "summary.json").read_text())["student"]["test_acc"] for r in (a, b))
            ea, eb = (json.loads((r / "simulate" / "emulator" / "simulate.json").read_text())["accuracy"] for r in (a, b))
            da, db = (_datasets(r / "simulate" / "emulator" / "spikes.h5") for r in (a, b))
            pa, pb = (json.loads((r / "energy" / "emulator.json").read_text())["per_sample"] for r in (a, b))
            row.update(float_acc=[sa, sb], emulator_acc=[ea, eb],
                       spikes_identical=da.keys() == db.keys() and all(np.array_equal(da[k], db[k]) for k in da),
                       energy_identical=pa == pb, energy_uj_per_sample=pa["energy_pj"] * 1e-6)
        rows[name] = row
    return rows


def bench_grid(root: Path, epochs: int, teacher_epochs: int) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "grid.toml"
    config.write_text(GRID.format(epochs=epochs, teacher_epochs=teacher_epochs))
    names = [f"grid-{m}-T{t}" for m in ("kd", "hta-kl") for t in (1, 2)] + ["grid-teacher"]
    load_before = _load()
    seq = sequential(config, root / "sequential")
    ray = on_ray(config, root / "ray", None)
    kill = on_ray(config, root / "ray-kill", KILLED)
    if not kill["killed"]:
        raise RuntimeError(f"{KILLED} finished training before it could be killed: raise --epochs")
    same_ray = compare_cells(root / "sequential", root / "ray", names)
    same_kill = compare_cells(root / "sequential", root / "ray-kill", names)
    return {
        "epochs": epochs, "teacher_epochs": teacher_epochs, "cells": names[:-1], "config": config.read_text(),
        "load_before": load_before, "load_after": _load(), "cpu_count": os.cpu_count(),
        "sequential_wall_s": seq, "ray_wall_s": ray["wall_s"], "ray_kill_wall_s": kill["wall_s"],
        "ratio_sequential_over_ray": seq / ray["wall_s"], "killed": kill["killed"],
        "ray_command": ray["command"], "ray_kill_log": kill["stdout"].splitlines(),
        "vs_sequential": {"ray": same_ray, "ray_kill": same_kill},
        "all_identical": all(all(v for k, v in row.items() if k.endswith("identical"))
                             for rows in (same_ray, same_kill) for row in rows.values()),
    }


# ----------------------------------------------------------------------------- shards
def simulate_cmd(run_dir: Path, out: Path, images: int, threads: int, shards: int | None) -> tuple[float, dict]:
    cmd = [*CLI, "simulate", str(run_dir), "--backend", "emulator", "--samples", str(images), "--data-root",
           data_root(run_dir), "--out", str(out), "--no-compare", "--json",
           *(["--shards", str(shards), "--ray-cpus", str(shards)] if shards else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def energy_cmd(spikes: Path, graph: Path, out: Path, shards: int | None) -> float:
    cmd = [*CLI, "energy", str(spikes), "--graph", str(graph), "--json-out", str(out),
           "--neurobench-samples", "all", *(["--shards", str(shards), "--ray-cpus", str(shards)] if shards else [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


TIMING = ("wall_s", "total_wall_s", "samples_per_s", "shards", "shard_wall_s", "out_dir", "ray_start_s")


def bench_shards(root: Path, images: int, repeats: int, firing: float) -> dict:
    run_dir = make_run("resnet20", images, root / "paper", firing)
    variants = {"1 process × 1 thread": (1, None), "1 process × 2 threads": (2, None),
                "--shards 2 (2 tasks × 1 thread)": (1, 2)}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    reports: dict[str, dict] = {}
    load_before = _load()
    for r in range(repeats):  # interleaved: the machine's load is shared by the variants
        for name, (threads, shards) in variants.items():
            out = root / "sim" / f"{r}-{name.split()[0].strip('-')}{threads}"
            wall, rep = simulate_cmd(run_dir, out, images, threads, shards)
            walls[name].append(wall)
            reports.setdefault(name, rep)
    one, two = reports["1 process × 1 thread"], reports["--shards 2 (2 tasks × 1 thread)"]
    f1, f2 = Path(one["out_dir"]) / "spikes.h5", Path(two["out_dir"]) / "spikes.h5"
    same_file = f1.read_bytes() == f2.read_bytes()
    same_report = {k: v for k, v in one.items() if k not in TIMING} == {k: v for k, v in two.items() if k not in TIMING}
    graph = run_dir / "export" / "student_quant.nir"
    e_walls = {"1 process × 1 thread": [], "--shards 2 (2 tasks × 1 thread)": []}
    for r in range(repeats):
        e_walls["1 process × 1 thread"].append(energy_cmd(f1, graph, root / f"e1-{r}.json", None))
        e_walls["--shards 2 (2 tasks × 1 thread)"].append(energy_cmd(f1, graph, root / f"e2-{r}.json", 2))
    e1, e2 = (json.loads((root / f"e{i}-0.json").read_text()) for i in (1, 2))
    return {
        "model": "resnet20", "images": images, "firing": firing, "repeats": repeats, "cpu_count": os.cpu_count(),
        "load_before": load_before, "load_after": _load(), "spikes_file_bytes": f1.stat().st_size,
        "simulate_wall_s": walls, "simulate_wall_s_median": {k: statistics.median(v) for k, v in walls.items()},
        "ratio_1thread_over_shards": statistics.median(walls["1 process × 1 thread"])
        / statistics.median(walls["--shards 2 (2 tasks × 1 thread)"]),
        "ratio_2threads_over_shards": statistics.median(walls["1 process × 2 threads"])
        / statistics.median(walls["--shards 2 (2 tasks × 1 thread)"]),
        "ray_start_s": two.get("ray_start_s"), "shard_wall_s": two.get("shard_wall_s"),
        "spikes_file_identical": same_file, "simulate_json_identical": same_report,
        "accuracy": one["accuracy"], "firing_rate_mean": statistics.fmean(one["firing_rate"].values()),
        "energy_wall_s": e_walls, "energy_wall_s_median": {k: statistics.median(v) for k, v in e_walls.items()},
        "energy_identical": e1 == e2, "energy_uj_per_sample": e1["per_sample"]["energy_pj"] * 1e-6,
        "neurobench_eff_acs_per_sample": e1["per_sample"]["neurobench_eff_acs"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=("grid", "shards"), default=["grid", "shards"])
    p.add_argument("--epochs", type=int, default=20, help="student epochs of the grid's cells")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--images", type=int, default=2000, help="test images of the sharded simulation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--firing", type=float, default=0.1)
    p.add_argument("--root", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", help="write the results here (bench/perf_md.py --ray renders them)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ray_scale_") as tmp:
        root = Path(args.root or tmp)
        res: dict = {"git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True).stdout.strip()}
        if "grid" in args.parts:
            g = res["grid"] = bench_grid(root / "grid", args.epochs, args.teacher_epochs)
            print(f"grid: sequential {g['sequential_wall_s']:.1f} s, Ray 2 CPUs {g['ray_wall_s']:.1f} s "
                  f"(×{g['ratio_sequential_over_ray']:.2f}), Ray with {KILLED}'s worker killed after "
                  f"{g['killed']['student_epochs_done']} epochs {g['ray_kill_wall_s']:.1f} s; identical to "
                  f"sequential: {g['all_identical']}; load {g['load_before'][0]:.2f} → {g['load_after'][0]:.2f}")
        if "shards" in args.parts:
            s = res["shards"] = bench_shards(root / "shards", args.images, args.repeats, args.firing)
            print(f"shards: {s['simulate_wall_s_median']} (×{s['ratio_1thread_over_shards']:.2f} vs 1 thread, "
                  f"×{s['ratio_2threads_over_shards']:.2f} vs 2 threads); file identical {s['spikes_file_identical']}, "
                  f"simulate.json identical {s['simulate_json_identical']}; energy {s['energy_wall_s_median']} "
                  f"identical {s['energy_identical']}; load {s['load_before'][0]:.2f} → {s['load_after'][0]:.2f}")
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
