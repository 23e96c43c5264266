"""``htakl-deploy run``: the whole pipeline in one run directory.

train the ANN teacher → distil the SNN student (HTA-KL by default) → export (NIR, ONNX, the Lava
artefact) → simulate (float student in PyTorch, the bit-exact emulator, Lava ``fixed_pt``) →
count ACs/MACs and energy for every backend → map onto Loihi 2 neurocores → report (md, html, json).

Each stage writes into the run directory, so a stage's output can be inspected — or a stage
re-run by hand with its own command — without repeating the others.

``pipeline.json`` in the run directory holds the run's :class:`PipelineConfig` (written before
training starts) and, per stage, whether it finished, its wall time and the settings it ran with.
``--resume RUN_DIR`` restores those settings, skips every finished stage whose settings did not
change and whose outputs are all there (``missing_output``: ``pipeline.json`` alone is not
trusted — a deleted ``export/`` is exported again), continues an interrupted training from its
``last.pt``, and runs the rest; once a stage runs again, every later stage runs again too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from htakl_deploy.atomic import write_json
from htakl_deploy.errors import UserError
from htakl_deploy.runconfig import PipelineConfig, pipeline_config_from_dict

FORMAT = "htakl-deploy/pipeline"
PIPELINE_FILE = "pipeline.json"


def stage_plan(settings: PipelineConfig) -> list[tuple[str, dict[str, Any]]]:
    """The stages in order, each with the settings its output depends on."""
    stages: list[tuple[str, dict[str, Any]]] = [
        ("distill", {}),
        ("export", {"export_targets": list(settings.export_targets), "lava_check": settings.effective_lava_check}),
    ]
    for b in settings.sim_backends:
        stages.append((f"simulate:{b}", {"samples": settings.lava_samples if b.startswith("lava") else None}))
    stages.append(("energy", {"preset": settings.preset, "backends": list(settings.sim_backends)}))
    if settings.map_target:
        stages.append(("map", {"map_target": settings.map_target, "backends": list(settings.sim_backends)}))
    stages.append(("report", {"backends": list(settings.sim_backends)}))
    return stages


_EXPORT_FILES = {"nir": ("student_float.nir", "student_quant.nir"), "lava": ("student.lava.npz",),
                 "netx": ("student.netx.h5",), "onnx": ("student_T*.onnx",)}


def missing_output(run_dir: Path, stage: str, inputs: dict[str, Any], settings: PipelineConfig) -> str | None:
    """What is wrong with the outputs a finished ``stage`` should have left in ``run_dir`` ("X is
    missing"), None if they are all there."""
    if stage == "distill":
        files = ["summary.json"]
    elif stage == "export":
        files = ["export/export_report.json", *(f"export/{f}" for t in inputs.get("export_targets", [])
                                                for f in _EXPORT_FILES.get(t, ()))]
    elif stage.startswith("simulate:"):
        b = stage.split(":", 1)[1]
        files = [f"simulate/{b}/simulate.json", f"simulate/{b}/spikes.h5"]
    elif stage == "energy":
        files = [f"energy/{b}.json" for b in settings.sim_backends]
    elif stage == "map":
        files = [f"map/{inputs.get('map_target')}.json"]  # what-ifs go to map/what-if/ (hw.mapping.map_path)
    elif stage == "report":
        files = ["report.md", "report.html", "report.json"]
    else:
        return None
    for rel in files:
        found = list(run_dir.glob(rel)) if "*" in rel else [run_dir / rel]
        if not any(p.is_file() and p.stat().st_size > 0 for p in found):
            return f"{rel} is missing"
    return None


def read_pipeline_file(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved ``pipeline.json`` ({"settings", "stages", ...}); ``None`` for a run directory
    made by ``distill`` (no pipeline yet). Files of older versions (settings at top level) are read."""
    path = Path(run_dir) / PIPELINE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--resume: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"--resume: {path}: expected a JSON object")
    if "settings" not in data:  # before version 1: {"timings", "lava", "lava_samples", "preset"}
        data = {"settings": {k: data[k] for k in ("lava", "lava_samples", "preset") if k in data},
                "stages": {}}
    return data


def saved_settings(run_dir: str | Path) -> PipelineConfig | None:
    data = read_pipeline_file(run_dir)
    if data is None:
        return None
    return pipeline_config_from_dict(data.get("settings", {}), str(Path(run_dir) / PIPELINE_FILE))


class _Record:
    """``pipeline.json``, rewritten atomically after every stage."""

    def __init__(self, run_dir: Path, settings: PipelineConfig, previous: dict[str, Any] | None):
        self.path = run_dir / PIPELINE_FILE
        self.data: dict[str, Any] = {"format": FORMAT, "version": 1, "settings": settings.to_dict(),
                                     "stages": dict((previous or {}).get("stages", {}))}

    def done(self, stage: str, inputs: dict[str, Any]) -> bool:
        entry = self.data["stages"].get(stage)
        return bool(entry and entry.get("done") and entry.get("inputs") == inputs)

    def mark(self, stage: str, inputs: dict[str, Any], wall_s: float, **extra: Any) -> None:
        self.data["stages"][stage] = {"done": True, "inputs": inputs, "wall_s": wall_s, **extra}
        self.save()

    def forget_after(self, stage: str, order: list[str]) -> None:
        """A stage runs again: the later stages' records no longer describe their inputs."""
        for later in order[order.index(stage) + 1:]:
            self.data["stages"].pop(later, None)

    def save(self) -> None:
        write_json(self.path, self.data)


def run_pipeline(cfg, settings: PipelineConfig | None = None, *, resume_dir: str | None = None,
                 teacher_only: bool = False, say: Callable[[str], None] = print,
                 progress: bool = True, strict: bool = False) -> dict[str, Any]:
    """distil (or, with ``resume_dir``, continue the run there with ``cfg``, its saved config) →
    export → simulate → energy → report, as ``settings`` says. Returns the machine-readable
    summary (also what ``run --json`` prints). The run directory is claimed
    (``htakl_deploy.rundir``) from the moment it exists until the last stage ends."""
    holder: dict[str, Any] = {}
    try:
        result = _run_pipeline(cfg, settings, resume_dir, teacher_only, say, progress, strict, holder)
    except BaseException as e:
        if "claim" in holder:
            holder["claim"].release(failed=isinstance(e, Exception))
        raise
    holder["claim"].release()
    return result


def _run_pipeline(cfg, settings, resume_dir, teacher_only, say, progress, strict, holder) -> dict[str, Any]:
    from htakl_deploy.rundir import claim
    from htakl_deploy.distill import dist, recipe
    from htakl_deploy.energy.document import write_report
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import report_for_files
    from htakl_deploy.export.pipeline import run_export
    from htakl_deploy.hw.simulate import simulate

    settings = settings or PipelineConfig()
    model = load_preset(settings.preset)  # a bad preset fails before hours of training
    previous = read_pipeline_file(resume_dir) if resume_dir else None
    plan = stage_plan(settings)
    order = [name for name, _ in plan]
    n = len(plan)
    timings: dict[str, float] = {}
    t_total = time.perf_counter()

    def header(i: int, name: str, what: str) -> None:
        say(f"[{i}/{n}] {name}: {what}")

    def finished(name: str, wall_s: float, note: str = "") -> None:
        say(f"      done in {_duration(wall_s)}" + (f" — {note}" if note else ""))

    def opened(run_dir: Path) -> None:
        holder["claim"] = claim(run_dir, "--resume" if resume_dir else "--out-dir").acquire()  # held to the end
        holder["record"] = _Record(run_dir, settings, previous)
        holder["record"].save()

    rerun_from = None  # once a stage runs, every later one runs too

    # ---------------------------------------------------------------- 1: distill
    inputs = dict(plan[0][1])
    if resume_dir is not None:
        opened(Path(resume_dir))
    record_done = resume_dir is not None and holder["record"].done("distill", inputs)
    summary_path = Path(resume_dir) / "summary.json" if resume_dir else None
    if record_done and summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        header(1, "distill", "already done, skipped")
    else:
        what = "teacher" if teacher_only else f"{cfg.method} student, T={cfg.timesteps}, {cfg.model} on {cfg.data}"
        t = time.perf_counter()

        def started(run_dir: Path) -> None:  # every check passed: no stage header before a refusal
            if resume_dir is None:
                opened(run_dir)
            header(1, "distill", what + (" (continuing)" if resume_dir else ""))

        summary = recipe.run(cfg, dist.DistEnv(), teacher_only=teacher_only, resume_dir=resume_dir, on_open=started)
        timings["distill_s"] = time.perf_counter() - t
        holder["record"].mark("distill", inputs, timings["distill_s"])
        student = summary.get("student", {})
        finished("distill", timings["distill_s"],
                 f"student test accuracy {100 * student['test_acc']:.2f} %" if "test_acc" in student else "")
        rerun_from = "distill" if resume_dir else None
    record: _Record = holder["record"]
    run_dir = Path(summary["run_dir"]) if resume_dir is None else Path(resume_dir)
    if rerun_from:
        record.forget_after(rerun_from, order)

    def skip(i: int, name: str, inputs: dict[str, Any]) -> bool:
        nonlocal rerun_from
        if rerun_from is None and record.done(name, inputs):
            gone = missing_output(run_dir, name, inputs, settings)
            if gone is None:
                header(i, name, "already done, skipped")
                return True
            say(f"      {name}: pipeline.json says done, but {gone}: running it again")
        if rerun_from is None:
            rerun_from = name
            record.forget_after(name, order)
        return False

    # ---------------------------------------------------------------- 2: export
    inputs = plan[1][1]
    warnings: list[str] = []
    if not skip(2, "export", inputs):
        header(2, "export", f"{', '.join(settings.export_targets)} → {run_dir / 'export'}")
        t = time.perf_counter()
        # the float vs integer check runs on the test images training was evaluated on
        # the data folder comes from the run's own config (the user's --data-root), never from the files
        exported = run_export(run_dir, list(settings.export_targets), lava_check=settings.effective_lava_check,
                              data_root=cfg.data_root,
                              samples=cfg.limit_test)
        warnings = exported["warnings"]
        timings["export_s"] = time.perf_counter() - t
        record.mark("export", inputs, timings["export_s"])
        finished("export", timings["export_s"])
    else:
        warnings = _saved_export_warnings(run_dir)
    for warning in warnings:
        say(f"      warning: {warning}")

    # ---------------------------------------------------------------- 3: simulate
    sims: dict[str, dict[str, Any]] = {}
    i = 2
    for backend in settings.sim_backends:
        i += 1
        name = f"simulate:{backend}"
        inputs = plan[i - 1][1]
        if skip(i, name, inputs):
            sims[backend] = _saved_simulation(run_dir, backend)
            continue
        samples = inputs["samples"]
        header(i, name, f"{samples} samples" if samples else "every test image of the run")
        t = time.perf_counter()
        with _progress_bar(progress, backend, samples) as bar:
            sims[backend] = simulate(run_dir, backend=backend, samples=samples, progress=bar,
                                     data_root=cfg.data_root, out_dir=run_dir / "simulate" / backend,
                                     strict=strict)
        timings[f"simulate_{backend}_s"] = time.perf_counter() - t
        record.mark(name, inputs, timings[f"simulate_{backend}_s"])
        s = sims[backend]
        finished(name, timings[f"simulate_{backend}_s"],
                 f"accuracy {100 * s['accuracy']:.2f} % on {s['samples']} samples")
        for warning in s.get("warnings", []):
            say(f"      warning: {warning}")

    # ---------------------------------------------------------------- 4: energy
    i += 1
    inputs = plan[i - 1][1]
    graph = run_dir / "export" / "student_quant.nir"
    energies: dict[str, dict[str, Any]] = {}
    if not skip(i, "energy", inputs):
        header(i, "energy", f"ACs/MACs from every spike, priced with {settings.preset}")
        t = time.perf_counter()
        for backend, sim in sims.items():
            energies[backend] = report_for_files(run_dir / "simulate" / backend / "spikes.h5", graph, model)
            write_json(run_dir / "energy" / f"{backend}.json", energies[backend])
        timings["energy_s"] = time.perf_counter() - t
        record.mark("energy", inputs, timings["energy_s"])
        finished("energy", timings["energy_s"])
    else:
        for backend in sims:
            energies[backend] = json.loads((run_dir / "energy" / f"{backend}.json").read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- 5: map
    if settings.map_target:
        from htakl_deploy.hw.mapping import map_run_dir

        i += 1
        inputs = plan[i - 1][1]
        if not skip(i, "map", inputs):
            header(i, "map", f"onto {settings.map_target} neurocores → {run_dir / 'map'}")
            t = time.perf_counter()
            line = map_run_dir(run_dir, settings.map_target)
            timings["map_s"] = time.perf_counter() - t
            record.mark("map", inputs, timings["map_s"])
            finished("map", timings["map_s"], line)

    # ---------------------------------------------------------------- 6: report
    i += 1
    inputs = plan[i - 1][1]
    if not skip(i, "report", inputs):
        header(i, "report", "report.md, report.html, report.json")
        t = time.perf_counter()
        report = write_report(run_dir)
        timings["report_s"] = time.perf_counter() - t
        sanity = [f"{w['code'].replace('_', ' ')}: {w['message']}" for w in report["warnings"]]
        record.mark("report", inputs, timings["report_s"], warnings=sanity)
        finished("report", timings["report_s"])
    else:
        sanity = (record.data["stages"].get("report") or {}).get("warnings", [])
    timings["total_s"] = time.perf_counter() - t_total
    record.data["timings"] = {**record.data.get("timings", {}), **timings}
    record.save()

    result = {
        "run_dir": str(run_dir), "report": str(run_dir / "report.html"), "timings": timings,
        "settings": settings.to_dict(),
        "accuracy": {b: s["accuracy"] for b, s in sims.items()},
        "samples": {b: s["samples"] for b, s in sims.items()},
        "energy_per_sample_uj": {b: e["per_sample"]["energy_pj"] * 1e-6 for b, e in energies.items()},
        "ann_teacher_energy_per_sample_uj": next(  # only a run distilled from a teacher has one
            (e["per_sample"]["ann_teacher_energy_pj"] * 1e-6 for e in energies.values()), None)
        if isinstance(summary.get("teacher"), dict) else None,
        "student_test_acc": summary.get("student", {}).get("test_acc"),
        "warnings": warnings, "report_warnings": sanity,
    }
    for line in summary_lines(result):
        say(line)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The short human summary ``run`` ends with."""
    lines = ["", f"run finished in {_duration(result['timings']['total_s'])}: {result['run_dir']}"]
    for backend, acc in result["accuracy"].items():
        energy = result["energy_per_sample_uj"].get(backend)
        acc_s = "no labels        " if acc is None else f"accuracy {100 * acc:6.2f} %"
        lines.append(f"  {backend:<16} {acc_s} on {result['samples'][backend]:>5} samples"
                     + (f"   {energy:.4f} µJ/sample" if energy is not None else ""))
    if result.get("ann_teacher_energy_per_sample_uj") is not None:
        lines.append(f"  {'ANN teacher':<16} {result['ann_teacher_energy_per_sample_uj']:.4f} µJ/sample (MACs only)")
    for w in result.get("report_warnings") or []:
        lines.append(f"  warning: {w}")
    if result["warnings"]:
        lines.append(f"  {len(result['warnings'])} export warning(s): see above and the report")
    lines.append(f"report: {result['report']}")
    return lines


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60)} s"


def _saved_export_warnings(run_dir: Path) -> list[str]:
    path = run_dir / "export" / "export_report.json"
    return json.loads(path.read_text(encoding="utf-8")).get("warnings", []) if path.is_file() else []


def _saved_simulation(run_dir: Path, backend: str) -> dict[str, Any]:
    out = run_dir / "simulate" / backend
    sim = json.loads((out / "simulate.json").read_text(encoding="utf-8"))
    sim["out_dir"] = str(out)
    return sim


class _progress_bar:
    """A tqdm bar on a terminal; ``simulate`` calls its ``progress(done)`` with the number of
    samples finished so far."""

    def __init__(self, on: bool, label: str, total: int | None = None):
        self.on, self.label, self.total, self.bar = on, label, total, None

    def __enter__(self):
        import sys

        if not self.on or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        def update(done: int) -> None:
            if self.bar is None:
                self.bar = tqdm(desc=f"      {self.label}", unit="sample", total=self.total, leave=False)
            self.bar.update(done - self.bar.n)

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def run_from_nir(nir_path: str | Path, *, data: str | None, dt_s: float | None, settings: PipelineConfig | None = None,
                 timesteps: int | None = None, run_name: str | None = None, out_dir: str = "runs",
                 data_root: str | None = None, limit_test: int | None = None, calibration: str | None = None,
                 say: Callable[[str], None] = print, progress: bool = True,
                 input_file: str | None = None, reset: list[str] | None = None,
                 strict: bool = False) -> dict[str, Any]:
    """``run --from-nir MODEL.nir``: no teacher, no distillation — export the foreign float graph
    (``export.nir_in``; ONNX needs a trained checkpoint and is left out) → simulate → energy →
    map → report, in a new run directory, with ``settings``' backends, preset and map target.

    ``--dt`` and the inputs are required: the graph's test images come from ``data`` (its input
    shape is checked against the graph's) or the user's ``input_file`` (``distill.data.inputfile``:
    event frames, sequences or static inputs, labels optional), and NIR files do not record the step
    their exporter divided by. Everything that can be refused is checked before the run directory is created, and
    a directory this call created is removed again if a stage fails."""
    from datetime import datetime, timezone

    from htakl_deploy.distill.runlog import provenance
    from htakl_deploy.energy.document import write_report
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import report_for_files
    from htakl_deploy.export.nir_in import DEFAULT_TIMESTEPS, NIR_TARGETS, _inputs, export_from_nir, load_nir_graph
    from htakl_deploy.hw.simulate import simulate
    from htakl_deploy.rundir import claim

    settings = settings or PipelineConfig()
    path = Path(nir_path)
    if (data is None) == (input_file is None):
        raise UserError("run --from-nir needs --data NAME (the data set whose test images the graph runs on) or "
                        "--input FILE (your own inputs), one of them")
    from htakl_deploy.export.netx_in import is_netx

    if dt_s is None and not is_netx(path):  # a netx file counts steps: no dt
        raise UserError("run --from-nir needs --dt SECONDS: the time step the NIR file's exporter divided by "
                        "(1e-4 for SpikingJelly's and snnTorch's exporters, 1e-6 for Norse 1.1.0's; see docs/NIR.md)")
    model = load_preset(settings.preset)
    graph, _ = load_nir_graph(path, dt_s, reset)  # refusals (bad file, unknown node, wrong dt) before any folder
    probe = _inputs(graph, data, data_root, 1, input_file, timesteps)  # the inputs exist and fit the graph
    probe.close()
    if calibration is not None:  # a bad calibration source is refused before the run directory exists
        from htakl_deploy.export.calibration import load_calibration

        load_calibration(calibration, graph.shapes[graph.input_name], timesteps or DEFAULT_TIMESTEPS,
                         data_root=data_root, max_samples=1).close()
    t_steps = probe.timesteps if input_file is not None else (timesteps or DEFAULT_TIMESTEPS)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    source = data if input_file is None else Path(input_file).stem
    run_dir = Path(out_dir) / (run_name or f"{source}-{path.stem}-nir-T{t_steps}-{stamp}")
    targets = [t for t in settings.export_targets if t in NIR_TARGETS]
    held = claim(run_dir, "--run-name", new_run=True).acquire()  # one writer; a refused run leaves no folder
    timings: dict[str, float] = {}
    t_total = time.perf_counter()
    stages = ["export", *(f"simulate:{b}" for b in settings.sim_backends), "energy",
              *(["map"] if settings.map_target else []), "report"]
    n = len(stages)
    try:
        write_json(run_dir / "provenance.json", provenance(0, 1))
        write_json(run_dir / "config.json", {
            "from_nir": str(path), "dt_s": None if dt_s is None else float(dt_s), "data": data, "input": input_file,
            "reset": reset, "timesteps": t_steps,
            "encoding": "direct" if input_file is None else probe.kind,
            "model": f"NIR graph {path.name}", "method": "none (imported from NIR, not trained here)",
            "limit_test": limit_test, "calibration": calibration, "teacher_only": False})
        record = _Record(run_dir, settings, None)
        record.save()

        say(f"[1/{n}] export: {', '.join(targets)} of {path} → {run_dir / 'export'}")
        t = time.perf_counter()
        exported = export_from_nir(path, targets, run_dir / "export", timesteps=t_steps, samples=limit_test,
                                   data=data, data_root=data_root, lava_check=settings.effective_lava_check,
                                   dt_s=dt_s, calibration=calibration, input_file=input_file, reset=reset,
                                   strict=strict)
        warnings = exported["warnings"]
        timings["export_s"] = time.perf_counter() - t
        record.mark("export", {"export_targets": targets, "lava_check": settings.effective_lava_check},
                    timings["export_s"])
        acc = exported.get("nir", {}).get("accuracy")
        say(f"      done in {_duration(timings['export_s'])}" + (
            (f" — float {100 * acc['float_acc']:.2f} %, fixed point {100 * acc['int_acc']:.2f} %,"
             if acc["float_acc"] is not None else " —") + f" decisions agree on {100 * acc['decision_agreement']:.2f} %"
            if acc else ""))
        for warning in warnings:
            say(f"      warning: {warning}")

        sims: dict[str, dict[str, Any]] = {}
        for i, backend in enumerate(settings.sim_backends, start=2):
            samples = settings.lava_samples if backend.startswith("lava") else limit_test
            say(f"[{i}/{n}] simulate:{backend}: " + (f"{samples} samples" if samples else ("every test image" if input_file is None else f"every sample of {input_file}")))
            t = time.perf_counter()
            with _progress_bar(progress, backend, samples) as bar:
                sims[backend] = simulate(run_dir / "export" / "student.lava.npz", backend=backend, samples=samples,
                                         progress=bar, data_root=data_root, input_file=input_file,
                                         out_dir=run_dir / "simulate" / backend, strict=strict)
            timings[f"simulate_{backend}_s"] = time.perf_counter() - t
            record.mark(f"simulate:{backend}", {"samples": samples}, timings[f"simulate_{backend}_s"])
            acc = sims[backend]["accuracy"]
            say(f"      done in {_duration(timings[f'simulate_{backend}_s'])} — "
                + ("no labels" if acc is None else f"accuracy {100 * acc:.2f} %") + f" on {sims[backend]['samples']} samples")
            for warning in sims[backend]["warnings"]:
                say(f"      warning: {warning}")

        i = 2 + len(sims)
        say(f"[{i}/{n}] energy: ACs/MACs from every spike, priced with {settings.preset}")
        t = time.perf_counter()
        energies = {}
        for backend in sims:
            energies[backend] = report_for_files(run_dir / "simulate" / backend / "spikes.h5",
                                                 run_dir / "export" / "student_quant.nir", model)
            write_json(run_dir / "energy" / f"{backend}.json", energies[backend])
        timings["energy_s"] = time.perf_counter() - t
        record.mark("energy", {"preset": settings.preset, "backends": list(sims)}, timings["energy_s"])

        if settings.map_target:
            from htakl_deploy.hw.mapping import map_run_dir

            i += 1
            say(f"[{i}/{n}] map: onto {settings.map_target} neurocores → {run_dir / 'map'}")
            t = time.perf_counter()
            line = map_run_dir(run_dir, settings.map_target)
            timings["map_s"] = time.perf_counter() - t
            record.mark("map", {"map_target": settings.map_target}, timings["map_s"])
            say(f"      {line}")

        say(f"[{n}/{n}] report: report.md, report.html, report.json")
        t = time.perf_counter()
        report = write_report(run_dir)
        timings["report_s"] = time.perf_counter() - t
        sanity = [f"{w['code'].replace('_', ' ')}: {w['message']}" for w in report["warnings"]]
        record.mark("report", {"backends": list(sims)}, timings["report_s"], warnings=sanity)
        timings["total_s"] = time.perf_counter() - t_total
        record.data["timings"] = timings
        record.save()
    except BaseException:
        held.release(failed=True)  # nothing to resume from: a failed or interrupted import leaves no folder
        raise
    held.release()
    result = {
        "run_dir": str(run_dir), "report": str(run_dir / "report.html"), "timings": timings,
        "settings": settings.to_dict(), "from_nir": str(path),
        "accuracy": {b: s["accuracy"] for b, s in sims.items()},
        "samples": {b: s["samples"] for b, s in sims.items()},
        "energy_per_sample_uj": {b: e["per_sample"]["energy_pj"] * 1e-6 for b, e in energies.items()},
        "ann_teacher_energy_per_sample_uj": None,  # a NIR graph comes without a teacher
        "student_test_acc": None,
        "export_accuracy": exported.get("nir", {}).get("accuracy"),
        "warnings": warnings, "report_warnings": sanity,
    }
    for line in summary_lines(result):
        say(line)
    return result
