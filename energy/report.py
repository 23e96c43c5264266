"""Energy report: op counts (``counter.count_ops``) priced by an ``EnergyModel``, as JSON and a table.

JSON schema (``format`` "htakl-energy/1"); counts are exact integers summed over the
recording's samples unless the key says ``per_sample`` (the ``neurobench_*`` effective counts: over
their ``neurobench_samples`` samples, ``energy.counter``); energies in pJ:

    format, spikes_file, graph_file, backend, timesteps, samples, neurobench_samples, input_encoding
    energy_model: {name, source, e_ac_pj, e_mac_pj, e_neuron_update_pj, e_spike_pj, notes}
    layers: [{name, kind: conv|dense|identity, sources, via, targets, input: spikes|analog,
              acs, macs, acs_per_timestep[T], macs_per_timestep[T], synapses, dense_ops,
              dense_ops_per_step, input_firing_rate, analytic_acs, analytic_macs,
              neurobench_eff_acs, neurobench_eff_macs, weights, zero_weights,
              connection_sparsity, energy_pj}]
    neurons: [{name, neurons, spikes, spikes_per_timestep[T], firing_rate,
               activation_sparsity, neuron_updates, energy_pj}]
    totals: {acs, macs, synaptic_ops, acs_per_timestep, macs_per_timestep, synapses, dense_ops,
             spikes, neurons, neuron_updates, firing_rate, activation_sparsity, weights,
             zero_weights, connection_sparsity, neurobench_eff_acs, neurobench_eff_macs,
             neurobench_dense, analytic_acs, analytic_macs, paper_style_acs,
             ann_teacher_macs_per_sample, encoding_macs_once_per_sample,
             energy_pj, synaptic_energy_pj, neuron_energy_pj}
    per_sample: {acs, macs, synaptic_ops, dense_ops, spikes, neuron_updates, analytic_acs,
                 analytic_macs, paper_style_acs, neurobench_eff_acs, neurobench_eff_macs,
                 neurobench_dense, ann_teacher_macs, encoding_macs_once, energy_pj, energy_mj,
                 analytic_energy_pj, paper_style_energy_pj, ann_teacher_energy_pj}

``analytic_energy_pj`` prices the per-layer estimate (input firing rate × dense ops) and
``paper_style_energy_pj`` the network-wide one (firing rate × OPs, as the paper's Table III),
both plus the measured neuron/spike energy; ``ann_teacher_energy_pj`` = teacher MACs × e_mac.
"""

from __future__ import annotations

from htakl_deploy.energy.models import EnergyModel

FORMAT = "htakl-energy/1"
#: samples the NeuroBench-style cross-check runs on by default (``energy --neurobench-samples``):
#: spread over the recording; it runs every layer again, so on every sample of a 10,000-image split
#: it cost more than the simulation (docs/PERFORMANCE.md, "Streaming")
NEUROBENCH_SAMPLES = 256


def energy_report(counts: dict, model: EnergyModel, **meta) -> dict:
    """``counts`` (from ``count_ops``) with energies added; ``meta`` (file names, backend) on top."""
    layers = [{**r, "energy_pj": model.energy_pj(acs=r["acs"], macs=r["macs"])} for r in counts["layers"]]
    neurons = [{**n, "energy_pj": model.energy_pj(neuron_updates=n["neuron_updates"], spikes=n["spikes"])}
               for n in counts["neurons"]]
    tot = dict(counts["totals"])
    tot["synaptic_energy_pj"] = sum(r["energy_pj"] for r in layers)
    tot["neuron_energy_pj"] = sum(n["energy_pj"] for n in neurons)
    tot["energy_pj"] = tot["synaptic_energy_pj"] + tot["neuron_energy_pj"]
    s = counts["samples"]
    ps = dict(counts["per_sample"])
    neuron_pj = tot["neuron_energy_pj"] / s
    ps["energy_pj"] = tot["energy_pj"] / s
    ps["energy_mj"] = ps["energy_pj"] * 1e-9
    ps["analytic_energy_pj"] = model.energy_pj(acs=ps["analytic_acs"], macs=ps["analytic_macs"]) + neuron_pj
    ps["paper_style_energy_pj"] = model.energy_pj(acs=ps["paper_style_acs"], macs=ps["analytic_macs"]) + neuron_pj
    ps["ann_teacher_energy_pj"] = model.energy_pj(macs=ps["ann_teacher_macs"])
    return {"format": FORMAT, **meta, "timesteps": counts["timesteps"], "samples": s,
            "neurobench_samples": counts.get("neurobench_samples"),
            "input_encoding": counts["input_encoding"], "energy_model": model.to_dict(),
            "layers": layers, "neurons": neurons, "totals": tot, "per_sample": ps}


def si(x, sep: str = "", missing: str = "-") -> str:
    """A count with a G/M/k prefix (``2.110G``; ``sep`` goes between number and prefix)."""
    if x is None:
        return missing
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3f}{sep}{unit}"
    return f"{x:.4g}" if isinstance(x, float) else str(x)



def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _energy(pj: float) -> str:
    for div, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(pj) >= div:
            return f"{pj / div:.4f} {unit}"
    return f"{pj:.4g} pJ"


def format_table(report: dict) -> str:
    """Per-sample table of every layer and LIF node, then totals (plain text)."""
    s = report["samples"]
    m = report["energy_model"]
    lines = [f"energy model {m['name']}: {m['source']}",
             f"{s} samples × T={report['timesteps']} ({report['input_encoding']} input); values per sample", ""]
    head = f"{'layer':<28} {'kind':<8} {'in rate':>8} {'ACs':>11} {'MACs':>11} {'dense OPs':>11} {'energy':>13}"
    lines += [head, "-" * len(head)]
    for r in report["layers"]:
        lines.append(f"{r['name'][:28]:<28} {r['kind']:<8} {_pct(r['input_firing_rate']):>8} {si(r['acs'] / s):>11} "
                     f"{si(r['macs'] / s):>11} {si(r['dense_ops'] / s):>11} {_energy(r['energy_pj'] / s):>13}")
    head2 = f"{'LIF layer':<28} {'neurons':>9} {'spikes':>11} {'firing rate':>12} {'energy':>13}"
    lines += ["", head2, "-" * len(head2)]
    for n in report["neurons"]:
        lines.append(f"{n['name'][:28]:<28} {n['neurons']:>9} {si(n['spikes'] / s):>11} "
                     f"{_pct(n['firing_rate']):>12} {_energy(n['energy_pj'] / s):>13}")
    t, ps = report["totals"], report["per_sample"]
    lines += [
        "",
        f"total per sample: {si(ps['acs'])} ACs, {si(ps['macs'])} MACs, {si(ps['spikes'])} spikes, "
        f"firing rate {_pct(t['firing_rate'])} → {_energy(ps['energy_pj'])}",
        f"  analytic (rate × dense OPs {si(ps['dense_ops'])}): {si(ps['analytic_acs'])} ACs → "
        f"{_energy(ps['analytic_energy_pj'])}; paper style {si(ps['paper_style_acs'])} ACs → "
        f"{_energy(ps['paper_style_energy_pj'])}",
        f"  ANN teacher: {si(ps['ann_teacher_macs'])} MACs → {_energy(ps['ann_teacher_energy_pj'])}",
        f"  NeuroBench effective{_nb_on(report)}: {si(ps['neurobench_eff_acs'])} ACs, {si(ps['neurobench_eff_macs'])} MACs; "
        f"activation sparsity {_pct(t['activation_sparsity'])}, connection sparsity {_pct(t['connection_sparsity'])}",
    ]
    graded = [r["name"] for r in report["layers"] if r.get("payload_bits")]
    if graded:  # sigma-delta sources: messages × fan-out, each carrying a payload
        bits = sorted({r["payload_bits"] for r in report["layers"] if r.get("payload_bits")})
        lines.append(f"  graded spikes into {len(graded)} layer(s): ACs count messages × fan-out; each message carries "
                     f"a {'/'.join(map(str, bits))}-bit payload (the op multiplies a weight by it)")
    return "\n".join(lines)


def _nb_on(report: dict) -> str:
    """`` (on 256 of 10000 samples)`` when the NeuroBench counts ran on a part of the recording."""
    m, s = report.get("neurobench_samples"), report["samples"]
    return f" (on {m} of {s} samples)" if m and m < s else ""


def report_for_files(spikes_path, graph_path, model: EnergyModel, *,
                     neurobench_samples: int | None = NEUROBENCH_SAMPLES, shards: int | None = None,
                     ray_address: str | None = None, ray_cpus: int | None = None) -> dict:
    """Count a spike recording against the student's NIR graph (float or quantised) and price it;
    the NeuroBench-style counts on ``neurobench_samples`` samples spread over it (None: all of
    them, 0: none). ``shards`` > 1: that pass runs on that many Ray workers (``hw.shards``; the
    same counts)."""
    from htakl_deploy.energy.counter import count_ops
    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.errors import UserError
    from htakl_deploy.export.nir_in import read_graph

    if shards is not None and shards < 1:
        raise UserError(f"--shards: got {shards}, expected an integer >= 1")
    graph = read_graph(graph_path)  # a NIR file (float or quantised) or a lava-dl netx file
    graph = getattr(graph, "graph", graph)  # a QuantizedGraph carries its StudentGraph
    with open_spikes(spikes_path) as rec:  # read chunk by chunk: memory bounded by a block of samples
        try:
            nb = None
            if neurobench_samples != 0 and shards is not None and shards > 1:
                from htakl_deploy.energy.counter import check_recording, spread
                from htakl_deploy.hw.shards import neurobench_sharded

                check_recording(graph, rec)  # a mismatch is refused before any worker starts
                nb = neurobench_sharded(spikes_path, graph_path, rec.samples, spread(rec.samples, neurobench_samples or None),
                                        shards, address=ray_address, cpus=ray_cpus)
            counts = count_ops(graph, rec, neurobench=neurobench_samples != 0,
                               neurobench_samples=neurobench_samples or None, neurobench_by_row=nb)
        except UserError as e:
            raise UserError(f"{spikes_path} vs {graph_path}: {e}") from None
        backend = rec.attrs.get("backend")
    return energy_report(counts, model, spikes_file=str(spikes_path), graph_file=str(graph_path), backend=backend)
