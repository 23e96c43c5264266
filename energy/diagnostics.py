"""What keeps a run report from misleading: sanity checks, training curves, the per-layer
quantisation table, NeuroBench-style metrics and stage timings.

``rundata.build_report`` calls :func:`add_diagnostics` to put these into the report dict;
``document`` renders :func:`warning_blocks` and :func:`diagnostics_sections`; ``figures`` draws
:func:`plot_training`. Report keys added (see ``rundata`` for the rest)::

    warnings: [{code, message}]        code: dead_layer | saturated_layer | chance | few_samples |
                                       different_samples | quantisation | quantisation_loss
    training_curves: {teacher|student: [{epoch, train_loss, train_acc, test_acc, lr}]}
    quantisation: [{connection, target, scale_S, weight_exp, bias_exp, n_weights, n_zeroed,
                    frac_zeroed, n_clipped, frac_clipped, max_abs_err}]
    neurobench: {backend, samples, neurobench_samples, activation_sparsity, connection_sparsity, eff_acs, eff_macs,
                 synaptic_ops, parameters, footprint_float32_bytes, footprint_int8_weights_bytes}
    stage_timings: [{stage, wall_s}]   (pipeline.json, when ``run`` made the directory)

Each accuracy row also gets ``interval_95`` (Wilson score interval of accuracy × samples) when
its sample count is known.

The NeuroBench definitions followed (J. Yik et al., "NeuroBench: A Framework for Benchmarking
Neuromorphic Computing Algorithms and Systems", Nature Communications 2025, arXiv:2304.04640):
activation sparsity = share of neuron outputs that are zero over all timesteps; connection
sparsity = share of weights that are zero; effective ACs/MACs = non-zero inputs × non-zero
weights, counted as ACs where a layer's inputs are all in {−1, 0, 1} and as MACs otherwise;
footprint = bytes of the parameters. The ``neurobench`` package itself is not a dependency: it
pulls torchaudio, which does not load against this project's CPU torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: the checks' thresholds (documented in docs/ENERGY.md, 'What the report checks')
DEAD_RATE = 0.0          # a layer whose firing rate is exactly 0: no spike in any sample
SATURATED_RATE = 0.9     # a layer that fires at ≥ 90 % of its neuron-steps
FEW_SAMPLES = 100        # a percentage over fewer samples gets a warning with its interval
QUANT_LOSS_PT = 2.0      # float → integer accuracy drop (points) worth a warning

#: classes per built-in data set (image-folder: from the exported model, when there is one)
DATA_CLASSES = {"digits": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100}

#: settings that belong to one method (by name prefix); the report's config table hides those
#: of the other methods
METHOD_PREFIXES = {"ckdsnn": ("nld_", "samd_", "ckdsnn_"), "seal": ("seal_",), "kdsnn": ("kdsnn_",),
                   "lasnn": ("lasnn_",), "bkdsnn": ("bkdsnn_",), "hta-kl": ("delta",), "fixed": ("head_weight",)}


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``p`` measured on ``n`` samples."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def config_fields_used(config: dict) -> tuple[dict, list[str]]:
    """(the config without the settings of other methods, the hidden keys)."""
    method = config.get("method")
    hidden = [k for k in config for m, prefixes in METHOD_PREFIXES.items()
              if m != method and any(k.startswith(p) for p in prefixes)]
    return {k: v for k, v in config.items() if k not in hidden}, sorted(hidden)


# -- reading -------------------------------------------------------------------------------


def read_metrics(root: Path, role: str, problems: list[str]) -> list[dict]:
    """Per-epoch lines of ``<role>/metrics.jsonl`` (``kind == "epoch"``; the last line per epoch
    wins, so a resumed run's repeated epochs are shown once)."""
    path = root / role / "metrics.jsonl"
    if not path.is_file():
        return []
    epochs: dict[int, dict] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("kind") == "epoch" and isinstance(rec.get("epoch"), int):
                epochs[rec["epoch"]] = {k: rec.get(k) for k in ("epoch", "train_loss", "train_acc", "test_acc", "lr")}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{role}/metrics.jsonl: not readable JSON lines ({type(e).__name__}: {e})")
    return [epochs[k] for k in sorted(epochs)]


def _read(root: Path, rel: str, problems: list[str]):
    path = root / rel
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{rel}: not readable JSON ({type(e).__name__}: {e})")
        return None


def stage_timings(root: Path, problems: list[str]) -> list[dict]:
    data = _read(root, "pipeline.json", problems)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return []
    return [{"stage": k, "wall_s": v.get("wall_s")} for k, v in stages.items()
            if isinstance(v, dict) and isinstance(v.get("wall_s"), (int, float))]


def neurobench_metrics(report: dict, energy_files: dict, summary: dict | None) -> dict | None:
    b = report.get("primary_backend")
    rep = energy_files.get(b)
    if not rep:
        return None
    tot, ps = rep.get("totals", {}), rep.get("per_sample", {})
    params = ((summary or {}).get("student") or {}).get("num_params")
    weights = tot.get("weights")
    return {"backend": b, "samples": rep.get("samples"), "neurobench_samples": rep.get("neurobench_samples"),
            "activation_sparsity": tot.get("activation_sparsity"),
            "connection_sparsity": tot.get("connection_sparsity"),
            "eff_acs": ps.get("neurobench_eff_acs"), "eff_macs": ps.get("neurobench_eff_macs"),
            "synaptic_ops": ps.get("synaptic_ops"), "parameters": params,
            "footprint_float32_bytes": 4 * params if isinstance(params, int) else None,
            "footprint_int8_weights_bytes": weights if isinstance(weights, int) else None}


# -- the checks ----------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def sanity_warnings(report: dict, num_classes: int | None) -> list[dict]:
    out: list[dict] = []

    def warn(code: str, message: str) -> None:
        out.append({"code": code, "message": message})

    b = report.get("primary_backend")
    act = (report.get("activity") or {}).get(b)
    if act:
        for layer in act["layers"]:
            rate = layer["firing_rate"]
            if rate <= DEAD_RATE:
                warn("dead_layer", f"LIF layer {layer['name']} never fires on {b} ({act['samples']} samples × "
                     f"T = {act['timesteps']}): nothing after it receives spikes, and the energy figures "
                     "describe a network that does not compute")
            elif rate >= SATURATED_RATE:
                warn("saturated_layer", f"LIF layer {layer['name']} fires at {_pct(rate)} of its neuron-steps on "
                     f"{b}: saturated, it carries little information and its ACs are close to dense")
    rows = [a for a in report.get("accuracy", []) if a.get("accuracy") is not None]
    for a in rows:
        n = a.get("samples")
        if isinstance(n, int) and n > 0:
            a["interval_95"] = list(wilson_interval(a["accuracy"], n))
    chance = 1 / num_classes if num_classes else None
    for a in rows:  # one warning per accuracy: at chance (with its interval) or just too few samples
        label = f"{a['model']}, {a['stage']} ({a['backend']})"
        lo_hi, n = a.get("interval_95"), a.get("samples")
        interval = f"95 % interval {_pct(lo_hi[0])}–{_pct(lo_hi[1])} over {n} samples" if lo_hi else "sample count unknown"
        if chance is not None and (a["accuracy"] <= chance or (lo_hi and lo_hi[0] <= chance)):
            warn("chance", f"{label}: accuracy {_pct(a['accuracy'])} ({interval}) is not above chance "
                 f"({_pct(chance)} for {num_classes} classes)")
        elif isinstance(n, int) and n < FEW_SAMPLES and lo_hi:
            warn("few_samples", f"{label}: {_pct(a['accuracy'])} on only {n} samples ({interval})")
    counts = {}
    for a in rows:
        if isinstance(a.get("samples"), int):
            counts.setdefault(a["samples"], []).append(f"{a['stage']} {a['backend']}")
    if len(counts) > 1:
        parts = "; ".join(f"{n} samples: {', '.join(who)}" for n, who in sorted(counts.items(), reverse=True))
        warn("different_samples", f"the accuracies are over different sample sets ({parts}); compare only "
             "rows with the same count")
    exp = report.get("export") or {}
    for w in exp.get("quantisation_warnings") or []:
        warn("quantisation", w)
    f, i = exp.get("float_accuracy"), exp.get("int_accuracy")
    if f is not None and i is not None and (f - i) * 100 > QUANT_LOSS_PT:
        warn("quantisation_loss", f"the Loihi fixed-point student loses {100 * (f - i):.1f} points against the "
             f"float student ({_pct(i)} vs {_pct(f)} on {exp.get('samples')} images)")
    return out


def add_diagnostics(report: dict, run) -> None:
    """Fill the keys listed in the module docstring into ``report`` (``run``: ``rundata.RunFiles``)."""
    root, problems = run.root, run.problems
    report["training_curves"] = {role: curve for role in ("teacher", "student")
                                 if (curve := read_metrics(root, role, problems))}
    quant = _read(root, "export/quant_report.json", problems)
    report["quantisation"] = quant if isinstance(quant, list) else []
    report["neurobench"] = neurobench_metrics(report, run.energy, run.summary)
    report["stage_timings"] = stage_timings(root, problems)
    spec = (run.export or {}).get("model_spec") or {}
    classes = spec.get("num_classes") if isinstance(spec.get("num_classes"), int) else None
    report["warnings"] = sanity_warnings(report, classes or DATA_CLASSES.get(run.config.get("data")))


# -- rendering (blocks of ``document``) ----------------------------------------------------


def warning_blocks(report: dict) -> list:
    ws = report.get("warnings") or []
    if not ws:
        return ["No sanity check fired: every LIF layer fires and none saturates, accuracies are above chance "
                f"and over ≥ {FEW_SAMPLES} samples, all on one sample set, and quantisation loses no weights."]
    return [f"{len(ws)} check(s) fired. Read the numbers below with these in mind:",
            [f"**{w['code'].replace('_', ' ')}**: {w['message']}" for w in ws]]


def diagnostics_sections(report: dict, Section, Table, fmt_pct, fmt_ops) -> list:
    """The report's Training, Quantisation, NeuroBench-style metrics and Stage timings sections."""
    out = []
    curves = report.get("training_curves") or {}
    if curves:
        blocks: list = ["Per epoch, from `teacher/metrics.jsonl` and `student/metrics.jsonl`: training loss, "
                        "training and test accuracy, learning rate.", ("figure", "training")]
        for role, curve in curves.items():
            last = curve[-1]
            blocks.append(f"{role}: {len(curve)} epochs; last epoch test accuracy {fmt_pct(last.get('test_acc'))}, "
                          f"training accuracy {fmt_pct(last.get('train_acc'))}, loss "
                          f"{last['train_loss']:.4g}." if isinstance(last.get("train_loss"), (int, float)) else
                          f"{role}: {len(curve)} epochs.")
        out.append(Section("Training", blocks))
    quant = report.get("quantisation") or []
    if quant:
        rows = [[q.get("connection", "?"), q.get("target", "?"), str(q.get("scale_S")), str(q.get("weight_exp")),
                 str(q.get("bias_exp")), str(q.get("n_weights")), fmt_pct(q.get("frac_zeroed")),
                 fmt_pct(q.get("frac_clipped")), f"{q['max_abs_err']:.3g}" if isinstance(q.get("max_abs_err"), (int, float)) else "–"]
                for q in quant]
        out.append(Section("Quantisation", [
            "Per connection (`export/quant_report.json`): the integer scale S of the target layer (vth = S), the "
            "weight and bias exponents, the share of weights that round to 0 at 8 bits or are clipped, and the "
            "largest |float − integer/scale| weight error.",
            Table(["connection", "target", "S", "weight exp", "bias exp", "weights", "zeroed", "clipped",
                   "max |error|"], rows, "Quantisation per connection.", "ll")]))
    nb = report.get("neurobench")
    if nb:
        def fmt_bytes(x):
            return "–" if x is None else (f"{x / 1e6:.3f} MB" if x >= 1e6 else f"{x / 1e3:.1f} kB")
        m = nb.get("neurobench_samples")
        on = f" (on {m} of the {nb['samples']} samples, spread evenly)" if isinstance(m, int) and 0 < m < (nb["samples"] or 0) else ""
        rows = [["activation sparsity", fmt_pct(nb["activation_sparsity"]), "share of LIF outputs that are 0, over all timesteps"],
                ["connection sparsity", fmt_pct(nb["connection_sparsity"]), "share of weights that are 0 (after quantisation)"],
                ["effective ACs per sample", fmt_ops(nb["eff_acs"]), "non-zero binary inputs × non-zero weights" + on],
                ["effective MACs per sample", fmt_ops(nb["eff_macs"]), "non-zero analog inputs × non-zero weights" + on],
                ["synaptic operations per sample", fmt_ops(nb["synaptic_ops"]), "ACs + MACs counted by this tool"],
                ["parameters", "–" if nb["parameters"] is None else f"{nb['parameters']:,}", "trainable parameters of the float student"],
                ["footprint, float32", fmt_bytes(nb["footprint_float32_bytes"]), "4 bytes per parameter"],
                ["footprint, 8-bit weights", fmt_bytes(nb["footprint_int8_weights_bytes"]), "one byte per deployed weight"]]
        out.append(Section("NeuroBench-style metrics", [
            f"On {nb['backend']} ({nb['samples']} samples), with NeuroBench's definitions (Yik et al., Nature "
            "Communications 2025, arXiv:2304.04640).",
            Table(["metric", "value", "definition"], rows, "NeuroBench-style metrics.", "lrl")]))
    times = report.get("stage_timings") or []
    if times:
        rows = [[t["stage"], f"{t['wall_s']:.1f} s"] for t in times]
        rows.append(["total", f"{sum(t['wall_s'] for t in times):.1f} s"])
        out.append(Section("Stage timings", ["Wall time of each `htakl-deploy run` stage (`pipeline.json`; a "
                                             "resumed stage shows its last run).",
                                             Table(["stage", "wall time"], rows, "Stage timings.")]))
    return out


# -- figure --------------------------------------------------------------------------------


def figure_entries(report: dict) -> list[dict]:
    if not report.get("training_curves"):
        return []
    return [{"id": "training", "title": "Training curves",
             "caption": "Per epoch: training loss (left), training and test accuracy (middle), learning rate "
                        "(right), for the teacher and the student."}]


def plot_training(report: dict) -> bytes:
    from htakl_deploy.energy.figures import _new_figure, _png

    fig, axes = _new_figure(11, 3.2, ncols=3)
    for role, curve in report["training_curves"].items():
        ep = [c["epoch"] for c in curve]
        for ax, key in ((axes[0], "train_loss"), (axes[2], "lr")):
            ys = [c.get(key) for c in curve]
            if any(y is not None for y in ys):
                ax.plot(ep, [float("nan") if y is None else y for y in ys], marker=".", label=role)
        for key, style in (("train_acc", "--"), ("test_acc", "-")):
            ys = [c.get(key) for c in curve]
            if any(y is not None for y in ys):
                axes[1].plot(ep, [float("nan") if y is None else 100 * y for y in ys], style, marker=".",
                             label=f"{role} {key.split('_')[0]}")
    for ax, title in zip(axes, ("training loss", "accuracy (%)", "learning rate")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)
