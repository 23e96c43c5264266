"""The report's figures: matplotlib plots of a report dict (see ``rundata``) as PNG bytes.

``figure_list`` names the figures a report has (id, title, caption); ``render_figures`` draws
them on an Agg canvas, without pyplot state. ``energy_unit`` picks the display unit for
energies, here and in ``document.fmt_energy``.
"""

from __future__ import annotations

import io

import numpy as np

from htakl_deploy.energy import diagnostics
from htakl_deploy.hw.mapping_report import figure_entries, plot_mapping

ENERGY_UNITS = ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ"), (1.0, "pJ"))


def energy_unit(pj_max: float) -> tuple[float, str]:
    return next(((d, u) for d, u in ENERGY_UNITS if abs(pj_max) >= d), (1.0, "pJ"))


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
        teacher = report["run"].get("teacher", True)
        figs.append({"id": "energy_totals", "title": "Energy per sample",
                     "caption": "Total energy per sample per backend: measured, analytic estimate per layer"
                                + (", paper style (one network-wide rate × OPs) and the ANN teacher." if teacher
                                   else " and paper style (one network-wide rate × OPs).")})
        figs.append({"id": "energy_layers", "title": f"Energy per layer ({b})",
                     "caption": f"Synaptic energy per sample of each layer on {b}: measured (exact ACs/MACs)"
                                + (", the paper's analytic estimate (input firing rate × dense OPs) and the ANN "
                                   "teacher (dense MACs, one pass)" if teacher else " and the paper's analytic "
                                   "estimate (input firing rate × dense OPs)")
                                + f"; energy model {en[b]['energy_model']['name']}, log scale."})
    return diagnostics.figure_entries(report) + figs + figure_entries(report.get("mapping") or {})


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
    keys = {"measured": "measured_pj", "analytic (rate × dense OPs)": "analytic_pj",
            **({"ANN teacher (MACs)": "ann_teacher_pj"} if report["run"].get("teacher", True) else {})}
    series = {label: [x[k] for x in en["layers"]] for label, k in keys.items()}
    div, unit = energy_unit(max(max(v) for v in series.values()) or 1.0)
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
            **({"ANN teacher": "ann_teacher_pj"} if report["run"].get("teacher", True) else {})}
    div, unit = energy_unit(max(v["per_sample"][k] for v in en.values() for k in keys.values()) or 1.0)
    series = {f"{b} ({e['energy_model']['name']})": [e["per_sample"][k] / div for k in keys.values()]
              for b, e in en.items()}
    fig, (ax,) = _new_figure(8, 3.6)
    _grouped_bars(ax, list(keys), series)
    ax.set_ylabel(f"energy per sample ({unit})")
    ax.set_title("Energy per sample: measured vs estimates")
    return _png(fig)


PLOTS = {"firing_rates": plot_firing_rates, "spikes_per_timestep": plot_spikes_per_timestep,
         "energy_layers": plot_energy_layers, "energy_totals": plot_energy_totals,
         "hardware_mapping": plot_mapping, "training": diagnostics.plot_training}


def render_figures(report: dict) -> dict[str, bytes]:
    """PNG bytes of every figure in ``report['figures']``."""
    return {f["id"]: PLOTS[f["id"]](report) for f in report["figures"]}
