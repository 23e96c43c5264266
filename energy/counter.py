"""Exact operation counts of a recorded SNN run: ACs, MACs, firing rates, sparsity.

Vocabulary (all counts are exact integers, summed over the recording's samples):

- **emitter**: a node whose output travels to other layers: the graph input, a LIF node
  (spikes), or — not deployable, but countable — a conv/dense node feeding another one.
- **connection**: an emitter, the pool/flatten nodes after it (``via``), and the node it
  drives: a conv/dense node, or (an *identity skip*, a residual join) a LIF node that sums
  the emitter's spikes or pooled spikes into its current. On Lava every connection is
  one synapse set: pooling between a LIF and the next conv/dense is folded into that
  layer's weights, a skip is an identity (or pooled) Dense/Sparse process.
- **fan-out** of a source neuron: how many distinct neurons of the connection's output it
  has a synapse to: conv borders, stride, padding, dilation and groups included (a spike in
  a corner of a 3×3/pad-1 conv reaches 4·Cout outputs, on an edge 6·Cout, inside 9·Cout);
  a dense layer's rows; for a pool followed by a conv, the union of what the pooled
  positions containing it reach (= what its one pooled position reaches for the usual
  non-overlapping pool). Structural: a zero weight is still a synapse (Loihi stores and
  visits it; the paper's OPs count it too). Pooling and BN are not ops.
- **synapses** of a connection: the sum of its fan-outs (the folded layer's weight count
  without padding taps).

Counts per connection and per timestep:

- ``ACs``: spikes of the emitter × fan-out. A spike recorded at step t drives its synapses
  at step t (the file is aligned per sample, see ``spikefile``). A sigma-delta layer's graded
  spikes count the same way, per message (a non-zero payload) × fan-out: each still reaches its
  synapses once; the payload's bits (``payload_bits``, lava-dl's 16) are reported beside — a
  graded op multiplies a weight by the payload, which an energy model may price above an AC.
- ``MACs``: connections whose input is not binary: the first, encoding layer under direct
  encoding (and conv→conv chains). Every input position × its fan-out, **every timestep**:
  a direct-encoded image is the same at every step, but the paper's MAC column scales with
  T: its OPs are T = 4 × the ANN's MACs (ResNet-19 ≈ 2.29 G × 4 ≈ 9.15 G), and for VGG-16
  (CIFAR, average pooling) the first conv plus the four convs after a pool make ≈ 67.8 M
  MACs per step by our arithmetic, ×4 ≈ 271 M of the 274.24 M printed — one pass would be
  ≈ 68 M. A simulator also recomputes the current every step. ``encoding_macs_once`` in the
  totals gives the once-per-sample figure for hardware that caches the encoded current (a
  Lava bias / ring buffer).
  An input whose non-zero values all have one magnitude (Poisson spikes, possibly scaled to
  an integer in the fixed-point model) counts as spikes: ACs, per event.
- ``dense_ops``: every synapse of the (unfolded) layer at every timestep, as NeuroBench's
  "Dense" (all-ones input and weights, padding taps excluded): conv/dense nodes per their own
  input map; identity skips = their synapses.
- ``analytic_acs``: the paper-style estimate, input firing rate × dense_ops.
- ``ann_teacher_macs`` (per sample): the same graph's dense ops at T = 1, as MACs.

NeuroBench-style effective synaptic ops (``neurobench_eff_acs`` / ``_macs``), per conv/dense
node and timestep, on the layer's actual input ``x`` (pooled and summed as in the float
graph): ops = Σ over outputs of (x ≠ 0) ⊛ (W ≠ 0), bias ignored; they are ACs iff every value
of ``x`` at that step is in {−1, 0, 1}, else MACs. Where this differs from our counts, and why:

1. NeuroBench skips zero weights; we count every synapse (hardware visits stored zero
   weights; pruned weights only vanish from a Sparse process, and connection_sparsity shows
   how many there are).
2. Average pooling before a layer makes NeuroBench's input non-binary → MACs on the pooled
   map; we fold the pool into the synapses and count ACs at the spike's folded fan-out, as
   the deployed network runs (SpikingJelly's ``MACCounter`` agrees with NeuroBench here).
3. The encoding layer: NeuroBench counts non-zero pixels × non-zero weights; we count every
   input position (a dense current computation). SpikingJelly's ``MACCounter`` also counts
   padding taps (Cin·k²·Hout·Wout·Cout); we do not.
4. Identity skips are not a Linear/Conv module, so NeuroBench does not count them; we count
   one AC per spike per target neuron (a Dense/Sparse process on Lava).
5. NeuroBench decides AC vs MAC per forward call (one batch, one step); we decide per step
   over all samples. Counts here are totals over samples; ``per_sample`` divides by S.

The NeuroBench counts run every conv/dense layer again on every sample — they cost about what a
float forward pass does, more than the exact counts. ``neurobench_samples=m`` runs them on ``m``
samples spread evenly over the recording (every ``S // m``-th, so a recording ordered by class is
sampled in every class); their totals are then sums over those ``m`` samples (``neurobench_samples``
in the output) and their ``per_sample`` values divide by ``m``. The AC/MAC counts, firing rates and
energies always use every sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import Connection, StudentGraph, connections


# -- structure -----------------------------------------------------------------------------


def find_connections(graph: StudentGraph) -> list[Connection]:
    """Every connection of ``graph`` in node order (``export.graph.connections``, see the module
    docstring). Spikes that reach the output node directly are a read-out, not a synapse: not
    counted; nor is a netx input layer's input, which is its neurons' bias (no synapse)."""
    return [c for c in connections(graph) if not (c.identity and (graph.role(c.node) == "output"
                                                                  or getattr(graph.nodes[c.node], "bias_input", False)))]


def _via_reach(graph: StudentGraph, conn: Connection) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis reach of the source's (H, W) through the pools in ``via``; None if 1-D.

    Pools and convs are separable (their taps form a rectangle, per channel), so the 2-D
    reachability is the product of the two 1-D relations and composes axis by axis.
    """
    shape = graph.shapes[conn.source]
    if len(shape) != 3:
        return None
    rh, rw = np.eye(shape[1], dtype=bool), np.eye(shape[2], dtype=bool)
    for name in conn.via:
        rh, rw = graph.nodes[name].reach(rh, rw)  # each route's connectivity (export/nodes/)
    return rh, rw


def fanout(graph: StudentGraph, conn: Connection) -> np.ndarray:
    """int64 array of the source's shape: distinct output neurons each source neuron drives."""
    shape = graph.shapes[conn.source]
    reach = _via_reach(graph, conn)
    node = graph.nodes[conn.node]
    if not conn.identity:  # the synapse's own fan-out (export/nodes/), after the routes' reach
        in_shape = graph.shapes[conn.via[-1] if conn.via else conn.source]
        per_pos = node.fanout(reach, in_shape)
    else:  # identity skip: one synapse per pooled position containing the neuron
        per_pos = 1 if reach is None else np.outer(reach[0].sum(1), reach[1].sum(1))
    return np.broadcast_to(np.asarray(per_pos, dtype=np.int64), shape).copy()


def dense_ops_per_step(graph: StudentGraph, name: str) -> int:
    """Synapses of conv/dense node ``name`` on its own input map (NeuroBench "Dense" for one
    step: every activation × every weight, padding taps excluded)."""
    node = graph.nodes[name]
    if node.ROLE != "synapse":
        raise ValueError(f"node {name!r} is not a conv/dense node")
    return node.dense_ops(graph.shapes[graph.predecessors(name)[0]])


# -- recording checks ----------------------------------------------------------------------


def check_recording(graph: StudentGraph, recording) -> None:
    """UserError unless ``recording`` holds exactly the graph's LIF nodes with its shapes."""
    lifs = [n for n, v in graph.nodes.items() if v.ROLE == "neuron"]
    t, s = recording.timesteps, recording.samples
    recorded = list(getattr(recording, "layer_order", recording.layers))
    missing = [n for n in lifs if n not in recorded]
    extra = [n for n in recorded if n not in lifs]
    if missing or extra:
        raise UserError(f"spike recording does not match the graph: missing LIF layer(s) {missing}, "
                        f"unknown layer(s) {extra} (graph LIF nodes: {lifs})")
    for n in lifs:
        want = (t, s, *graph.shapes[n])
        if tuple(recording.layer_shape(n)) != want:
            raise UserError(f"spike recording layer {n!r} has shape {tuple(recording.layer_shape(n))}, "
                            f"the graph expects {want}")
    want = (t, s, *graph.shapes[graph.input_name])
    if (t, s, *recording.input_shape) != want:
        raise UserError(f"spike recording input has shape {(t, s, *recording.input_shape)}, the graph expects {want}")


def input_is_events(x: np.ndarray) -> bool:
    """True if every non-zero input value has one magnitude (spikes, maybe scaled)."""
    nz = np.abs(x[x != 0])
    return bool(nz.size == 0 or np.all(nz == nz[0]))


# -- NeuroBench effective ops --------------------------------------------------------------


def _apply_via(graph: StudentGraph, via: tuple[str, ...], v):
    """The routes' float semantics (pools, flatten) on one step's values ``[B, ...]``."""
    for name in via:
        v = graph.nodes[name].run_float(v[None])[0]
    return v


def spread(samples: int, m: int | None) -> slice:
    """``m`` of ``samples`` indices spread evenly (every ``samples // m``-th from 0); all for None
    or ``m >= samples``."""
    if m is None or m >= samples:
        return slice(0, samples, 1)
    step = samples // m
    return slice(0, step * (m - 1) + 1, step)


def split_spread(sl: slice, samples: int, parts: int) -> list[slice]:
    """``sl`` (a ``spread`` of ``samples``) cut into ``parts`` consecutive slices of (almost) equal
    length (fewer when it has fewer indices): their indices, in order, are ``sl``'s."""
    n = len(range(samples)[sl])
    k = max(1, min(parts, n))
    bounds = [i * n // k for i in range(k + 1)]
    return [slice(sl.start + a * sl.step, sl.start + (b - 1) * sl.step + 1, sl.step)
            for a, b in zip(bounds, bounds[1:])]


def neurobench_steps(graph: StudentGraph, name: str, conns: list[Connection], recording,
                     samples: slice | None = None, chunk: int = 256) -> list[tuple[int, bool]] | None:
    """NeuroBench effective ops of conv/dense node ``name`` per timestep over the recording's
    samples (``samples``: a ``spread`` of them, or a part of one; default all):
    ``[(ops, every input value in {-1, 0, 1}), ...]``, or None if one of its inputs is another
    layer's current (not recorded) or not kept per sample. The steps of consecutive parts of a
    spread add up (``merge_steps``) to the spread's."""
    import torch

    node = graph.nodes[name]
    if any(graph.role(c.source) not in ("input", "neuron") for c in conns):
        return None
    if any(recording.input is None if graph.role(c.source) == "input"
           else not recording.has_spikes(c.source) for c in conns):
        return None  # a counts-only recording of a source (``--record``): no per-sample spikes
    values = {c.source: recording.input if graph.role(c.source) == "input"
              else recording.layers[c.source] for c in conns}
    w = torch.as_tensor(node.weight != 0, dtype=torch.float32)
    sl = samples or slice(0, recording.samples, 1)
    n = len(range(recording.samples)[sl])
    steps = []
    for t in range(recording.timesteps):
        ops, spiking = 0, True
        for start in range(0, n, chunk):  # chunk positions start..stop-1 of the spread
            part = slice(sl.start + start * sl.step, sl.start + (min(start + chunk, n) - 1) * sl.step + 1, sl.step)
            x = sum(_apply_via(graph, c.via, torch.as_tensor(
                np.asarray(values[c.source][t, part], dtype=np.float32))) for c in conns)
            spiking &= bool(((x == 0) | (x == 1) | (x == -1)).all())
            y = node.apply((x != 0).to(torch.float32), w)  # the synapse's map with 0/1 weights
            ops += int(y.sum(dtype=torch.float64))  # per-output counts are small exact integers
        steps.append((ops, spiking))
    return steps


def merge_steps(parts: list[list[tuple[int, bool]] | None]) -> list[tuple[int, bool]] | None:
    """The per-step NeuroBench ops of parts of a spread (``split_spread``) as the whole spread's."""
    if any(p is None for p in parts):
        return None
    return [(sum(p[t][0] for p in parts), all(p[t][1] for p in parts)) for t in range(len(parts[0]))]


def neurobench_rows(graph: StudentGraph, recording, samples: slice | None = None) -> dict:
    """``neurobench_steps`` of every conv/dense node of ``graph`` over ``samples`` (default all)."""
    groups: dict[str, list[Connection]] = {}
    for c in find_connections(graph):
        groups.setdefault(c.name, []).append(c)
    return {name: neurobench_steps(graph, name, cs, recording, samples) for name, cs in groups.items()
            if graph.nodes[cs[0].node].ROLE == "synapse"}


def neurobench_ops(graph: StudentGraph, name: str, conns: list[Connection], recording,
                   chunk: int = 256, samples: slice | None = None) -> tuple[int, int] | None:
    """NeuroBench effective (ACs, MACs) of conv/dense node ``name`` over the recording's samples
    (``samples``: a ``spread`` of them; default all), or None if one of its inputs is another
    layer's current (not recorded)."""
    return _split(neurobench_steps(graph, name, conns, recording, samples, chunk))


def _split(steps: list[tuple[int, bool]] | None) -> tuple[int, int] | None:
    """(ACs, MACs): a step's ops are ACs iff every input value of the step was in {-1, 0, 1}."""
    if steps is None:
        return None
    return sum(ops for ops, spiking in steps if spiking), sum(ops for ops, spiking in steps if not spiking)


# -- counting ------------------------------------------------------------------------------


def _events(graph: StudentGraph, recording, source: str, input_events: bool):
    """The source's 0/1 events summed over the samples ``[T, ...]`` (int64), or None if it
    emits analog values."""
    role = graph.role(source)
    if role == "neuron":
        return recording.layer_counts(source)
    if role == "input" and input_events:
        return recording.input_nonzero()
    return None


def _per_step(counts: np.ndarray, fan: np.ndarray) -> np.ndarray:
    """ACs per step: spikes per neuron summed over samples ``[T, ...]`` × each neuron's fan-out."""
    return counts.reshape(len(counts), -1) @ fan.reshape(-1)


def count_ops(graph: StudentGraph, recording, *, neurobench: bool = True,
              neurobench_samples: int | None = None, neurobench_by_row: dict | None = None) -> dict:
    """Count every op of ``recording`` (a ``SpikeRecording``, or a ``SpikeFile`` read chunk by
    chunk: ``timesteps``, ``samples``, ``layer_shape``, ``layer_counts``, ``input_nonzero``,
    ``input_events``; the NeuroBench counts also read ``layers`` / ``input`` block by block) on ``graph``. Returns a JSON-ready dict:

    ``layers``: one row per conv/dense node and per identity skip (ACs, MACs, per-step
    lists, synapses, dense_ops, input_firing_rate, analytic_acs/_macs, NeuroBench counts,
    weights / zero_weights / connection_sparsity); ``neurons``: one row per LIF node
    (neurons, spikes, per-step spikes, firing_rate, activation_sparsity, neuron_updates);
    ``totals`` (sums over samples) and ``per_sample`` (totals / samples). The NeuroBench counts run
    on ``neurobench_samples`` samples spread over the recording (default: all; see the module
    docstring); ``neurobench_samples`` in the output says how many. ``neurobench_by_row``: those
    counts already made (``neurobench_rows`` on the same spread, e.g. by sample shards and
    ``merge_steps``).
    """
    check_recording(graph, recording)
    t_steps, n_samples = recording.timesteps, recording.samples
    nb_slice = spread(n_samples, neurobench_samples) if neurobench else None
    nb_samples = len(range(n_samples)[nb_slice]) if neurobench else 0
    run = t_steps * n_samples
    input_events = recording.input_events()
    conns = find_connections(graph)
    groups: dict[str, list[Connection]] = {}
    for c in conns:
        groups.setdefault(c.name, []).append(c)

    neurons = []
    spikes_of: dict[str, int] = {}
    for name, node in graph.nodes.items():
        if node.ROLE != "neuron":
            continue
        per_t = recording.layer_counts(name).reshape(t_steps, -1).sum(axis=1, dtype=np.int64)
        n = int(np.prod(graph.shapes[name]))
        spikes_of[name] = int(per_t.sum())
        rate = spikes_of[name] / (n * run)
        neurons.append({"name": name, "neurons": n, "spikes": spikes_of[name],
                        "message_bits": getattr(node, "MESSAGE_BITS", 0),
                        "spikes_per_timestep": per_t.tolist(), "firing_rate": rate,
                        "activation_sparsity": 1.0 - rate, "neuron_updates": n * run})
    if input_events:
        spikes_of[graph.input_name] = int(recording.input_nonzero().sum())

    rows = []
    for row_name, cs in groups.items():
        target = graph.nodes[cs[0].node]
        acs_t = np.zeros(t_steps, np.int64)
        macs_t = np.zeros(t_steps, np.int64)
        synapses = 0
        analog = False
        for c in cs:
            fan = fanout(graph, c)
            synapses += int(fan.sum())
            ev = _events(graph, recording, c.source, input_events)
            if ev is None:
                analog = True
                macs_t += int(fan.sum()) * n_samples
            else:
                acs_t += _per_step(ev, fan)
        spiking_sources = sorted({c.source for c in cs if c.source in spikes_of})
        fired = sum(spikes_of[s] for s in spiking_sources)
        capacity = sum(int(np.prod(graph.shapes[s])) for s in spiking_sources) * run
        rate = fired / capacity if capacity else None
        per_step_dense = dense_ops_per_step(graph, row_name) if cs[0].kind != "identity" else synapses
        dense = per_step_dense * run
        # graded spikes (a sigma-delta source): each message still costs one op per synapse it reaches
        # (messages × fan-out); its payload's bits are reported beside
        payload = max((getattr(graph.nodes[c.source], "MESSAGE_BITS", 0) for c in cs), default=0)
        row = {
            "name": row_name, "kind": cs[0].kind, "sources": sorted({c.source for c in cs}),
            "payload_bits": payload,
            "via": sorted({v for c in cs for v in c.via}),
            "targets": graph.successors(row_name) if cs[0].kind != "identity" else [cs[0].node],
            "input": "analog" if analog else "spikes",
            "acs": int(acs_t.sum()), "macs": int(macs_t.sum()),
            "acs_per_timestep": acs_t.tolist(), "macs_per_timestep": macs_t.tolist(),
            "synapses": synapses, "dense_ops": dense, "dense_ops_per_step": per_step_dense,
            "input_firing_rate": rate,
            "analytic_acs": 0.0 if analog else (rate or 0.0) * dense,
            "analytic_macs": float(dense) if analog else 0.0,
            "neurobench_eff_acs": None, "neurobench_eff_macs": None,
            "weights": None, "zero_weights": None, "connection_sparsity": None,
        }
        if target.ROLE == "synapse":
            wz = int(np.count_nonzero(target.weight == 0))
            row.update(weights=int(target.weight.size), zero_weights=wz,
                       connection_sparsity=wz / target.weight.size)
            if neurobench and neurobench_by_row is not None:
                nb = _split(neurobench_by_row.get(row_name))
            else:
                nb = neurobench_ops(graph, row_name, cs, recording, samples=nb_slice) if neurobench else None
            if nb is not None:
                row.update(neurobench_eff_acs=nb[0], neurobench_eff_macs=nb[1])
        rows.append(row)

    return {"timesteps": t_steps, "samples": n_samples, "neurobench_samples": nb_samples,
            "input_encoding": "spikes" if input_events else "analog",
            "layers": rows, "neurons": neurons,
            **_totals(rows, neurons, t_steps, n_samples, nb_samples)}


def _totals(rows, neurons, t_steps, n_samples, nb_samples) -> dict:
    weighted = [r for r in rows if r["kind"] != "identity"]
    spikes = sum(n["spikes"] for n in neurons)
    updates = sum(n["neuron_updates"] for n in neurons)
    rate = spikes / updates if updates else 0.0
    w = sum(r["weights"] for r in weighted)
    nb = [r for r in weighted if r["neurobench_eff_acs"] is not None]
    totals = {
        "acs": sum(r["acs"] for r in rows), "macs": sum(r["macs"] for r in rows),
        "acs_per_timestep": [sum(r["acs_per_timestep"][t] for r in rows) for t in range(t_steps)],
        "macs_per_timestep": [sum(r["macs_per_timestep"][t] for r in rows) for t in range(t_steps)],
        "synapses": sum(r["synapses"] for r in rows),
        "dense_ops": sum(r["dense_ops"] for r in rows),
        "spikes": spikes, "neurons": sum(n["neurons"] for n in neurons), "neuron_updates": updates,
        "firing_rate": rate, "activation_sparsity": 1.0 - rate,
        "weights": w, "zero_weights": sum(r["zero_weights"] for r in weighted),
        "connection_sparsity": sum(r["zero_weights"] for r in weighted) / w if w else 0.0,
        "neurobench_eff_acs": sum(r["neurobench_eff_acs"] for r in nb) if nb else None,
        "neurobench_eff_macs": sum(r["neurobench_eff_macs"] for r in nb) if nb else None,
        "neurobench_dense": sum(r["dense_ops"] for r in weighted),
        "analytic_acs": sum(r["analytic_acs"] for r in rows),
        "analytic_macs": sum(r["analytic_macs"] for r in rows),
        # the paper's Table III style: one network-wide firing rate × the spike-driven dense ops
        "paper_style_acs": rate * sum(r["dense_ops"] for r in rows if r["input"] == "spikes"),
        "ann_teacher_macs_per_sample": sum(r["dense_ops_per_step"] for r in weighted),
        "encoding_macs_once_per_sample": sum(r["synapses"] for r in rows if r["input"] == "analog"),
    }
    totals["synaptic_ops"] = totals["acs"] + totals["macs"]
    keys = ("acs", "macs", "synaptic_ops", "dense_ops", "spikes", "neuron_updates", "analytic_acs",
            "analytic_macs", "paper_style_acs", "neurobench_eff_acs", "neurobench_eff_macs", "neurobench_dense")
    per_sample = {k: (None if totals[k] is None else totals[k] / n_samples) for k in keys}
    for k in ("neurobench_eff_acs", "neurobench_eff_macs"):  # counted on their own samples
        per_sample[k] = None if totals[k] is None else totals[k] / nb_samples
    per_sample["ann_teacher_macs"] = totals["ann_teacher_macs_per_sample"]
    per_sample["encoding_macs_once"] = totals["encoding_macs_once_per_sample"]
    return {"totals": totals, "per_sample": per_sample}
