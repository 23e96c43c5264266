"""Does it fit? A quantised network's deployment plan (``hw.plan``) partitioned onto neurocores.

Model of a core (the numbers come from a ``hw.target.Target``): a core holds neurons of one
population (several small ones with the ``packed`` strategy, up to ``neuron_groups_per_core``)
and, on the destination side as on Loihi, every synapse that ends on them. Per core: neurons <=
``neurons_per_core``, synapse memory <= ``synapse_memory_bits_per_core``, input axons <=
``input_axons_per_core``, output axons <= ``output_axons_per_core``; what a link costs against
them (memory formats, conv kernels stored once per core on Loihi 2, weight precision, axons) is
``hw.map_geom``, calibrated for Loihi 2 on Intel's published compiles (hw/targets/loihi2.toml).

The input link (the encoding layer) is computed off-chip in the plan (its currents are fed to the
first population), so it takes no synapse memory here; its MACs are reported separately.

**Partition** (``hw.map_tiling``). Strategies: ``compiler`` (default): Lava's Loihi 2 compiler's
partition as its published compiles show it (column tiles of power-of-two width, blocks of a flat
layer multiplied by the worst overrun, one layer per core); ``fewest``: the fewest cores per layer
(a search over channel × row × column tiles); ``packed``: ``fewest``, then layers that fit on one
core share cores. Populations are tiled from the readout backwards, so a population's output-axon
counts are known (its consumers' tiles are fixed) when it is tiled. A residual join is one
population with several incoming links: all of their synapses live on its cores and are counted
together. Every tile of the chosen tiling is checked exactly.

**Lower bounds.** Any placement needs at least ``ceil(neurons / neurons_per_core)`` cores and as
many as the synapse memory of the links stored at their least (every synapse's weight and delay
bits; a shared kernel once), network-wide (``lower_bound_cores``) and per layer
(``lower_bound_cores_layerwise``, the sum: the bound for one population per core).

A layer whose single neuron breaks a limit (fan-in above the input axons of a core, its synapses
above the memory of a core, or its fan-out above the output axons) fits on no core: ``map_plan``
raises UserError naming the layer and the limit; ``map_artefact`` then rewrites such fan-ins onto
graded relays (``hw.map_transform.deployable``) and reports what it did (``transforms``).

**With recorded spikes** (``hw.map_estimate.estimate``): synaptic ops per core, spike messages,
mesh hops, step latency and energy per inference, with the error bars the target's calibration
leaves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from htakl_deploy.errors import UserError
from htakl_deploy.hw.map_geom import (ConvGeom, HostGeom, MatrixGeom, Tiling, entry_bits,  # noqa: F401
                                      link_geom, netx_weight_bits, shape3)
from htakl_deploy.hw.map_estimate import estimate  # noqa: F401  (re-exported)
from htakl_deploy.hw.map_tiling import (LIMIT_TEXT, LayerMap, limits, pack, single_neuron_problem,  # noqa: F401
                                        tile_population, usage)
from htakl_deploy.hw.plan import INPUT, DeploymentPlan, Link
from htakl_deploy.hw.target import Target

RESOURCES = ("neurons", "synapse_memory", "input_axons", "output_axons")
MAP_STRATEGIES = ("compiler", "fewest", "packed")


@dataclass
class Mapping:
    target: Target
    layers: dict[str, LayerMap]  # topological order
    input_link: Link
    input_synapses: int
    plan: DeploymentPlan
    cores: int = 0
    strategy: str = "compiler"

    @property
    def chips(self) -> int:
        return -(-self.cores // self.target.cores_per_chip)

    def core_xy(self) -> np.ndarray:
        """int ``[cores, 2]``: global mesh position of every core (chips side by side along x)."""
        t = self.target
        k = np.arange(self.cores)
        chip, tile = k // t.cores_per_chip, (k % t.cores_per_chip) // t.cores_per_tile
        return np.stack([chip * t.mesh_tiles_x + tile % t.mesh_tiles_x, tile // t.mesh_tiles_x], axis=1)

    def core_stats(self, key: str) -> np.ndarray:
        """``[cores]``: a per-tile statistic summed over the layers sharing each core."""
        out = np.zeros(self.cores)
        for lm in self.layers.values():
            np.add.at(out, lm.core_ids, lm.stats[key])
        return out


def _out_axons(name: str, geoms_out: dict, layers: dict, x_stride: int, readout: bool):
    def f(tiling: Tiling) -> np.ndarray:
        out = tiling.sizes().reshape(-1).astype(np.float64) if readout else np.zeros(tiling.n_tiles)
        for dst, g in geoms_out[name]:  # a recurrent link (dst == name) reaches the population's own tiles
            out += g.output_axons(tiling, tiling if dst == name else layers[dst].tiling, x_stride)
        return out
    return f


def map_plan(plan: DeploymentPlan, target: Target, strategy: str = "compiler") -> Mapping:
    """Partition every population of ``plan`` onto ``target``'s cores (see the module docstring)."""
    return map_strategies(plan, target, (strategy,))[strategy]


def map_strategies(plan: DeploymentPlan, target: Target, strategies=MAP_STRATEGIES) -> dict[str, Mapping]:
    """``map_plan`` for several strategies at once (``packed`` reuses ``fewest``'s tiles)."""
    bad = [s for s in strategies if s not in MAP_STRATEGIES]
    if bad:
        raise ValueError(f"strategy {bad[0]!r} not in {MAP_STRATEGIES}")
    geoms_in: dict[str, list] = {n: [] for n in plan.populations}
    geoms_out: dict[str, list] = {n: [] for n in plan.populations}
    for link in plan.links:
        if link.src == INPUT:
            geoms_in[link.dst].append(HostGeom())
            continue
        g = link_geom(link, plan, target)
        geoms_in[link.dst].append(g)
        geoms_out[link.src].append((link.dst, g))
    no_fit = []  # limits a layer breaks whatever the other layers do: all named at once
    for name, pop in plan.populations.items():
        problem = single_neuron_problem(pop.shape, geoms_in[name], lambda til: np.zeros(til.n_tiles), target)
        if problem:
            no_fit.append(f"layer {name!r}: {problem}")
    if no_fit:
        raise UserError(f"{len(no_fit)} layer(s) fit on no {target.name} core (set a larger limit with --set if "
                        f"the hardware allows it): " + "; ".join(no_fit))
    inp = plan.input_link
    if inp.kind == "bias":  # a netx input layer: the input is its bias, no synapses
        in_syn = 0
    elif inp.conv is not None and len(plan.input_shape) == 3:
        in_syn = ConvGeom(inp, shape3(plan.input_shape), shape3(plan.populations[inp.dst].shape), target).synapses()
    else:
        in_syn = int(inp.int_matrix(plan.input_shape).nnz)
    tilings = {"compiler": "compiler", "fewest": "fewest", "packed": "fewest"}
    tiled: dict[str, dict[str, LayerMap]] = {}
    out: dict[str, Mapping] = {}
    for strategy in strategies:
        kind = tilings[strategy]
        if kind not in tiled:
            tiled[kind] = _tile_all(plan, target, geoms_in, geoms_out, kind)
        layers = {n: copy.copy(lm) for n, lm in tiled[kind].items()}
        if strategy == "packed":
            cores = pack(list(layers.values()), target)
        else:
            cores = 0
            for lm in layers.values():
                lm.core_ids, cores = np.arange(cores, cores + lm.cores), cores + lm.cores
        out[strategy] = Mapping(target, layers, inp, in_syn, plan, cores, strategy)
    return out


def _tile_all(plan, target, geoms_in, geoms_out, kind) -> dict[str, LayerMap]:
    layers: dict[str, LayerMap] = {}
    for name in reversed(list(plan.populations)):  # consumers first: output axons are then known
        pop = plan.populations[name]
        x_stride = max([g.stride[1] for g in geoms_in[name] if isinstance(g, ConvGeom)], default=1)
        out_axons = _out_axons(name, geoms_out, layers, x_stride, pop.readout)
        lm = tile_population(name, pop.shape, geoms_in[name], out_axons, target, kind)
        fan_out = np.zeros(pop.size, dtype=np.int64)
        for _, g in geoms_out[name]:
            fan_out += g.fan_out()
        lm.fan_out_max = int(fan_out.max(initial=0))
        lm.fan_in_max = sum(g.fan_in_max() for g in geoms_in[name])
        lm.synapses = sum(g.synapses() for g in geoms_in[name])
        lm.min_bits = sum(g.min_bits() for g in geoms_in[name])
        layers[name] = lm
    return {n: layers[n] for n in plan.populations}


def lower_bounds(m: Mapping) -> dict[str, int]:
    t = m.target
    neurons = sum(lm.neurons for lm in m.layers.values())
    bits = sum(lm.min_bits for lm in m.layers.values())
    per_layer = sum(max(-(-lm.neurons // t.neurons_per_core), -(-lm.min_bits // t.synapse_memory_bits_per_core), 1)
                    for lm in m.layers.values())
    return {"lower_bound_cores": max(-(-neurons // t.neurons_per_core), -(-bits // t.synapse_memory_bits_per_core)),
            "lower_bound_cores_layerwise": per_layer}


def binding_limit(lm: LayerMap, t: Target) -> str:
    """The resource nearest its limit on the layer's fullest core (what stops fewer cores)."""
    use = {k: usage(lm.stats, k).max(initial=0) / lim for k, lim in limits(t).items()}
    return max(use, key=use.get)


def summary(m: Mapping, alternatives: dict | None = None) -> dict:
    """The mapping as JSON-ready data (format ``htakl-map/1``); ``alternatives``: strategy → cores
    of the other strategies, for the totals."""
    t, lims = m.target, limits(m.target)
    rows = []
    for lm in m.layers.values():
        s = lm.stats
        pct = {k: 100.0 * float(usage(s, k).max(initial=0)) / lim for k, lim in lims.items()}
        rows.append({
            "name": lm.name, "shape": list(lm.shape), "neurons": lm.neurons, "cores": lm.cores,
            "first_core": int(lm.core_ids.min()), "core_ids": [int(c) for c in lm.core_ids],
            "tile": {"channels": lm.tiling.channels, "rows": lm.tiling.rows, "cols": lm.tiling.cols},
            "neurons_per_core_max": int(s["allocated_neurons"].max()), "synapses": lm.synapses,
            "synapse_bits_per_core_max": int(s["bits"].max(initial=0)),
            "synapse_words_per_core_mean": float(s["bits"].mean()) / t.synapse_word_bits,
            "input_axons_per_core_max": int(s["input_axons"].max(initial=0)),
            "output_axons_per_core_max": int(s["output_axons"].max(initial=0)),
            "output_axons_per_core_mean": float(s["output_axons"].mean()),
            "utilisation_pct": {"neurons": pct["neurons"], "synapse_memory": pct["bits"],
                                "input_axons": pct["input_axons"], "output_axons": pct["output_axons"]},
            "fan_in_max": lm.fan_in_max, "fan_out_max": lm.fan_out_max,
            "weight_bits": sorted({int(g.weight_bits) for g in lm.links if g.weight_bits}),
            "binding_limit": "none (one core)" if lm.cores == 1 else
            {"neurons": "neurons", "bits": "synapse_memory", "input_axons": "input_axons",
             "output_axons": "output_axons"}[binding_limit(lm, t)],
            "links": [g.name for g in lm.links if not isinstance(g, HostGeom)],
            "lower_bound_cores": max(-(-lm.neurons // t.neurons_per_core),
                                     -(-lm.min_bits // t.synapse_memory_bits_per_core), 1),
        })
    owner = [""] * m.cores
    for lm in m.layers.values():
        for c in lm.core_ids:
            owner[c] = lm.name if not owner[c] else owner[c] + "+" + lm.name
    per_core = {"layer": owner,
                "memory_pct": [round(100.0 * float(b) / lims["bits"], 3) for b in m.core_stats("bits")],
                "neurons_pct": [round(100.0 * float(n) / lims["neurons"], 3) for n in m.core_stats("allocated_neurons")]}
    totals = {"cores": m.cores, "chips": m.chips, "boards": -(-m.chips // t.chips_per_board),
              "strategy": m.strategy, "cores_by_strategy": {m.strategy: m.cores, **(alternatives or {})},
              "neurons": sum(lm.neurons for lm in m.layers.values()),
              "synapses": sum(lm.synapses for lm in m.layers.values()),
              "synapse_bits": int(sum(lm.stats["bits"].sum() for lm in m.layers.values())),
              "encoding_synapses_off_chip": m.input_synapses, **lower_bounds(m)}
    return {"format": "htakl-map/1", "target": t.to_dict(), "layers": rows, "totals": totals,
            "per_core": per_core}


# -- one call: artefact (+ its run's spikes) → the mapping report --------------------------

SPIKE_BACKENDS = ("lava-fixed_pt", "emulator", "lava-floating_pt", "torch-float")


def find_spikes(artefact_path) -> "Path | None":
    """The run's recorded spikes next to an artefact in ``RUN_DIR/export/``: the first of
    ``SPIKE_BACKENDS`` that has ``simulate/<backend>/spikes.h5``."""
    from htakl_deploy.hw.simulate import own_folder

    for b in SPIKE_BACKENDS:
        p = own_folder(artefact_path, b) / "spikes.h5"
        if p.is_file():
            return p
    return None


def map_artefact(artefact, *, target: str = "loihi2", overrides: tuple[str, ...] = (),
                 spikes: "str | None" = "auto", strategy: str = "compiler") -> dict:
    """Map a run directory / export folder / ``student.lava.npz`` onto ``target`` by ``strategy``
    (the totals also give the other strategies' core counts); with spikes (``"auto"``: the run's
    own recording, if any; a path; None: none) add the estimate, and the run's own AC/MAC energy
    for that backend when ``energy/<backend>.json`` exists."""
    import json
    from pathlib import Path

    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.hw.simulate import read_artefact, resolve_artefact
    from htakl_deploy.hw.target import load_target

    from htakl_deploy.export.pipeline import is_nir_file

    tgt = load_target(target).with_overrides(list(overrides))
    if is_nir_file(artefact):  # a graph file (NIR, or a lava-dl netx file): its plan, built here
        from htakl_deploy.export.nir_in import load_nir_graph
        from htakl_deploy.hw.plan import plan_from_quantized

        path = Path(artefact)
        try:
            plan = plan_from_quantized(load_nir_graph(path)[1])
        except ValueError as e:
            raise UserError(f"{path}: cannot deploy this graph: {e}") from None
    else:
        path = resolve_artefact(artefact)
        plan = read_artefact(path)
    try:
        maps = map_strategies(plan, tgt)
        decisions = []
    except UserError:  # a fan-in no core holds: rewritten onto graded relays where that is exact
        from htakl_deploy.hw.map_transform import deployable

        plan, decisions = deployable(plan, tgt, strategy)
        maps = map_strategies(plan, tgt)
    m = maps[strategy]
    data = summary(m, {k: v.cores for k, v in maps.items() if k != strategy})
    if decisions:
        data["transforms"] = decisions
    data["artefact"] = str(path)
    spike_path = find_spikes(path) if spikes == "auto" else (Path(spikes) if spikes else None)
    if spike_path is not None:
        with open_spikes(spike_path) as rec:
            est = estimate(m, rec)
        est["source"] = str(spike_path)
        backend = rec.attrs.get("backend")
        energy_file = spike_path.parent.parent.parent / "energy" / f"{backend}.json"
        if spikes == "auto" and energy_file.is_file():
            try:
                rep = json.loads(energy_file.read_text(encoding="utf-8"))
                ps = rep["per_sample"]
                est["comparison"]["measured"] = {"file": f"energy/{backend}.json", "energy_pj": ps["energy_pj"],
                                                 "acs": ps["acs"], "macs": ps["macs"],
                                                 "energy_model": rep["energy_model"]["name"]}
            except (OSError, ValueError, KeyError, TypeError):
                pass  # the report lists unreadable energy files; the estimate stands without it
        data["estimate"] = est
    return data


def map_path(run_dir, target_name: str, *, strategy: str = "compiler", overrides: tuple[str, ...] = (),
             spikes: "str | None" = "auto"):
    """Where a run directory's mapping is written. The run's own (the target's own numbers, the
    compiler's partition, the run's recorded spikes: what ``run`` maps and the report shows) is
    ``RUN_DIR/map/<target>.json``; a what-if (``--set``, another ``--strategy``, other or no spikes)
    goes beside it, ``RUN_DIR/map/what-if/<target>-<settings>.json``, never over it."""
    import hashlib
    import re
    from pathlib import Path

    base = Path(run_dir) / "map"
    parts = ([strategy] if strategy != "compiler" else []) + [o.replace(" ", "") for o in overrides]
    if spikes != "auto":
        parts.append("no-spikes" if not spikes else
                     "spikes-" + hashlib.sha1(str(Path(spikes).resolve()).encode()).hexdigest()[:8])
    if not parts:
        return base / f"{target_name}.json"
    tag = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", "-".join(parts))
    if len(tag) > 80:
        tag = hashlib.sha1(tag.encode()).hexdigest()[:12]
    return base / "what-if" / f"{target_name}-{tag}.json"


def map_run_dir(run_dir, target: str = "loihi2") -> str:
    """``htakl-deploy run``'s mapping stage: ``RUN_DIR/map/<target>.json`` from the run's artefact
    and spikes. A network that fits on no core is recorded there (``error``), not raised: the
    run's other results stand. Returns a one-line summary."""
    from pathlib import Path

    from htakl_deploy.atomic import write_json
    from htakl_deploy.hw.target import load_target

    tgt = load_target(target)
    out = map_path(run_dir, tgt.name)
    try:
        data = map_artefact(run_dir, target=target)
    except UserError as e:
        write_json(out, {"format": "htakl-map/1", "target": tgt.to_dict(), "error": str(e)})
        return f"does not fit: {e}"
    write_json(out, data)
    t = data["totals"]
    line = f"{t['cores']} cores on {t['chips']} chip(s) (lower bound {t['lower_bound_cores_layerwise']})"
    if "estimate" in data:
        pi = data["estimate"]["per_inference"]
        line += f", {pi['latency_ns'] / 1e3:.1f} µs and {pi['energy']['total_pj'] / 1e6:.3f} µJ per inference"
    return line
