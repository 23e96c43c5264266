"""The run report: ``RUN_DIR/report.{md,html,json}`` from what the other commands left there.

Reads (every part but ``config.json`` may be missing; the report says what is)::

    config.json  provenance.json  summary.json  {teacher,student}/done.json
    export/export_report.json
    simulate/<backend>/simulate.json  simulate/<backend>/spikes.h5
    energy/<backend>.json             (``energy.report`` format "htakl-energy/1")

and writes three files, each atomically: ``report.json`` (the numbers, schema below),
``report.md`` (text and tables; the figures are described there and embedded in the HTML) and
``report.html`` (one self-contained page: CSS inline, plots as base64 PNG, no external URL).

``report.json`` (``format`` "htakl-report/1"); energies in pJ per sample, ops per sample::

    format, run_dir, generated {by, unix_s}
    run: {name, data, model, method, timesteps, encoding, seed}
    backends: [backend...]  primary_backend       (simulate/ and energy/ names, known order first)
    accuracy: [{stage: training|export|simulate, model: teacher|student, backend, description,
                accuracy, best_accuracy, samples, timesteps, file, wall_s, samples_per_s,
                agreement, float_accuracy}]
    export: {file, float_accuracy, int_accuracy, decision_agreement, samples, timesteps,
             clipped_weights, onnx_student_max_abs_err, onnx_teacher_max_abs_err, artefacts[]}
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
    figures: [{id, title, caption}]
    missing: [str]    parts that are not in the directory (what to run to get them)
    problems: [str]   files that are there but could not be read

``measured_pj`` is the energy file's ``per_sample.energy_pj`` unchanged (exact op counts ×
the preset); ``analytic_pj`` the paper's estimate (per layer: input firing rate × dense OPs),
``paper_style_pj`` one network-wide rate × OPs (Table III style), ``ann_teacher_pj`` the ANN
twin's dense MACs for one pass × e_mac (see ``energy.report``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import write_json, write_text
from htakl_deploy.energy.report import si
from htakl_deploy.errors import UserError

FORMAT = "htakl-report/1"
ENERGY_FORMAT = "htakl-energy/1"
SPIKES_FORMAT = "htakl-spikes/1"
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
        data = json.loads(path.read_text(encoding="utf-8"))
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
            "seed": c.get("seed")}


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
                     "samples": None, "timesteps": stage.get("timesteps"),
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
    """Firing rates and spikes per timestep straight from a spike file, ``chunk`` samples at
    a time (a 10k-sample recording does not fit in memory at once)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != SPIKES_FORMAT:
                raise UserError(f"{rel}: not a '{SPIKES_FORMAT}' spike file")
            order = json.loads(f.attrs["layer_order"])
            t_steps, samples = int(f.attrs["timesteps"]), int(f.attrs["samples"])
            layers = []
            for name in order:
                ds = f["layers"][name]
                per_t = np.zeros(t_steps, np.int64)
                for s0 in range(0, samples, chunk):
                    block = ds[:, s0:s0 + chunk]
                    per_t += block.reshape(t_steps, -1).sum(axis=1, dtype=np.int64)
                n = int(np.prod(ds.shape[2:]))
                layers.append({"name": name, "neurons": n, "firing_rate": float(per_t.sum()) / (n * t_steps * samples),
                               "spikes_per_sample": float(per_t.sum()) / samples,
                               "spikes_per_timestep_per_sample": (per_t / samples).tolist()})
    except UserError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/ValueError on foreign or truncated files
        raise UserError(f"{rel}: not a readable spike file ({type(e).__name__}: {e})") from None
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


def energy_section(rep: dict, rel: str) -> dict:
    """One backend's energy file as per-sample numbers, per layer and in total (see module doc)."""
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
    return {"file": rel, "energy_model": dict(m), "samples": s, "timesteps": rep["timesteps"],
            "input_encoding": rep.get("input_encoding"), "per_sample": per_sample, "layers": layers}


def energy(run: RunFiles) -> dict:
    out = {}
    for b in order_backends(run.energy):
        try:
            out[b] = energy_section(run.energy[b], f"energy/{b}.json")
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
    report["figures"] = figure_list(report)
    report["missing"] = list(run.missing)
    report["problems"] = list(dict.fromkeys(run.problems))
    return report


# -- number formatting ---------------------------------------------------------------------


def fmt_pct(x, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def fmt_ops(x) -> str:
    """Operations with G/M/k prefixes: ``2.110 G``."""
    return si(x, " ", "–")


ENERGY_UNITS = ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ"))


def energy_unit(pj_max: float) -> tuple[float, str]:
    return next(((d, u) for d, u in ENERGY_UNITS if abs(pj_max) >= d), (1.0, "pJ"))


def fmt_energy(pj) -> str:
    if pj is None:
        return "–"
    div, unit = energy_unit(pj)
    return f"{pj / div:.3f} {unit}"


def fmt_ratio(a, b) -> str:
    return "–" if not a or not b else f"×{a / b:.2f}"


# -- figures (matplotlib, Agg canvas, no pyplot state) -------------------------------------


def figure_list(report: dict) -> list[dict]:
    figs = []
    act, en = report["activity"], report["energy"]
    if act:
        figs.append({"id": "firing_rates", "title": "Firing rate per layer",
                     "caption": "Firing rate of every LIF layer (spikes per neuron per timestep, %), one bar per "
                                "backend, averaged over the recorded samples and timesteps."})
        figs.append({"id": "spikes_per_timestep", "title": "Spikes per timestep",
                     "caption": "Spikes per sample emitted by each LIF layer at each timestep, one panel per backend."})
    if en:
        b = report["primary_backend"]
        figs.append({"id": "energy_totals", "title": "Energy per sample",
                     "caption": "Total energy per sample per backend: measured, analytic estimate per layer, "
                                "paper style (one network-wide rate × OPs) and the ANN teacher."})
        figs.append({"id": "energy_layers", "title": f"Energy per layer ({b})",
                     "caption": f"Synaptic energy per sample of each layer on {b}: measured (exact ACs/MACs), "
                                "the paper's analytic estimate (input firing rate × dense OPs) and the ANN teacher "
                                f"(dense MACs, one pass); energy model {en[b]['energy_model']['name']}, log scale."})
    return figs


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _grouped_bars(ax, labels: list[str], series: dict[str, list[float]]) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def plot_firing_rates(report: dict) -> bytes:
    act = report["activity"]
    names = list(dict.fromkeys(x["name"] for a in act.values() for x in a["layers"]))
    series = {}
    for b, a in act.items():
        rates = {x["name"]: x["firing_rate"] for x in a["layers"]}
        series[b] = [100 * rates.get(n, 0.0) for n in names]
    fig, (ax,) = _new_figure(8, 3.6)
    _grouped_bars(ax, names, series)
    ax.set_ylabel("firing rate (%)")
    ax.set_title("Firing rate per LIF layer")
    return _png(fig)


def plot_spikes_per_timestep(report: dict) -> bytes:
    act = report["activity"]
    fig, axes = _new_figure(min(4 * len(act), 12), 3.4, ncols=len(act))
    for ax, (b, a) in zip(axes, act.items()):
        steps = np.arange(1, a["timesteps"] + 1)
        for x in a["layers"]:
            ax.plot(steps, x["spikes_per_timestep_per_sample"], marker="o", label=x["name"])
        ax.set_title(b)
        ax.set_xlabel("timestep")
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("spikes per sample")
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_energy_layers(report: dict) -> bytes:
    en = report["energy"][report["primary_backend"]]
    names = [x["name"] for x in en["layers"]]
    vals = {k: [x[k] for x in en["layers"]] for k in ("measured_pj", "analytic_pj", "ann_teacher_pj")}
    div, unit = energy_unit(max(max(v) for v in vals.values()) or 1.0)
    series = {"measured": vals["measured_pj"], "analytic (rate × dense OPs)": vals["analytic_pj"],
              "ANN teacher (MACs)": vals["ann_teacher_pj"]}
    fig, (ax,) = _new_figure(8, 3.6)
    _grouped_bars(ax, names, {k: [v / div for v in vs] for k, vs in series.items()})
    if any(v > 0 for vs in series.values() for v in vs):
        ax.set_yscale("log")
    ax.set_ylabel(f"energy per sample ({unit})")
    ax.set_title(f"Synaptic energy per layer, {report['primary_backend']} ({en['energy_model']['name']})")
    return _png(fig)


def plot_energy_totals(report: dict) -> bytes:
    en = report["energy"]
    keys = {"measured": "measured_pj", "analytic": "analytic_pj", "paper style": "paper_style_pj",
            "ANN teacher": "ann_teacher_pj"}
    div, unit = energy_unit(max(v["per_sample"][k] for v in en.values() for k in keys.values()) or 1.0)
    series = {f"{b} ({e['energy_model']['name']})": [e["per_sample"][k] / div for k in keys.values()]
              for b, e in en.items()}
    fig, (ax,) = _new_figure(8, 3.6)
    _grouped_bars(ax, list(keys), series)
    ax.set_ylabel(f"energy per sample ({unit})")
    ax.set_title("Energy per sample: measured vs estimates")
    return _png(fig)


PLOTS = {"firing_rates": plot_firing_rates, "spikes_per_timestep": plot_spikes_per_timestep,
         "energy_layers": plot_energy_layers, "energy_totals": plot_energy_totals}


def render_figures(report: dict) -> dict[str, bytes]:
    """PNG bytes of every figure in ``report['figures']``."""
    return {f["id"]: PLOTS[f["id"]](report) for f in report["figures"]}


# -- document model: blocks rendered to Markdown and to HTML -------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    align: str = ""  # one letter per column, "l" or "r" (default: first left, rest right)

    def col_align(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else ("l" if i == 0 else "r")


@dataclass
class Section:
    title: str
    blocks: list  # str (paragraph), list[str] (bullets), Table, ("figure", id), Section


def intro(report: dict) -> str:
    r = report["run"]
    parts = [f"This report summarises run `{r['name']}`: a {r['model'] or '?'} spiking student distilled with "
             f"{r['method'] or '?'} on {r['data'] or '?'} at T = {r['timesteps'] or '?'} timesteps"]
    if report["export"]:
        parts.append("exported to Loihi fixed point")
    if report["backends"]:
        parts.append(f"run on {', '.join(report['backends'])}")
    text = ", ".join(parts) + "."
    if report["energy"]:
        models = sorted({e["energy_model"]["name"] for e in report["energy"].values()})
        text += (f" Energy per inference is counted from the recorded spikes and priced with the "
                 f"{', '.join(models)} energy model{'s' if len(models) > 1 else ''}.")
    return text


def at_a_glance(report: dict) -> list[str]:
    items = []
    acc = {(a["stage"], a["backend"], a["model"]): a for a in report["accuracy"]}
    if ("training", "torch-train", "student") in acc:
        items.append(f"student accuracy after training: {fmt_pct(acc[('training', 'torch-train', 'student')]['accuracy'])}")
    if report["export"] and report["export"]["int_accuracy"] is not None:
        e = report["export"]
        items.append(f"Loihi fixed point (integer): {fmt_pct(e['int_accuracy'])} vs float "
                     f"{fmt_pct(e['float_accuracy'])} on {e['samples']} images")
    for a in report["accuracy"]:
        if a["stage"] == "simulate":
            items.append(f"{a['backend']}: {fmt_pct(a['accuracy'])} on {a['samples']} samples")
    b = report["primary_backend"]
    if b in report["energy"]:
        ps = report["energy"][b]["per_sample"]
        m = report["energy"][b]["energy_model"]["name"]
        items.append(f"energy per sample on {b} ({m}): {fmt_energy(ps['measured_pj'])} measured, "
                     f"{fmt_energy(ps['analytic_pj'])} by the paper's analytic estimate, "
                     f"{fmt_energy(ps['ann_teacher_pj'])} for the ANN teacher "
                     f"({fmt_ratio(ps['ann_teacher_pj'], ps['measured_pj'])} the SNN's measured energy)")
    return items


def accuracy_section(report: dict) -> Section:
    rows = []
    for a in report["accuracy"]:
        notes = []
        if a.get("best_accuracy") is not None:
            notes.append(f"best epoch {fmt_pct(a['best_accuracy'])}")
        ag = a.get("agreement") or {}
        for k in ("spike_agreement", "decision_agreement"):
            if _num(ag.get(k)) is not None:
                notes.append(f"{k.replace('_', ' ')} vs {ag.get('vs', '?')} {fmt_pct(ag[k])}")
        if a.get("float_accuracy") is not None:
            notes.append(f"float student on the same samples {fmt_pct(a['float_accuracy'])}")
        if a.get("samples_per_s") is not None:
            notes.append(f"{a['samples_per_s']:.1f} samples/s")
        rows.append([a["description"], a["backend"], fmt_pct(a["accuracy"]),
                     "–" if a["samples"] is None else str(a["samples"]),
                     "–" if a["timesteps"] is None else str(a["timesteps"]), "; ".join(notes), a["file"]])
    blocks: list = ["Test-set accuracy of the teacher and of the student at every stage the directory holds "
                    "(training: the data set's full test split; export and simulators: the samples they ran)."]
    if rows:
        blocks.append(Table(["model / stage", "backend", "accuracy", "samples", "T", "notes", "from"], rows,
                            "Accuracy per backend.", "llrrrll"))
    else:
        blocks.append("No accuracy was found in this directory.")
    e = report["export"]
    if e:
        blocks.append(f"Export: {e['clipped_weights'] if e['clipped_weights'] is not None else '?'} weights clipped "
                      f"to 8 bits; artefacts in `export/`: {', '.join(e['artefacts']) or 'none'}.")
    return Section("Accuracy", blocks)


def activity_section(report: dict) -> Section:
    act = report["activity"]
    if not act:
        return Section("Spiking activity", ["No spike recording or energy report in this directory."])
    backends = list(act)
    names = list(dict.fromkeys(x["name"] for a in act.values() for x in a["layers"]))
    by = {b: {x["name"]: x for x in a["layers"]} for b, a in act.items()}
    rows = []
    for n in names:
        first = next(by[b][n] for b in backends if n in by[b])
        rows.append([n, str(first["neurons"])] + [fmt_pct(by[b][n]["firing_rate"]) if n in by[b] else "–"
                                                  for b in backends])
    rows.append(["all LIF layers", str(sum(by[backends[0]][n]["neurons"] for n in by[backends[0]]))]
                + [fmt_pct(act[b]["firing_rate"]) for b in backends])
    sources = "; ".join(f"{b}: {a['samples']} samples × T = {a['timesteps']}, from `{a['source']}`"
                        for b, a in act.items())
    blocks: list = [
        f"Firing rate = spikes per neuron per timestep, over all recorded samples ({sources}).",
        ("figure", "firing_rates"),
        Table(["LIF layer", "neurons"] + [f"rate {b}" for b in backends], rows, "Firing rate per layer and backend."),
        ("figure", "spikes_per_timestep"),
    ]
    for b, a in act.items():
        t = a["timesteps"]
        rows = [[x["name"]] + [f"{v:.1f}" for v in x["spikes_per_timestep_per_sample"]] + [f"{x['spikes_per_sample']:.1f}"]
                for x in a["layers"]]
        blocks.append(Table(["LIF layer"] + [f"t={i + 1}" for i in range(t)] + ["total"], rows,
                            f"Spikes per sample at each timestep, {b}."))
    return Section("Spiking activity", blocks)


def energy_model_text(m: dict) -> str:
    parts = [f"{m['e_ac_pj']:g} pJ per AC", f"{m['e_mac_pj']:g} pJ per MAC"]
    if m.get("e_neuron_update_pj"):
        parts.append(f"{m['e_neuron_update_pj']:g} pJ per neuron update")
    if m.get("e_spike_pj"):
        parts.append(f"{m['e_spike_pj']:g} pJ per spike")
    return f"**{m['name']}** ({', '.join(parts)}); source: {m['source']}"


def energy_layer_table(b: str, en: dict) -> Table:
    rows = [[x["name"], x["kind"], x["input"], fmt_pct(x["input_firing_rate"]), fmt_ops(x["acs"]),
             fmt_ops(x["macs"]), fmt_ops(x["dense_ops"]), fmt_energy(x["measured_pj"]), fmt_energy(x["analytic_pj"]),
             fmt_ops(x["ann_teacher_macs"]), fmt_energy(x["ann_teacher_pj"])] for x in en["layers"]]
    ps = en["per_sample"]
    if ps["neuron_pj"]:
        rows.append(["neuron updates + spikes", "", "", "", "", "", "", fmt_energy(ps["neuron_pj"]),
                     fmt_energy(ps["neuron_pj"]), "", ""])
    rows.append(["total", "", "", fmt_pct(ps["firing_rate"]), fmt_ops(ps["acs"]), fmt_ops(ps["macs"]),
                 fmt_ops(ps["dense_ops"]), fmt_energy(ps["measured_pj"]), fmt_energy(ps["analytic_pj"]),
                 fmt_ops(ps["ann_teacher_macs"]), fmt_energy(ps["ann_teacher_pj"])])
    return Table(["layer", "kind", "input", "input rate", "ACs", "MACs", "dense OPs", "measured", "analytic",
                  "ANN MACs", "ANN energy"], rows,
                 f"Per layer, per sample, {b} ({en['samples']} samples, T = {en['timesteps']}, "
                 f"energy model {en['energy_model']['name']}). The total firing rate is over all LIF neurons.",
                 "llll")


def energy_section_doc(report: dict) -> Section:
    en = report["energy"]
    if not en:
        return Section("Energy", ["No energy report in this directory (energy/<backend>.json)."])
    blocks: list = [
        "Measured: every spike's exact fan-out is an accumulate (AC); inputs that are not spikes (the "
        "encoding layer's pixels) are multiply-accumulates (MACs), every timestep. Analytic: the paper's "
        "estimate, per layer input firing rate × dense OPs; paper style: one network-wide firing rate × the "
        "spike-driven dense OPs (as in the paper's Table III). ANN teacher: the same architecture's dense "
        "MACs for one forward pass. All values per sample (one inference).",
    ]
    models = {b: e["energy_model"] for b, e in en.items()}
    for name in dict.fromkeys(m["name"] for m in models.values()):
        users = [b for b, m in models.items() if m["name"] == name]
        blocks.append(f"Energy model for {', '.join(users)}: {energy_model_text(models[users[0]])}.")
    rows = []
    for b, e in en.items():
        ps = e["per_sample"]
        rows.append([b, e["energy_model"]["name"], fmt_ops(ps["acs"]), fmt_ops(ps["macs"]), fmt_energy(ps["measured_pj"]),
                     fmt_energy(ps["analytic_pj"]), fmt_energy(ps["paper_style_pj"]), fmt_energy(ps["ann_teacher_pj"]),
                     fmt_ratio(ps["ann_teacher_pj"], ps["measured_pj"])])
    blocks += [Table(["backend", "energy model", "ACs", "MACs", "measured", "analytic", "paper style", "ANN teacher",
                      "ANN / SNN"], rows, "Energy per sample, measured vs the estimates; ANN / SNN = ANN teacher "
                     "energy ÷ measured SNN energy.", "ll"),
               ("figure", "energy_totals"), ("figure", "energy_layers")]
    for b, e in en.items():
        blocks.append(energy_layer_table(b, e))
    return Section("Energy", blocks)


def provenance_section(report: dict) -> Section:
    p = report["provenance"]
    git = p["git"]
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    started = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["started_unix_s"]))
               if _num(p.get("started_unix_s")) is not None else "unknown")
    argv = shlex.join(map(str, p["argv"])) if isinstance(p.get("argv"), list) else "unknown"
    blocks: list = [[f"git SHA: `{git.get('sha') or 'unknown'}`{dirty}", f"command: `{argv}`",
                     f"seed: {p.get('seed')}", f"host: {p.get('host') or 'unknown'} ({p.get('platform') or '?'})",
                     f"started: {started}",
                     f"report generated by {report['generated']['by']} on "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(report['generated']['unix_s']))}"]]
    if p["versions"]:
        blocks.append(Table(["package", "version"], [[k, str(v) if v else "not installed"]
                                                      for k, v in p["versions"].items()], "Package versions.", "ll"))
    blocks.append(Table(["config key", "value"], [[k, json.dumps(v)] for k, v in sorted(p["config"].items())],
                        "Resolved configuration (config.json).", "ll"))
    return Section("Provenance", blocks)


def document(report: dict) -> tuple[str, list[Section]]:
    """Title and sections of the human-readable report."""
    sections = [Section("Summary", [intro(report), at_a_glance(report)])]
    notes = [f"missing: {m}" for m in report["missing"]] + [f"could not read: {m}" for m in report["problems"]]
    if notes:
        sections[0].blocks += ["What this directory does not (yet) hold:", notes]
    sections += [accuracy_section(report), activity_section(report), energy_section_doc(report),
                 provenance_section(report)]
    return f"htakl-deploy report: {report['run']['name']}", sections


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    title, sections = document(report)
    figs = {f["id"]: (i + 1, f) for i, f in enumerate(report["figures"])}
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, list):
                out += [f"- {x}" for x in b] + [""]
            elif isinstance(b, Table):
                out += [f"*{b.caption}*", ""] if b.caption else []
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---:" if b.col_align(i) == "r" else ":---" for i in range(len(b.headers))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows] + [""]
            elif isinstance(b, tuple) and b[1] in figs:
                n, f = figs[b[1]]
                out += [f"*Figure {n}: {f['title']}. {f['caption']} (plot in report.html)*", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;font-size:1.3em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}td.r,th.r{text-align:right;white-space:nowrap}
caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#444}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
"""


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** spans into tags."""
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _html_table(t: Table) -> str:
    cls = lambda i: ' class="r"' if t.col_align(i) == "r" else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{_inline_html(h)}</th>" for i, h in enumerate(t.headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline_html(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in t.rows)
    cap = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """One self-contained HTML page; ``images`` (figure id → PNG bytes) embedded as base64."""
    title, sections = document(report)
    figs = {f["id"]: (i + 1, f) for i, f in enumerate(report["figures"])}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{html.escape(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, str):
                out.append(f"<p>{_inline_html(b)}</p>")
            elif isinstance(b, list):
                out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b) + "</ul>")
            elif isinstance(b, Table):
                out.append(_html_table(b))
            elif isinstance(b, tuple) and b[1] in figs and b[1] in images:
                n, f = figs[b[1]]
                data = base64.b64encode(images[b[1]]).decode("ascii")
                out.append(f'<figure id="fig-{f["id"]}"><img alt="{html.escape(f["title"])}" '
                           f'src="data:image/png;base64,{data}"><figcaption>Figure {n}: '
                           f"{_inline_html(f['title'])}. {_inline_html(f['caption'])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- entry point ---------------------------------------------------------------------------


def write_report(run_dir: str | Path) -> dict:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``run_dir`` (each
    atomically) and return the report dict. UserError if ``run_dir`` is not a run directory."""
    run = load_run(run_dir)
    report = build_report(run)
    images = render_figures(report)
    write_text(run.root / "report.md", render_markdown(report))
    write_text(run.root / "report.html", render_html(report, images))
    write_json(run.root / "report.json", report)
    return report
