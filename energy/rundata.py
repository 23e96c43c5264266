"""Reading a run directory and building the report dict (``report.json``) from it.

Reads (every part but ``config.json`` may be missing; the report says what is)::

    config.json  provenance.json  summary.json  {teacher,student}/done.json
    export/export_report.json
    simulate/<backend>/simulate.json  simulate/<backend>/spikes.h5
    energy/<backend>.json             (``energy.report`` format "htakl-energy/1")

``report.json`` (``format`` "htakl-report/1"); energies in pJ per sample, ops per sample::

    format, run_dir, generated {by, unix_s}
    run: {name, data, model, method, timesteps, encoding, seed, teacher (bool: distilled from one)}
    backends: [backend...]  primary_backend       (simulate/ and energy/ names, known order first)
    accuracy: [{stage: training|export|simulate, model: teacher|student, backend, description,
                accuracy, best_accuracy, samples, timesteps, file, wall_s, samples_per_s,
                agreement, float_accuracy}]
    export: {file, float_accuracy, int_accuracy, decision_agreement, samples, timesteps,
             clipped_weights, quantisation_warnings[], onnx_student_max_abs_err,
             onnx_teacher_max_abs_err, artefacts[]}
    activity: {backend: {source, samples, timesteps, firing_rate,
                         layers: [{name, neurons, firing_rate, spikes_per_sample,
                                   spikes_per_timestep_per_sample[T]}]}}
    energy: {backend: {file, energy_model{name, source, e_ac_pj, ...}, samples, timesteps,
                       input_encoding,
                       per_sample: {measured_pj, synaptic_pj, neuron_pj, analytic_pj,
                                    paper_style_pj, ann_teacher_pj, acs, macs, analytic_acs,
                                    analytic_macs, paper_style_acs, ann_teacher_macs, dense_ops,
                                    spikes, firing_rate},
                       layers: [{name, kind, input, input_firing_rate, acs, macs, dense_ops,
                                 analytic_acs, analytic_macs, ann_teacher_macs, measured_pj,
                                 analytic_pj, ann_teacher_pj}]}}
    provenance: {git {sha, dirty}, versions, argv, seed, host, platform, started_unix_s, config}
    mapping: {target: map/<target>.json as written by `htakl-deploy map` ("htakl-map/1")}
    warnings, training_curves, quantisation, neurobench, stage_timings: see ``energy.diagnostics``
    figures: [{id, title, caption}]
    missing: [str]    parts that are not in the directory (what to run to get them)
    problems: [str]   files that are there but could not be read

``measured_pj`` is the energy file's ``per_sample.energy_pj`` unchanged (exact op counts ×
the preset); ``analytic_pj`` the paper's estimate (per layer: input firing rate × dense OPs),
``paper_style_pj`` one network-wide rate × OPs (Table III style), ``ann_teacher_pj`` the ANN
twin's dense MACs for one pass × e_mac (see ``energy.report``; None for a run without a teacher).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from htakl_deploy.energy.diagnostics import add_diagnostics
from htakl_deploy.energy.figures import figure_list
from htakl_deploy.errors import UserError
from htakl_deploy.hw.mapping_report import read_maps
from htakl_deploy.readers import check_text_size

FORMAT = "htakl-report/1"
ENERGY_FORMAT = "htakl-energy/1"
BACKENDS = {  # known simulators, in the order the report prefers them as "primary"
    "lava-fixed_pt": "Lava Loihi2SimCfg, fixed point",
    "emulator": "bit-exact integer emulator (numpy)",
    "lava-floating_pt": "Lava Loihi2SimCfg, floating point",
    "torch-float": "float graph (PyTorch)",
}


# -- reading the run directory -------------------------------------------------------------


@dataclass
class RunFiles:
    """What was found in a run directory; ``missing`` / ``problems`` collect what was not."""

    root: Path
    config: dict
    provenance: dict | None = None
    summary: dict | None = None
    summary_file: str | None = None
    export: dict | None = None
    simulate: dict[str, dict] = field(default_factory=dict)
    energy: dict[str, dict] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_json(root: Path, rel: str, problems: list[str]) -> dict | None:
    """``root/rel`` as a dict; None if absent; a note in ``problems`` if unreadable."""
    path = root / rel
    if not path.is_file():
        return None
    try:
        check_text_size(path, "", "JSON file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except UserError as e:
        problems.append(f"{rel}: not read: {e}")
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{rel}: not readable JSON ({type(e).__name__}: {e})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{rel}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a Path; UserError naming it unless it holds a readable config.json."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"RUN_DIR: {root} is not a directory")
    path = root / "config.json"
    if not path.is_file():
        raise UserError(f"RUN_DIR: {root} is not a run directory (no config.json; "
                        "create one with `htakl-deploy distill`)")
    check_text_size(path, "RUN_DIR", "JSON file")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"RUN_DIR: {path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError(f"RUN_DIR: {path} must hold a JSON object")
    return root


def _training_summary(root: Path, problems: list[str]) -> tuple[dict | None, str | None]:
    """(summary, file): summary.json, or (interrupted runs) what the stages' done.json say."""
    summary = _read_json(root, "summary.json", problems)
    if summary is not None:
        return summary, "summary.json"
    stages = {role: _read_json(root, f"{role}/done.json", problems) for role in ("teacher", "student")}
    stages = {k: v for k, v in stages.items() if v is not None}
    return (stages, "{teacher,student}/done.json") if stages else (None, None)


def _simulate_runs(root: Path, problems: list[str]) -> dict[str, dict]:
    runs = {}
    base = root / "simulate"
    for d in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        data = _read_json(root, f"simulate/{d.name}/simulate.json", problems)
        if data is None:
            continue
        if data.get("backend", d.name) != d.name:
            problems.append(f"simulate/{d.name}/simulate.json names backend {data['backend']!r}; "
                            f"shown as {d.name!r}")
        runs[d.name] = data
    return runs


def _energy_reports(root: Path, problems: list[str]) -> dict[str, dict]:
    reports = {}
    base = root / "energy"
    for p in sorted(base.glob("*.json")) if base.is_dir() else []:
        data = _read_json(root, f"energy/{p.name}", problems)
        if data is None:
            continue
        if data.get("format") != ENERGY_FORMAT:
            problems.append(f"energy/{p.name}: format {data.get('format')!r}, expected {ENERGY_FORMAT!r}")
            continue
        reports[p.stem] = data
    return reports


def load_run(run_dir: str | Path) -> RunFiles:
    """Read every part of a run directory that exists (see the module docstring)."""
    root = check_run_dir(run_dir)
    problems: list[str] = []
    run = RunFiles(root, json.loads((root / "config.json").read_text(encoding="utf-8")), problems=problems)
    run.provenance = _read_json(root, "provenance.json", problems)
    run.summary, run.summary_file = _training_summary(root, problems)
    run.export = _read_json(root, "export/export_report.json", problems)
    run.simulate = _simulate_runs(root, problems)
    run.energy = _energy_reports(root, problems)
    run.missing = _missing_parts(run)
    return run


def _missing_parts(run: RunFiles) -> list[str]:
    r = str(run.root)
    out = []
    if run.provenance is None:
        out.append("no provenance.json: package versions and git SHA unknown")
    if run.summary is None:
        out.append("no summary.json: training has not finished in this directory")
    if run.export is None:
        out.append(f"no export/export_report.json: run `htakl-deploy export {r} --target nir` "
                   "for the float vs integer accuracy")
    if not run.simulate:
        out.append("no simulator run in this directory (simulate/<backend>/simulate.json)")
    if not any(b.startswith("lava-") for b in run.simulate):
        out.append("no Lava run in this directory (simulate/lava-fixed_pt or simulate/lava-floating_pt)")
    for b, sim in run.simulate.items():
        spikes = run.root / "simulate" / b / sim.get("spikes_file", "spikes.h5")
        if not spikes.is_file():
            out.append(f"simulate/{b}: no spike file {spikes.name}")
        if b not in run.energy:
            out.append(f"no energy report for {b}: run `htakl-deploy energy {spikes} --graph "
                       f"{run.root / 'export' / 'student_quant.nir'} --json {run.root / 'energy' / (b + '.json')}`")
    if not run.energy:
        out.append("no energy report in this directory (energy/<backend>.json): no energy section")
    return out


# -- building the report dict --------------------------------------------------------------


def order_backends(names) -> list[str]:
    known = [b for b in BACKENDS if b in names]
    return known + sorted(set(names) - set(known))


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def run_info(run: RunFiles) -> dict:
    c = run.config
    return {"name": run.root.resolve().name, "data": c.get("data"), "model": c.get("model"),
            "method": c.get("method"), "timesteps": c.get("timesteps"), "encoding": c.get("encoding"),
            "seed": c.get("seed"), "teacher": has_teacher(run)}


def has_teacher(run: RunFiles) -> bool:
    """Whether the run distilled from an ANN teacher (trained here or given): a run from a NIR file
    or with a teacher-less method (``ce``) has none, and its report shows no teacher energy."""
    return isinstance(run.summary, dict) and isinstance(run.summary.get("teacher"), dict)


def training_accuracy(run: RunFiles) -> list[dict]:
    s = run.summary or {}
    rows = []
    for role, what in (("teacher", "ANN teacher, PyTorch float (last epoch)"),
                       ("student", "SNN student, PyTorch float, training run (last epoch)")):
        stage = s.get(role)
        if not isinstance(stage, dict) or _num(stage.get("test_acc")) is None:
            continue
        rows.append({"stage": "training", "model": role, "backend": "torch-train", "description": what,
                     "accuracy": _num(stage["test_acc"]), "best_accuracy": _num(stage.get("best_test_acc")),
                     "samples": s.get("test_samples", run.config.get("limit_test")),
                     "timesteps": stage.get("timesteps"),
                     "file": run.summary_file})
    return rows


def export_info(run: RunFiles) -> dict | None:
    if run.export is None:
        return None
    nir = run.export.get("nir") or {}
    acc = nir.get("accuracy") or {}
    onnx = run.export.get("onnx") or {}
    folder = run.root / "export"
    return {"file": "export/export_report.json", "float_accuracy": _num(acc.get("float_acc")),
            "int_accuracy": _num(acc.get("int_acc")), "decision_agreement": _num(acc.get("decision_agreement")),
            "samples": acc.get("samples"), "timesteps": acc.get("timesteps"),
            "clipped_weights": nir.get("clipped_weights"),
            "quantisation_warnings": list(run.export.get("warnings") or []),
            "onnx_student_max_abs_err": _num(onnx.get("student_max_abs_err")),
            "onnx_teacher_max_abs_err": _num(onnx.get("teacher_max_abs_err")),
            "artefacts": sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))}


def export_accuracy(info: dict | None) -> list[dict]:
    if info is None or info["float_accuracy"] is None:
        return []
    common = {"stage": "export", "model": "student", "samples": info["samples"], "timesteps": info["timesteps"],
              "file": info["file"], "best_accuracy": None}
    return [{**common, "backend": "torch-float", "description": "SNN student, float graph after BN folding",
             "accuracy": info["float_accuracy"]},
            {**common, "backend": "integer", "description": "SNN student, Loihi fixed point (export run_int)",
             "accuracy": info["int_accuracy"], "agreement": {"vs": "float", "decision_agreement":
                                                             info["decision_agreement"]}}]


def simulate_accuracy(run: RunFiles) -> list[dict]:
    rows = []
    for b in order_backends(run.simulate):
        sim = run.simulate[b]
        rows.append({"stage": "simulate", "model": "student", "backend": b,
                     "description": f"SNN student, {BACKENDS.get(b, b)}", "accuracy": _num(sim.get("accuracy")),
                     "best_accuracy": None, "samples": sim.get("samples"), "timesteps": sim.get("timesteps"),
                     "file": f"simulate/{b}/simulate.json", "wall_s": _num(sim.get("wall_s")),
                     "samples_per_s": _num(sim.get("samples_per_s")),
                     "agreement": sim.get("agreement") if isinstance(sim.get("agreement"), dict) else None,
                     "float_accuracy": _num(sim.get("float_accuracy"))})
    return rows


def activity_from_energy(rep: dict, rel: str) -> dict:
    s = rep["samples"]
    layers = [{"name": n["name"], "neurons": n["neurons"], "firing_rate": n["firing_rate"],
               "spikes_per_sample": n["spikes"] / s,
               "spikes_per_timestep_per_sample": [x / s for x in n["spikes_per_timestep"]]}
              for n in rep["neurons"]]
    return {"source": rel, "samples": s, "timesteps": rep["timesteps"],
            "firing_rate": rep["totals"]["firing_rate"], "layers": layers}


def activity_from_spikes(path: Path, rel: str, chunk: int = 1024) -> dict:
    """Firing rates and spikes per timestep straight from a spike file: its per-neuron counts
    (or, for an "htakl-spikes/1" file, its spikes summed ``chunk`` samples at a time — a
    10k-sample recording does not fit in memory at once)."""
    from htakl_deploy.energy.spikefile import open_spikes

    try:
        with open_spikes(path, chunk=chunk) as f:
            t_steps, samples = f.timesteps, f.samples
            layers = []
            for name in f.layer_order:
                per_t = f.layer_counts(name).reshape(t_steps, -1).sum(axis=1, dtype=np.int64)
                n = int(np.prod(f.layer_shape(name)[2:]))
                layers.append({"name": name, "neurons": n, "firing_rate": float(per_t.sum()) / (n * t_steps * samples),
                               "spikes_per_sample": float(per_t.sum()) / samples,
                               "spikes_per_timestep_per_sample": (per_t / samples).tolist()})
    except UserError as e:
        raise UserError(f"{rel}: not a readable spike file ({e})") from None
    spikes = sum(x["spikes_per_sample"] for x in layers)
    updates = sum(x["neurons"] for x in layers) * t_steps
    return {"source": rel, "samples": samples, "timesteps": t_steps,
            "firing_rate": spikes / updates if updates else 0.0, "layers": layers}


def activity(run: RunFiles, backends: list[str]) -> dict:
    """Per backend: from its energy report, else from its spike file (if readable)."""
    out = {}
    for b in backends:
        try:
            if b in run.energy:
                out[b] = activity_from_energy(run.energy[b], f"energy/{b}.json")
                continue
            sim = run.simulate.get(b, {})
            rel = f"simulate/{b}/{sim.get('spikes_file', 'spikes.h5')}"
            if (run.root / rel).is_file():
                out[b] = activity_from_spikes(run.root / rel, rel)
        except (KeyError, TypeError, ZeroDivisionError) as e:
            run.problems.append(f"energy/{b}.json: incomplete energy report ({type(e).__name__}: {e})")
        except UserError as e:
            run.problems.append(str(e))
    return out


def energy_section(rep: dict, rel: str, teacher: bool = True) -> dict:
    """One backend's energy file as per-sample numbers, per layer and in total (see module doc);
    without a ``teacher`` the ANN teacher's figures are None (there is no teacher to compare with)."""
    m, s, ps = rep["energy_model"], rep["samples"], rep["per_sample"]
    e_ac, e_mac = m["e_ac_pj"], m["e_mac_pj"]
    layers = []
    for r in rep["layers"]:
        ann_macs = r["dense_ops_per_step"] if r["kind"] != "identity" else 0
        layers.append({
            "name": r["name"], "kind": r["kind"], "input": r["input"], "input_firing_rate": r["input_firing_rate"],
            "acs": r["acs"] / s, "macs": r["macs"] / s, "dense_ops": r["dense_ops"] / s,
            "analytic_acs": r["analytic_acs"] / s, "analytic_macs": r["analytic_macs"] / s,
            "ann_teacher_macs": ann_macs, "measured_pj": r["energy_pj"] / s,
            "analytic_pj": (r["analytic_acs"] * e_ac + r["analytic_macs"] * e_mac) / s,
            "ann_teacher_pj": ann_macs * e_mac,
        })
    tot = rep["totals"]
    per_sample = {
        "measured_pj": ps["energy_pj"], "synaptic_pj": tot["synaptic_energy_pj"] / s,
        "neuron_pj": tot["neuron_energy_pj"] / s, "analytic_pj": ps["analytic_energy_pj"],
        "paper_style_pj": ps["paper_style_energy_pj"], "ann_teacher_pj": ps["ann_teacher_energy_pj"],
        "acs": ps["acs"], "macs": ps["macs"], "analytic_acs": ps["analytic_acs"],
        "analytic_macs": ps["analytic_macs"], "paper_style_acs": ps["paper_style_acs"],
        "ann_teacher_macs": ps["ann_teacher_macs"], "dense_ops": ps["dense_ops"], "spikes": ps["spikes"],
        "firing_rate": tot["firing_rate"],
    }
    if not teacher:
        for row in (per_sample, *layers):
            row.update(ann_teacher_macs=None, ann_teacher_pj=None)
    return {"file": rel, "energy_model": dict(m), "samples": s, "timesteps": rep["timesteps"],
            "input_encoding": rep.get("input_encoding"), "per_sample": per_sample, "layers": layers}


def energy(run: RunFiles) -> dict:
    out = {}
    for b in order_backends(run.energy):
        try:
            out[b] = energy_section(run.energy[b], f"energy/{b}.json", has_teacher(run))
        except (KeyError, TypeError, ZeroDivisionError) as e:
            run.problems.append(f"energy/{b}.json: incomplete energy report ({type(e).__name__}: {e})")
    return out


def provenance_info(run: RunFiles) -> dict:
    p = run.provenance or {}
    git = p.get("git") if isinstance(p.get("git"), dict) else {}
    return {"git": {"sha": git.get("sha"), "dirty": git.get("dirty")}, "versions": p.get("versions") or {},
            "argv": p.get("argv"), "seed": p.get("seed", run.config.get("seed")), "host": p.get("host"),
            "platform": p.get("platform"), "started_unix_s": p.get("started_unix_s"), "config": run.config}


def build_report(run: RunFiles) -> dict:
    """The report as plain data (``report.json``); see the module docstring for the schema."""
    from htakl_deploy import __version__

    exp = export_info(run)
    backends = order_backends(set(run.simulate) | set(run.energy))
    report = {
        "format": FORMAT, "run_dir": str(run.root),
        "generated": {"by": f"htakl-deploy {__version__}", "unix_s": time.time()},
        "run": run_info(run), "backends": backends,
        "accuracy": training_accuracy(run) + export_accuracy(exp) + simulate_accuracy(run),
        "export": exp, "activity": activity(run, backends), "energy": energy(run),
        "provenance": provenance_info(run),
    }
    with_energy = [b for b in backends if b in report["energy"]] or list(report["activity"])
    report["primary_backend"] = with_energy[0] if with_energy else None
    report["mapping"] = read_maps(run.root, run.problems)
    report["mapping_what_ifs"] = sorted(p.name for p in (run.root / "map" / "what-if").glob("*.json"))
    add_diagnostics(report, run)  # sanity warnings, training curves, quantisation, NeuroBench metrics
    report["figures"] = figure_list(report)
    report["missing"] = list(run.missing)
    report["problems"] = list(dict.fromkeys(run.problems))
    return report
