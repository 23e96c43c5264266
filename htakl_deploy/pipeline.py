"""``htakl-deploy run``: the whole pipeline in one run directory.

train the ANN teacher → distil the SNN student (HTA-KL by default) → export (NIR, ONNX, the Lava
artefact) → simulate (float student in PyTorch, the bit-exact emulator, Lava ``fixed_pt``) →
count ACs/MACs and energy for every backend → map onto Loihi 2 neurocores → report (md, html, json).

Each stage writes into the run directory, so a stage's output can be inspected — or a stage
re-run by hand with its own command — without repeating the others. ``--resume RUN_DIR``
continues a run whose training was interrupted and then runs the later stages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from htakl_deploy.atomic import write_json
from htakl_deploy.distill import dist, recipe
from htakl_deploy.distill.config import DistillConfig

SIM_BACKENDS = ("torch-float", "emulator", "lava-fixed_pt")


def run_pipeline(cfg: DistillConfig, *, resume_dir: str | None = None, teacher_only: bool = False,
                 lava_samples: int | None = None, lava: bool = True, preset: str = "paper-45nm",
                 map_target: str | None = "loihi2", say: Callable[[str], None] = print) -> dict[str, Any]:
    """distil (or, with ``resume_dir``, continue the run there with ``cfg``, its saved config) →
    export → simulate → energy → report."""
    from htakl_deploy.energy.document import write_report
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import report_for_files
    from htakl_deploy.export.pipeline import run_export
    from htakl_deploy.hw.simulate import simulate

    from htakl_deploy.hw.mapping import map_run_dir
    from htakl_deploy.hw.target import load_target

    model = load_preset(preset)  # a bad preset (or hardware target) fails before hours of training
    if map_target:
        load_target(map_target, flag="--map-target")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    summary = recipe.run(cfg, dist.DistEnv(), teacher_only=teacher_only, resume_dir=resume_dir)
    run_dir = Path(summary["run_dir"])
    timings["distill_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    say(f"[run] export → {run_dir / 'export'}")
    exported = run_export(run_dir, ["nir", "onnx", "lava"], lava_check=4 if lava else 0)
    for warning in exported["warnings"]:
        say(f"[run]   warning: {warning}")
    timings["export_s"] = time.perf_counter() - t

    sims = {}
    for backend in (b for b in SIM_BACKENDS if lava or not b.startswith("lava")):
        t = time.perf_counter()
        samples = lava_samples if backend.startswith("lava") else None
        say(f"[run] simulate {backend}" + (f" ({samples} samples)" if samples else ""))
        sims[backend] = simulate(run_dir, backend=backend, samples=samples)
        timings[f"simulate_{backend}_s"] = time.perf_counter() - t
        say(f"[run]   accuracy {sims[backend]['accuracy']:.4f} on {sims[backend]['samples']} samples, "
            f"{sims[backend]['wall_s']:.1f} s")

    t = time.perf_counter()
    graph = run_dir / "export" / "student_quant.nir"
    for backend, sim in sims.items():
        rep = report_for_files(Path(sim["out_dir"]) / "spikes.h5", graph, model)
        write_json(run_dir / "energy" / f"{backend}.json", rep)
    timings["energy_s"] = time.perf_counter() - t

    if map_target:
        t = time.perf_counter()
        say(f"[run] map onto {map_target} → {run_dir / 'map'}")
        say(f"[run]   {map_run_dir(run_dir, map_target)}")
        timings["map_s"] = time.perf_counter() - t

    t = time.perf_counter()
    write_report(run_dir)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    write_json(run_dir / "pipeline.json", {"timings": timings, "lava": lava, "lava_samples": lava_samples,
                                           "preset": preset, "map_target": map_target})
    say(f"[run] report → {run_dir / 'report.html'} ({timings['total_s']:.0f} s in total)")
    return {"run_dir": str(run_dir), "timings": timings,
            "accuracy": {b: s["accuracy"] for b, s in sims.items()},
            "student_test_acc": summary.get("student", {}).get("test_acc")}
