"""Method comparison grid: methods × T × seeds (+ HTA-KL ablations), from distillation to energy.

One cell = (method, T, seed[, one loss setting]): a ``run`` pipeline (``htakl_deploy.grid``, the
one grid runner: each cell a Ray task) — distil the SNN student from the data set's one shared
ANN teacher (trained once, in ``OUT/teacher``) → export (NIR + Lava artefact, no Lava check) → the
bit-exact emulator on the test split → ACs/MACs and energy (paper-45nm) from its spikes → its
report — in ``OUT/runs/<cell>``. As each cell finishes this script writes ``OUT/cells/<cell>.json``
(the row its tables are built from); a cell whose JSON exists is skipped, an interrupted one
continues from its last checkpoint (a killed worker's cell at once; after Ctrl-C, run the same
command again). At the end ``OUT/results.json`` + ``OUT/results.csv`` aggregate the cells and the
results page is rendered beside them, ``OUT/RESULTS.md`` (``--results-md`` to choose): a grid never
writes over the tracked ``docs/RESULTS.md`` unless told to — that page is re-rendered from the
default locations with ``python bench/results_md.py``.

    .venv/bin/python bench/method_grid.py --data digits --epochs 30 --ablations --workers 2

Ablations (``--ablations``, at ``--ablation-timesteps``, default T=2): HTA-KL with head threshold
δ ∈ {0.3, 0.5, 0.7} and ``fixed`` with head weight 0.1 … 0.9 (``DistillConfig.delta`` and
``head_weight``); the default values (δ 0.5, weight 0.5) are the main grid's cells.
``OUT/grid.json`` pins the budget (epochs, lr, limits): a second invocation with other values
into the same ``--out`` is refused, so all cells of one table share one budget. ``OUT`` defaults to
``bench/results/<data>`` (git-ignored). After a cell, its ``spikes.h5`` and Lava artefact are
deleted unless ``--keep-artefacts`` (Fashion-MNIST: ~GB and ~80 MB per cell).

``--workers N`` runs N cells side by side on a local Ray cluster of N × ``--threads`` CPUs (each
cell ``--threads`` torch threads; on this 2-core machine ``--workers 2 --threads 1``);
``--ray-address ADDR`` runs them on an existing cluster instead (docs/SCALING.md: every node must
see ``OUT`` at the same path).

``--measure-images N`` runs no grid: it times one epoch of every (method, T) on N training
images, one cell at a time, and writes ``OUT-estimate.json`` (for the default ``OUT``:
``bench/results/<data>-estimate.json``, which docs/RESULTS.md shows for a data set not run yet), the
full grid's estimated wall time and budgets that fit in 3 h.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_md  # noqa: E402  (the sibling script: aggregation and Markdown)

from htakl_deploy.atomic import write_json  # noqa: E402
from htakl_deploy.distill.runlog import git_state  # noqa: E402
from htakl_deploy.errors import UserError  # noqa: E402

METHODS = results_md.METHOD_ORDER
DELTAS = (0.3, 0.5, 0.7)
HEAD_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CELL_FORMAT = "htakl-bench-cell/1"
#: settings that define a grid's budget; cells of one ``--out`` must agree on them
BUDGET_KEYS = ("data", "model", "epochs", "teacher_epochs", "lr", "teacher_lr", "batch_size",
               "limit_train", "limit_test", "ablation_timesteps")


@dataclass(frozen=True)
class Cell:
    method: str
    timesteps: int
    seed: int
    overrides: tuple[tuple[str, float], ...] = ()  # loss settings that differ from their defaults

    @property
    def name(self) -> str:
        tag = "".join(f"_{'d' if k == 'delta' else 'hw'}{v:g}" for k, v in self.overrides)
        return f"{self.method}{tag}-T{self.timesteps}-s{self.seed}"


def plan_cells(methods, timesteps, seeds, *, ablations: bool, ablation_timesteps: int,
               ablation_seeds, grid: bool = True) -> list[Cell]:
    """Seeds outermost, so a partial run already has every method at the first seed."""
    from htakl_deploy.distill.losses import LossConfig

    cells: list[Cell] = []
    if grid:
        cells += [Cell(m, t, s) for s in seeds for t in timesteps for m in methods]
    if ablations:
        for s in ablation_seeds:
            for d in DELTAS:
                cells.append(Cell("hta-kl", ablation_timesteps, s,
                                  () if d == LossConfig.delta else (("delta", d),)))
            for w in HEAD_WEIGHTS:
                cells.append(Cell("fixed", ablation_timesteps, s,
                                  () if w == LossConfig.head_weight else (("head_weight", w),)))
    seen, out = set(), []
    for c in cells:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# ----------------------------------------------------------------------------- cells
#: what every cell's pipeline does after training: the emulator only (bit-exact with Lava's fixed_pt)
PIPELINE = dict(lava=False, backends=("emulator",), export_targets=("nir", "lava"), lava_check=0, map_target=None)


def base_config(settings: dict, **changes):
    from htakl_deploy.distill.config import DistillConfig

    return DistillConfig(data=settings["data"], model=settings["model"], data_root=settings["data_root"],
                         limit_train=settings["limit_train"], limit_test=settings["limit_test"],
                         batch_size=settings["batch_size"], epochs=settings["epochs"],
                         teacher_epochs=settings["teacher_epochs"], progress=False, **changes)


def shared_teacher(settings: dict, out: Path):
    """The one ANN teacher every cell distils from (``OUT/teacher``: seed 0, ``--teacher-lr``)."""
    from htakl_deploy.grid import Teacher, absolute

    return Teacher("teacher", absolute(base_config(settings, lr=settings["teacher_lr"], seed=0, out_dir=str(out),
                                                   run_name="teacher")))


def grid_cell(cell: Cell, settings: dict, out: Path, teacher):
    """The runner's cell (``htakl_deploy.grid.Cell``) of a (method, T, seed[, override]) cell."""
    from htakl_deploy.distill.losses import TEACHERLESS
    from htakl_deploy.grid import Cell as GridCell, absolute
    from htakl_deploy.runconfig import PipelineConfig

    cfg = base_config(settings, method=cell.method, timesteps=cell.timesteps, seed=cell.seed, lr=settings["lr"],
                      teacher=str(teacher.checkpoint), out_dir=str(out / "runs"), run_name=cell.name,
                      **dict(cell.overrides))
    return GridCell(cell.name, absolute(cfg), PipelineConfig(**PIPELINE),
                    teacher=None if cell.method in TEACHERLESS else teacher.name)


def teacher_record(teacher) -> dict[str, Any] | None:
    done = teacher.run_dir / "teacher" / "done.json"
    if not done.is_file():
        return None
    rec = json.loads(done.read_text(encoding="utf-8"))
    summary = teacher.run_dir / "summary.json"
    return {"run_dir": str(teacher.run_dir), "test_acc": rec.get("test_acc"), "epochs": rec.get("epoch"),
            "wall_s": json.loads(summary.read_text())["wall_s"] if summary.is_file() else None}


def cell_record(cell: Cell, settings: dict, run_dir: Path, teacher: dict | None) -> dict[str, Any]:
    """A finished cell's row, read from its run directory (summary, simulation, energy, timings)."""
    def read(*parts):
        return json.loads(run_dir.joinpath(*parts).read_text(encoding="utf-8"))

    cfg, summary, sim, rep = read("config.json"), read("summary.json"), read("simulate", "emulator", "simulate.json"), \
        read("energy", "emulator.json")
    stages = read("pipeline.json")["stages"]
    wall = {"distill": stages["distill"]["wall_s"], "export": stages["export"]["wall_s"],
            "emulator": stages["simulate:emulator"]["wall_s"], "energy": stages["energy"]["wall_s"],
            "report": stages["report"]["wall_s"]}
    wall["total"] = sum(wall.values())
    student, ps = summary["student"], rep["per_sample"]
    return {
        "format": CELL_FORMAT, "cell": cell.name, "data": settings["data"], "method": cell.method,
        "timesteps": cell.timesteps, "seed": cell.seed, "overrides": dict(cell.overrides),
        "delta": cfg["delta"], "head_weight": cfg["head_weight"],
        "epochs": cfg["epochs"], "teacher_epochs": settings["teacher_epochs"],
        "teacher_acc": (teacher or {}).get("test_acc"),
        "float_acc": student["test_acc"], "float_best_acc": student.get("best_test_acc"),
        "emulator_acc": sim["accuracy"], "test_samples": sim["samples"],
        "firing_rate": rep["totals"]["firing_rate"], "firing_rate_layers": sim["firing_rate"],
        "acs_per_sample": ps["acs"], "macs_per_sample": ps["macs"], "spikes_per_sample": ps["spikes"],
        "synaptic_ops_per_sample": ps["synaptic_ops"], "energy_pj_per_sample": ps["energy_pj"],
        "energy_uj_per_sample": ps["energy_pj"] * 1e-6,
        "train_images_per_s": student.get("images_per_s"), "wall_s": wall,
        "loadavg_1m": os.getloadavg()[0], "run_dir": str(run_dir),
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_cells(cells: list[Cell], settings: dict, out: Path, teacher, args, say: Callable[[str], None],
              keep_artefacts: bool, workers: int) -> tuple[list[str], list[str]]:
    """Run ``cells`` on Ray (``htakl_deploy.grid.run_grid``); each finished cell's row is written to
    ``OUT/cells/<cell>.json`` as it ends (and its large files deleted), a failed one's error to
    ``OUT/errors/<cell>.error.json``. Returns (ran, failed)."""
    from htakl_deploy.cluster import ray_address
    from htakl_deploy.grid import run_grid

    by_name = {c.name: c for c in cells}
    ran, failed = [], []

    def on_done(rec: dict) -> None:
        cell, run_dir = by_name[rec["cell"]], Path(rec["run_dir"])
        if rec["status"] == "failed":
            failed.append(cell.name)
            write_json(out / "errors" / f"{cell.name}.error.json", {"cell": cell.name, "error": rec["error"],
                                                                     "log": rec["log"]})
            return
        row = cell_record(cell, settings, run_dir, teacher_record(teacher))
        write_json(out / "cells" / f"{cell.name}.json", row)
        (out / "errors" / f"{cell.name}.error.json").unlink(missing_ok=True)
        if not keep_artefacts:  # large on Fashion-MNIST (spikes ~GB, Lava artefact ~80 MB); the counts are in
            (run_dir / "simulate" / "emulator" / "spikes.h5").unlink(missing_ok=True)  # energy/emulator.json,
            (run_dir / "export" / "student.lava.npz").unlink(missing_ok=True)  # `export --target lava` rebuilds it
        ran.append(cell.name)
        say(f"[grid]   {cell.name}: float {row['float_acc']:.4f} emulator {row['emulator_acc']:.4f} "
            f"rate {row['firing_rate']:.3f} {row['energy_uj_per_sample']:.4f} µJ")

    address = ray_address(args.ray_address)
    run_grid([grid_cell(c, settings, out, teacher) for c in cells], [teacher], address=address,
             cpus=None if address else workers * args.threads, cell_cpus=args.threads, say=say, on_done=on_done)
    return ran, failed


# ----------------------------------------------------------------------------- results
CSV_COLUMNS = ("cell", "method", "timesteps", "seed", "delta", "head_weight", "epochs", "float_acc",
               "float_best_acc", "emulator_acc", "test_samples", "firing_rate", "acs_per_sample",
               "macs_per_sample", "spikes_per_sample", "energy_uj_per_sample", "train_images_per_s",
               "wall_s_total", "finished_utc")


def collect(out: Path, settings: dict, planned: list[Cell], teacher: dict | None) -> dict[str, Any]:
    cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "cells").glob("*.json"))]
    names = {c["cell"] for c in cells}
    failed = sorted(p.name[: -len(".error.json")] for p in (out / "errors").glob("*.error.json")
                    if p.name[: -len(".error.json")] not in names) if (out / "errors").exists() else []
    commands = []
    log = out / "commands.jsonl"
    if log.exists():
        commands = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    results = {
        "format": "htakl-bench-grid/1", "settings": settings, "teacher": teacher or {},
        "threads": settings.get("threads"), "commands": commands,
        "cells": sorted(cells, key=lambda c: (c["timesteps"], results_md._method_rank(c["method"]),
                                              sorted(c["overrides"].items()), c["seed"])),
        "missing": [c.name for c in planned if c.name not in names], "failed": failed,
    }
    results["aggregate"] = results_md.aggregate(cells, ablation_timesteps=settings["ablation_timesteps"])
    write_json(out / "results.json", results)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for c in results["cells"]:
            w.writerow({k: (c["wall_s"]["total"] if k == "wall_s_total" else c.get(k)) for k in CSV_COLUMNS})
    return results


def pin_settings(out: Path, settings: dict) -> None:
    """Refuse to mix budgets in one ``--out``; the first invocation writes ``OUT/grid.json``."""
    path = out / "grid.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (saved.get(k), settings.get(k)) for k in BUDGET_KEYS if saved.get(k) != settings.get(k)}
        if diff:
            what = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise UserError(f"--out {out} holds a grid with another budget ({what}); use another --out")
        return
    write_json(path, {k: settings[k] for k in BUDGET_KEYS})


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", default="digits", help="digits | fashion-mnist (any data set distill takes)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--model", default="convnet")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--timesteps", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default: the data set's)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: the data set's)")
    p.add_argument("--lr", type=float, default=0.01, help="student learning rate")
    p.add_argument("--teacher-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--ablations", action="store_true", help="add the δ and fixed-head-weight ablations")
    p.add_argument("--no-grid", action="store_true", help="only the ablations")
    p.add_argument("--ablation-timesteps", type=int, default=2)
    p.add_argument("--ablation-seeds", nargs="+", type=int, default=None,
                   help="seeds of the ablation cells (default: --seeds)")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/<data>")
    p.add_argument("--results-md", type=Path, default=None,
                   help="the results page to write (default: OUT/RESULTS.md, beside the results; docs/RESULTS.md is "
                        "re-rendered from the default OUTs by bench/results_md.py)")
    p.add_argument("--keep-artefacts", action="store_true",
                   help="keep each cell's spikes.h5 and Lava artefact (student.lava.npz); deleted by default")
    p.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per cell (the machine is shared)")
    p.add_argument("--workers", type=int, default=1,
                   help="cells run side by side on a local Ray cluster (default 1; 2 on a 2-core machine)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="run the cells on an existing Ray cluster (default: $RAY_ADDRESS, else a local one)")
    p.add_argument("--max-cells", type=int, default=None, help="run at most this many of the cells not done yet")
    p.add_argument("--note", default=None, help="a sentence printed above the data set's tables")
    p.add_argument("--measure-images", type=int, default=None, metavar="N",
                   help="instead of the grid: time one epoch of every (method, T) on N training images "
                        "(seed 0, into OUT-measure) and write OUT-estimate.json, the full grid's estimated wall "
                        "time, which RESULTS.md shows until the grid has run")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers: expected 1 or more, got {args.workers}")
    if args.threads < 1:
        p.error(f"--threads: expected 1 or more, got {args.threads}")
    args._argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the grid; returns ``{"ran", "skipped", "failed", "results", "markdown"}``."""
    from htakl_deploy.distill.config import DEFAULT_EPOCHS, DEFAULT_TEACHER_EPOCHS
    from htakl_deploy.distill.methods import LOSSES

    args = parse_args(argv)
    unknown = [m for m in args.methods if m not in LOSSES]
    if unknown:
        raise UserError(f"--methods: unknown {unknown}; expected some of {', '.join(LOSSES)}")
    if args.data not in DEFAULT_EPOCHS:
        raise UserError(f"--data: got {args.data!r}, expected one of {', '.join(DEFAULT_EPOCHS)}")
    out = (args.out or results_md.REPO / "bench" / "results" / args.data).resolve()
    settings = {
        "data": args.data, "data_root": args.data_root, "model": args.model,
        "epochs": args.epochs or DEFAULT_EPOCHS[args.data],
        "teacher_epochs": args.teacher_epochs or DEFAULT_TEACHER_EPOCHS[args.data],
        "lr": args.lr, "teacher_lr": args.teacher_lr, "batch_size": args.batch_size,
        "limit_train": args.limit_train, "limit_test": args.limit_test,
        "ablation_timesteps": args.ablation_timesteps, "threads": args.threads, "note": args.note,
    }
    if args.measure_images:
        return measure(args, settings, out, say)
    out.mkdir(parents=True, exist_ok=True)
    pin_settings(out, settings)
    prev = out / "results.json"
    if args.note is None and prev.exists():  # keep a note given by an earlier invocation
        settings["note"] = json.loads(prev.read_text(encoding="utf-8"))["settings"].get("note")
    planned = plan_cells(args.methods, args.timesteps, args.seeds, ablations=args.ablations,
                         ablation_timesteps=args.ablation_timesteps,
                         ablation_seeds=args.ablation_seeds or args.seeds, grid=not args.no_grid)
    # a cell planned by an earlier invocation stays expected (a --methods subset does not hide it)
    known = out / "planned.json"
    names = json.loads(known.read_text()) if known.exists() else []
    all_planned = list(dict.fromkeys([*_cells_from_names(names), *planned]))
    write_json(known, [c.name for c in all_planned])

    command = _command(argv_of(args))
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    git = git_state(results_md.REPO)  # the code this process imports (later commits do not reach it)
    skipped = [c.name for c in planned if (out / "cells" / f"{c.name}.json").exists()]
    todo = [c for c in planned if c.name not in skipped][:args.max_cells]
    teacher = shared_teacher(settings, out)
    ran, failed = [], []
    try:
        ran, failed = run_cells(todo, settings, out, teacher, args, say, args.keep_artefacts, args.workers)
    finally:  # also after Ctrl-C: the cells finished so far are in the tables
        settings["train_samples"] = _train_samples(out)
        results, md = _log_and_render(args, out, settings, all_planned, teacher_record(teacher), command=command,
                                      started=started, git=git, wall_s=time.perf_counter() - t_start,
                                      ran=ran, skipped=skipped, failed=failed, say=say)
    return {"ran": ran, "skipped": skipped, "failed": failed, "results": results, "markdown": md}


def _log_and_render(args, out: Path, settings: dict, planned: list[Cell], teacher: dict | None, *, command: str,
                    started: str, git: dict, wall_s: float, ran: list, skipped: list, failed: list,
                    say: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    """Append this invocation to ``OUT/commands.jsonl``, aggregate the cells, render the results page
    (``--results-md``, default ``OUT/RESULTS.md``)."""
    with open(out / "commands.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"command": command, "started_utc": started, "git": git, "wall_s": round(wall_s, 1),
                             "ran": len(ran), "skipped": len(skipped), "failed": len(failed),
                             "workers": args.workers}) + "\n")
    results = collect(out, settings, planned, teacher)
    md = results_md.write(args.results_md or out / "RESULTS.md",
                          results_md.sources_with_defaults({args.data: out / "results.json"}))
    say(f"[grid] {len(ran)} ran, {len(skipped)} skipped, {len(failed)} failed; {out / 'results.json'}, {md}")
    return results, md


def measure(args: argparse.Namespace, settings: dict, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Time one epoch per (method, T) on ``--measure-images`` images; extrapolate to the full grid.

    Per cell: training time per image (the epoch's own images/s), the rest of the distillation
    (model set-up, test evaluation) per test image, emulator + energy per test image, export as
    measured. Scaled to the full train/test split and the grid's epochs; ablation cells at their T.
    """
    from htakl_deploy.distill.recipe import load_data
    from htakl_deploy.distill.config import DistillConfig

    n = args.measure_images
    n_test = min(n, 1000)
    mout = out.parent / f"{out.name}-measure"
    mset = {**settings, "epochs": 1, "teacher_epochs": 1, "limit_train": n, "limit_test": n_test}
    mout.mkdir(parents=True, exist_ok=True)
    pin_settings(mout, mset)
    kw = {} if settings["data_root"] is None else {"data_root": settings["data_root"]}
    full = DistillConfig(data=settings["data"], **kw)
    t0 = time.perf_counter()
    train, test = load_data(full.replace(limit_train=settings["limit_train"], limit_test=settings["limit_test"]))
    load_s = time.perf_counter() - t0  # paid once per cell, not per test image
    n_train_full, n_test_full = len(train), len(test)
    cells = [Cell(m, t, args.seeds[0]) for t in args.timesteps for m in args.methods]
    todo = [c for c in cells if not (mout / "cells" / f"{c.name}.json").exists()]
    teacher = shared_teacher(mset, mout)
    if todo:  # one cell at a time: the timings are the estimate's unit
        say(f"[measure] {len(todo)} cells on {n} images …")
        ran, failed = run_cells(todo, mset, mout, teacher, args, say, keep_artefacts=False, workers=1)
        if failed:
            raise UserError(f"--measure-images: cells {failed} failed; see {mout / 'errors'}")
    for c in cells:
        shutil.rmtree(mout / "runs" / c.name, ignore_errors=True)  # only the timings are needed
    measured = {}
    for cell in cells:
        m, t = cell.method, cell.timesteps
        rec = json.loads((mout / "cells" / f"{cell.name}.json").read_text(encoding="utf-8"))
        w = rec["wall_s"]
        train_s = n // settings["batch_size"] * settings["batch_size"] / rec["train_images_per_s"]
        eval_s = max(w["distill"] - train_s - load_s, 0.0) * n_test_full / n_test  # per epoch
        # the emulator loads the data set once more; the report is once per cell
        post = (load_s + w["export"] + w.get("report", 0.0)
                + (max(w["emulator"] - load_s, 0.0) + w["energy"]) * n_test_full / n_test)
        measured[cell.name] = {"method": m, "timesteps": t, "train_images_per_s": rec["train_images_per_s"],
                               "train_epoch_s_full": n_train_full / rec["train_images_per_s"],
                               "eval_epoch_s_full": eval_s, "post_s_full": post,
                               "loadavg_1m": rec["loadavg_1m"]}
    teacher = teacher_record(teacher)
    teacher_epoch_s = max(teacher["wall_s"] - load_s, 0.0) * n_train_full / n
    planned = plan_cells(args.methods, args.timesteps, args.seeds, ablations=True,
                         ablation_timesteps=args.ablation_timesteps,
                         ablation_seeds=args.ablation_seeds or args.seeds)
    by = {(v["method"], v["timesteps"]): v for v in measured.values()}
    train_all, eval_all, post_all = (sum(by[(c.method, c.timesteps)][k] for c in planned)
                                     for k in ("train_epoch_s_full", "eval_epoch_s_full", "post_s_full"))

    def total_h(epochs: int, teacher_epochs: int, frac: float = 1.0) -> float:
        """Teacher + cells with ``frac`` of the training images (``--limit-train``), full test split."""
        return (teacher_epochs * teacher_epoch_s * frac + epochs * (train_all * frac + eval_all) + post_all) / 3600

    e_s, e_t = settings["epochs"], settings["teacher_epochs"]
    budget_h, step = 3.0, 5000
    fits = []
    for e in (1, 2, 3, 5):
        best = max((k * step for k in range(1, n_train_full // step + 1)
                    if total_h(e, e_t, k * step / n_train_full) <= budget_h), default=None)
        if best:
            fits.append(f"`--epochs {e} --limit-train {best}` ≈ {total_h(e, e_t, best / n_train_full):.1f} h")
    load = statistics.fmean(v["loadavg_1m"] for v in measured.values())
    ips = {t: statistics.fmean(v["train_images_per_s"] for v in measured.values() if v["timesteps"] == t)
           for t in args.timesteps}
    lines = [
        f"Measured with `{_command(argv_of(args))}` (one epoch of each method × T on {n} of the "
        f"{n_train_full} training images, {args.threads} thread(s), 1-min load average {load:.2f}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC):",
        "",
        "- student training throughput, mean over the methods: "
        + ", ".join(f"T={t} {v:.0f} images/s" for t, v in ips.items())
        + f"; teacher epoch ≈ {teacher_epoch_s / 60:.1f} min",
        f"- the {len(planned)} cells ({len(args.methods)} methods × {len(args.timesteps)} T × {len(args.seeds)} seeds "
        f"+ ablations) cost ≈ {train_all / 3600:.1f} h per student epoch on the full training set + "
        f"{eval_all / 3600:.2f} h per epoch of test evaluation ({n_test_full} images), plus "
        f"{post_all / 3600:.2f} h of export/emulator/energy",
        f"- estimated wall time at the default {e_s} student / {e_t} teacher epochs: **{total_h(e_s, e_t):.1f} h**; "
        f"at 1 student epoch on the full training set: {total_h(1, e_t):.1f} h",
        f"- within {budget_h:g} h (same budget for every method, full test split, teacher {e_t} epochs on the same "
        f"images): " + ("; ".join(fits) if fits else "nothing fits — drop methods, seeds or T") + ".",
    ]
    rec = {"format": "htakl-bench-estimate/1", "data": settings["data"], "measure_images": n,
           "train_images_full": n_train_full, "test_images_full": n_test_full, "measured": measured,
           "teacher_epoch_s_full": teacher_epoch_s, "train_epoch_all_cells_s": train_all,
           "eval_epoch_all_cells_s": eval_all, "post_all_cells_s": post_all,
           "estimate_h": {"default_epochs": total_h(e_s, e_t), "one_epoch": total_h(1, e_t)}, "lines": lines}
    write_json(out.parent / f"{out.name}-estimate.json", rec)  # beside OUT: the default OUT's is the page's
    md = results_md.write(args.results_md or out.parent / f"{out.name}-estimate.md", results_md.sources_with_defaults())
    say("\n".join(lines))
    return {"ran": [], "skipped": [], "failed": [], "results": rec, "markdown": md}


def argv_of(args: argparse.Namespace) -> list[str]:
    return getattr(args, "_argv")


def _command(argv: list[str]) -> str:
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    return env + ".venv/bin/python " + shlex.join([os.path.relpath(__file__, results_md.REPO), *argv])


def _cells_from_names(names: list[str]) -> list[Cell]:
    cells = []
    for n in names:
        head, t, s = n.rsplit("-", 2)
        method, *tags = head.split("_")
        over = tuple(("delta" if tag.startswith("d") else "head_weight",
                      float(tag[1:] if tag.startswith("d") else tag[2:])) for tag in tags)
        cells.append(Cell(method, int(t[1:]), int(s[1:]), over))
    return cells


def _train_samples(out: Path) -> int | None:
    cfg = out / "teacher" / "config.json"
    if not cfg.exists():
        return None
    from htakl_deploy.distill.recipe import load_data, read_run

    train, _ = load_data(read_run(out / "teacher")[0])
    return len(train)


if __name__ == "__main__":
    try:
        res = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the finished cells are in the tables; run the same command again to continue",
              file=sys.stderr)
        sys.exit(130)
    sys.exit(1 if res["failed"] else 0)
