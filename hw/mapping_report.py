"""The hardware mapping as text: the ``map`` command's table, the report's "Hardware mapping"
section (blocks for ``energy.document``) and its plot (cores per layer, memory per core)."""

from __future__ import annotations

import json
from pathlib import Path

MAP_FORMAT = "htakl-map/1"


def _pct(x: float) -> str:
    return f"{x:.1f} %"


def _si(x: float, unit: str) -> str:
    for d, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= d:
            return f"{x / d:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def energy_text(pj: float) -> str:
    for d, u in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(pj) >= d:
            return f"{pj / d:.3f} {u}"
    return f"{pj:.3f} pJ"


def layer_rows(data: dict) -> list[list[str]]:
    rows = []
    for r in data["layers"]:
        u = r["utilisation_pct"]
        tile = r["tile"]
        rows.append([r["name"], "×".join(map(str, r["shape"])), str(r["cores"]), str(r["lower_bound_cores"]),
                     f"{tile['channels']}×{tile['rows']}×{tile['cols']}", str(r["neurons_per_core_max"]),
                     _pct(u["neurons"]), _pct(u["synapse_memory"]), _pct(u["input_axons"]), _pct(u["output_axons"]),
                     str(r["fan_in_max"]), str(r["fan_out_max"]), r["binding_limit"]])
    return rows


LAYER_HEADERS = ["layer", "shape", "cores", "bound", "tile C×H×W", "neurons/core", "neurons %", "memory %", "in-axons %",
                 "out-axons %", "fan-in", "fan-out", "binding limit"]


STRATEGY_TEXT = {"compiler": "as Lava's Loihi 2 compiler partitions (calibrated on its published compiles)",
                 "fewest": "fewest cores per layer, one layer per core", "packed": "fewest, small layers sharing cores"}


def totals_lines(data: dict) -> list[str]:
    t, tg = data["totals"], data["target"]
    strategy = t.get("strategy", "compiler")
    others = "; ".join(f"{k}: {v}" for k, v in t.get("cores_by_strategy", {}).items() if k != strategy)
    lines = [f"target {tg['name']} ({tg['title']}): {t['cores']} cores on {t['chips']} chip(s) "
             f"({tg['cores_per_chip']} cores per chip), {t['boards']} board(s) of {tg['chips_per_board']} chips",
             f"partition: {strategy} ({STRATEGY_TEXT.get(strategy, strategy)})"
             + (f"; other strategies: {others} cores" if others else ""),
             f"lower bound {t['lower_bound_cores']} cores network-wide, {t['lower_bound_cores_layerwise']} with one "
             f"layer per core (neurons / {tg['neurons_per_core']} per core, synapse bits / "
             f"{tg['synapse_memory_bits_per_core']} per core); greedy ÷ layer-wise bound = "
             f"{t['cores'] / max(t['lower_bound_cores_layerwise'], 1):.2f}",
             f"{t['neurons']} neurons, {t['synapses']} on-chip synapses ({t['synapse_bits']} bits of synapse memory); "
             f"the encoding layer's {t['encoding_synapses_off_chip']} synapses run off-chip"]
    for d in data.get("transforms", []):
        opts = ", ".join(f"{o['option']}: {o['cores'] if o['cores'] is not None else 'does not fit'} cores"
                         for o in d["options"])
        lines.append(f"rewritten: layer {d['population']!r} fits on no core as exported ({d['reason']}); "
                     f"{d['chosen']} on graded relays ({opts})")
    if tg.get("unpublished"):
        lines.append(f"not published for {tg['name']}, assumed (override with --set): {', '.join(tg['unpublished'])}")
    return lines


def estimate_lines(data: dict) -> list[str]:
    e = data.get("estimate")
    if not e:
        return ["no spike recording: no routing, latency or energy estimate (give --spikes, or run `simulate` first)"]
    pi, en, cmp_ = e["per_inference"], e["per_inference"]["energy"], e["comparison"]
    ps = e.get("per_timestep_summary") or _step_summary(e["per_timestep"])
    lat, syn = ps["latency_ns"], ps["synops"]
    slowest = ", ".join(f"{k} ({v})" for k, v in list(lat.get("slowest_layers", {}).items())[:3])
    rng = pi.get("ranges")
    lines = [f"from {e['samples']} recorded samples × T = {e['timesteps']} ({e.get('backend')}; {e.get('source', '')})",
             f"per time step ({ps['steps']} steps; every step in the JSON's per_timestep): synaptic ops "
             f"{syn['min']:.4g} – {syn['max']:.4g} (median {syn['median']:.4g}), latency {lat['min'] / 1e3:.2f} – "
             f"{lat['max'] / 1e3:.2f} µs (median {lat['median'] / 1e3:.2f}); slowest core in {slowest}",
             f"latency per inference {pi['latency_ns'] / 1e3:.2f} µs ({pi['steps']} steps incl. pipeline depth; "
             f"{pi['time_per_inference_streamed_ns'] / 1e3:.2f} µs per inference when streamed)"
             + (f"; step latency {rng['step_latency_ns'][0] / 1e3:.2f} – {rng['step_latency_ns'][1] / 1e3:.2f} µs "
                f"within the calibration" if rng else ""),
             f"energy per inference on {data['target']['name']}: {energy_text(en['total_pj'])} = synaptic ops "
             f"{energy_text(en['synaptic_pj'])} ({pi['synops']:.4g}) + neuron updates {energy_text(en['neuron_pj'])} "
             f"({pi['neuron_updates']:.4g}) + routing {energy_text(en['routing_pj'])} ({pi['messages']:.4g} messages, "
             f"{pi['hops']:.4g} hops) + barriers {energy_text(en['barrier_pj'])}"
             + (f" + static {energy_text(en['static_pj'])}" if en.get("static_pj") else "")]
    if rng:
        lines.append(f"range the calibration leaves ({rng['source']}): {energy_text(rng['total_pj'][0])} – "
                     f"{energy_text(rng['total_pj'][1])} per inference (dynamic {energy_text(rng['dynamic_pj'][0])} – "
                     f"{energy_text(rng['dynamic_pj'][1])}, static {energy_text(rng['static_pj'][0])} – "
                     f"{energy_text(rng['static_pj'][1])})")
    lines += [
             f"paper's 45 nm model: {energy_text(cmp_['paper_45nm']['energy_pj'])} "
             f"({pi['synops']:.4g} ACs × {cmp_['paper_45nm']['e_ac_pj']} pJ + {cmp_['paper_45nm']['encoding_macs']:.4g} "
             f"encoding MACs × {cmp_['paper_45nm']['e_mac_pj']} pJ)"]
    if cmp_.get("measured"):
        mm = cmp_["measured"]
        lines.append(f"our AC/MAC count ({mm['file']}, {mm['energy_model']}): {energy_text(mm['energy_pj'])} per sample "
                     f"({mm['acs']:.4g} ACs, {mm['macs']:.4g} MACs)")
    return lines


def _step_summary(per_step: list[dict]) -> dict:
    """``per_timestep_summary`` for mapping files written before it existed."""
    import numpy as np

    def summ(v):
        v = np.asarray(v, dtype=float)
        return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}

    lat = summ([s["latency_ns"] for s in per_step])
    names = [s["slowest_layer"] for s in per_step]
    lat["slowest_layers"] = {n: names.count(n) for n in sorted(set(names), key=names.count, reverse=True)}
    return {"steps": len(per_step), "synops": summ([s["synops"] for s in per_step]), "latency_ns": lat}


def format_text(data: dict) -> str:
    widths = [max(len(h), *(len(r[i]) for r in layer_rows(data))) for i, h in enumerate(LAYER_HEADERS)]
    out = ["  ".join(h.ljust(w) for h, w in zip(LAYER_HEADERS, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in layer_rows(data)]
    return "\n".join(out + [""] + totals_lines(data) + estimate_lines(data))


# -- the report's section ------------------------------------------------------------------


def read_maps(root: Path, problems: list[str]) -> dict[str, dict]:
    """``RUN_DIR/map/<target>.json`` files, by target name."""
    out = {}
    base = root / "map"
    for p in sorted(base.glob("*.json")) if base.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"map/{p.name}: not readable JSON ({type(e).__name__})")
            continue
        if not isinstance(data, dict) or data.get("format") != MAP_FORMAT:
            problems.append(f"map/{p.name}: not a '{MAP_FORMAT}' mapping")
            continue
        out[p.stem] = data
    return out


def figure_entries(maps: dict) -> list[dict]:
    if not any("layers" in d for d in maps.values()):
        return []
    return [{"id": "hardware_mapping", "title": "Hardware mapping",
             "caption": "Left: neurocores per layer on each target. Right: synapse memory (bars, coloured by "
                        "layer) and neurons (dots) used on every core, % of the core's limits, cores in "
                        "placement order."}]


def plot_mapping(report: dict) -> bytes:
    from htakl_deploy.energy.figures import _new_figure, _png

    maps = {k: d for k, d in report["mapping"].items() if "layers" in d}
    fig, (ax1, ax2) = _new_figure(10, 3.6, ncols=2)
    names = list(dict.fromkeys(r["name"] for d in maps.values() for r in d["layers"]))
    width = 0.8 / len(maps)
    for i, (tn, d) in enumerate(maps.items()):
        cores = {r["name"]: r["cores"] for r in d["layers"]}
        x = [k + (i - (len(maps) - 1) / 2) * width for k in range(len(names))]
        ax1.bar(x, [cores.get(n, 0) for n in names], width, label=tn)
    ax1.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax1.set_ylabel("cores")
    counts = [r["cores"] for d in maps.values() for r in d["layers"]]
    if max(counts) > 20 * min(counts):
        ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title("Neurocores per layer")
    d = maps.get("loihi2") or next(iter(maps.values()))
    pc = d["per_core"]
    layers = list(dict.fromkeys(pc["layer"]))
    for n in layers:
        idx = [k for k, v in enumerate(pc["layer"]) if v == n]
        ax2.bar(idx, [pc["memory_pct"][k] for k in idx], 1.0, label=n)
    ax2.plot(range(len(pc["neurons_pct"])), pc["neurons_pct"], "k.", markersize=3, label="neurons")
    ax2.set_xlabel(f"core ({d['target']['name']})")
    ax2.set_ylabel("% of core: memory (bars), neurons (dots)", fontsize=8)
    ax2.set_ylim(0, 105)
    ax2.set_title(f"Use per core, {d['target']['name']}")
    if len(layers) <= 12:
        ax2.legend(fontsize=6)
    return _png(fig)


def mapping_blocks(report: dict, table_cls) -> list:
    """Blocks of the report's "Hardware mapping" section (``table_cls`` = ``document.Table``)."""
    maps = report.get("mapping") or {}
    if not maps:
        return ["No hardware mapping in this directory (run `htakl-deploy map RUN_DIR --target loihi2`)."]
    blocks: list = ["Partition of every layer onto neurocores under each target's per-core limits "
                    "(`htakl-deploy map`, algorithm in `hw/mapping.py`): tiles of output channels × rows × columns, "
                    "cut as the target's compiler does (Loihi 2: calibrated on Intel's published compiles, "
                    "docs/MAPPING.md); percentages are the fullest core's use of each limit; the binding "
                    "limit is the one nearest its maximum. Estimates use the target file's per-operation costs, "
                    "with the range its calibration leaves.",
                    ("figure", "hardware_mapping")]
    for tn, d in maps.items():
        if "layers" not in d:
            blocks.append(f"**Does not fit on {tn}**: {d.get('error', 'no layers in map/' + tn + '.json')}.")
            continue
        blocks.append([f"the run's own mapping (map/{tn}.json): the target's own numbers, its recorded spikes"]
                      + totals_lines(d) + estimate_lines(d))
        blocks.append(table_cls(LAYER_HEADERS, layer_rows(d), f"Per layer on {tn} (map/{tn}.json).", "ll"))
    what_ifs = report.get("mapping_what_ifs") or []
    if what_ifs:
        blocks.append(f"Not shown: {len(what_ifs)} what-if mapping(s) in map/what-if/ (`map --set`, another "
                      f"`--strategy` or other spikes): {', '.join(what_ifs)}.")
    return blocks
