"""Latency and energy of recorded spikes on a mapping, with the error bars the calibration leaves.

Per time step, from the partition (``hw.mapping``) and the real spikes: synaptic ops per core
(spike × its synapses on that core), spike messages (one per spike and destination core), their
mesh hops (cores placed in order, ``cores_per_tile`` per tile, tiles row-major on a
``mesh_tiles_x``-wide mesh, chips side by side along x), a step latency (slowest core's synaptic
ops + neuron updates, plus the farthest message and the barrier) and the energy per inference
(synaptic ops, neuron updates of every neuron every step, messages and hops, barriers, and the
chips' static power over the time an inference takes when inferences are streamed back to back,
as Intel's benchmark measures it). Spikes are averaged over the recorded samples.

**Error bars** (targets with a ``[calibration]``, Loihi 2): the costs were scaled so that the model
reproduces one measured run (PilotNet LIF on Loihi 2: time per step and dynamic energy, with our
model's activity for that run). That pins the sum, not the split: the dynamic energy per step
could be all synaptic ops or all neuron updates and still match the measurement, and the step
time all the busiest core's synaptic ops or all its neuron updates. The range reported is the
spread of the estimate over those attributions (each refitted to the measurement) and the
central fit, and the static power between the two published idle measurements.

Graded relays a rewrite added (``hw.map_transform``) are not in a recording of the untransformed
network: each is counted as sending a message every step (an upper bound: a relay sends when its
payload is not zero).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from htakl_deploy.errors import UserError


def _spikes_per_step(recording, name: str, shape) -> np.ndarray:
    """int64 ``[T, N]``: spikes of population ``name`` per time step, summed over samples (the
    spike file's counts: ``SpikeFile`` or ``SpikeRecording``, any ``--record`` setting)."""
    got = recording.layer_shape(name)
    if got is None:
        raise UserError(f"spike recording has no layer {name!r}: was it recorded from this artefact?")
    want = (recording.timesteps, recording.samples, *shape)
    if tuple(got) != want:
        raise UserError(f"spike recording layer {name!r} has shape {tuple(got)}, the artefact expects {want}")
    return recording.layer_counts(name).reshape(recording.timesteps, -1)


def activity(m, per_step_spikes: dict[str, np.ndarray], samples: int = 1) -> dict:
    """Synaptic ops per (step, core), messages and hops per step, per-link totals, from
    ``per_step_spikes`` (population → ``[T, N]`` spike counts summed over ``samples``)."""
    t, plan = m.target, m.plan
    steps = next(iter(per_step_spikes.values())).shape[0] if per_step_spikes else 0
    xy = m.core_xy()
    core_synops = np.zeros((steps, m.cores))
    messages, hops = np.zeros(steps), np.zeros(steps)
    max_hops = np.zeros(steps, dtype=np.int64)
    per_link = []
    links = {k.name: k for k in plan.links}
    for lm in m.layers.values():
        for g in lm.links:
            if g.name not in links:  # the host's end of the encoding link: no synapses
                continue
            link = links[g.name]
            src = m.layers[link.src]
            x = per_step_spikes[link.src]  # [T, N_src]
            counts = g.counts(lm.tiling)  # [N_src, n_dst_tiles]
            syn = g.synops(x, lm.tiling)  # [T, n_dst_tiles]
            core_synops[:, lm.core_ids] += syn
            reach = counts.astype(bool).astype(np.int64)
            s_tile = src.tiling.tile_of()
            pt = sp.csr_matrix((np.ones(len(s_tile), dtype=np.int64), (s_tile, np.arange(len(s_tile)))),
                               shape=(src.cores, len(s_tile)))
            link_msgs = link_hops = 0.0
            for step in range(steps):
                msg = (pt @ reach.multiply(x[step][:, None])).tocoo()  # [src tiles, dst tiles]
                d = np.abs(xy[src.core_ids[msg.row]] - xy[lm.core_ids[msg.col]]).sum(1)
                messages[step] += msg.data.sum()
                hops[step] += (msg.data * d).sum()
                if msg.nnz and (msg.data > 0).any():
                    max_hops[step] = max(max_hops[step], int(d[msg.data > 0].max()))
                link_msgs += msg.data.sum()
                link_hops += (msg.data * d).sum()
            per_link.append({"link": g.name, "src": link.src, "dst": link.dst, "synops": float(syn.sum()) / samples,
                             "messages": link_msgs / samples, "hops": link_hops / samples})
    return {"core_synops": core_synops / samples, "messages": messages / samples, "hops": hops / samples,
            "max_hops": max_hops, "links": per_link}


def _ranges(t, core_synops: np.ndarray, core_neurons: np.ndarray, dyn_pj: float, updates: float,
            step_ns: np.ndarray, steps: int, chips: int) -> dict | None:
    """The spread the calibration leaves (module docstring), per inference; None without one."""
    cal = t.calibration
    if not cal:
        return None
    synops = float(core_synops.sum())
    dyn = [dyn_pj, cal["dynamic_pj_per_step"] * synops / cal["synops_per_step"],
           cal["dynamic_pj_per_step"] * updates / cal["neuron_updates_per_step"]]
    per_step = [step_ns, cal["step_ns"] * core_synops.max(axis=1) / cal["busiest_core_synops"],
                np.full(len(step_ns), cal["step_ns"] * core_neurons.max(initial=0) / cal["busiest_core_neurons"])]
    step_lo, step_hi = (float(min(np.mean(s) for s in per_step)), float(max(np.mean(s) for s in per_step)))
    static = [cal["static_w_low"] * chips * step_lo * steps * 1e3, cal["static_w_high"] * chips * step_hi * steps * 1e3]
    return {"dynamic_pj": [min(dyn), max(dyn)], "step_latency_ns": [step_lo, step_hi],
            "static_pj": static, "total_pj": [min(dyn) + static[0], max(dyn) + static[1]],
            "source": cal["source"]}


def _summarise(values, names) -> dict:
    v = np.asarray(values, dtype=np.float64)
    out = {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()), "mean": float(v.mean())}
    if names is not None:
        uniq, cnt = np.unique(np.asarray(names), return_counts=True)
        out["slowest_layers"] = {str(k): int(c) for k, c in sorted(zip(uniq, cnt), key=lambda p: -p[1])}
    return out


def estimate(m, recording) -> dict:
    """Per-time-step routing, latency and per-inference energy of ``recording`` (an open
    ``SpikeFile`` or a ``SpikeRecording``: only its per-step counts are read) on the mapping (see
    the module docstring). Counts are per sample (averaged over the recorded samples)."""
    steps, samples = recording.timesteps, recording.samples
    x = {}
    for n, p in m.plan.populations.items():
        if p.readout:
            continue
        if p.neuron == "graded" and recording.layer_shape(n) is None:  # a relay a rewrite added (hw.map_transform)
            x[n] = np.full((steps, p.size), samples, dtype=np.int64)  # upper bound: a message every step
        else:
            x[n] = _spikes_per_step(recording, n, p.shape)
    est = estimate_from_activity(m, activity(m, x, samples), steps)
    est.update({"samples": samples, "backend": recording.attrs.get("backend")})
    return est


def estimate_from_activity(m, act: dict, steps: int) -> dict:
    from htakl_deploy.energy.models import load_preset

    t, plan = m.target, m.plan
    core_synops = act["core_synops"]
    core_neurons = m.core_stats("allocated_neurons")  # every allocated neuron is updated each step
    owner = [""] * m.cores
    for lm in m.layers.values():
        for c in lm.core_ids:
            owner[c] = lm.name if not owner[c] else owner[c] + "+" + lm.name
    busy = core_synops * t.t_synop_ns + core_neurons[None, :] * t.t_neuron_update_ns  # [T, cores]
    per_step = []
    for step in range(steps):
        k = int(busy[step].argmax())
        route_ns = t.t_spike_within_tile_ns + act["max_hops"][step] * t.t_tile_hop_ns if act["messages"][step] else 0.0
        per_step.append({"synops": float(core_synops[step].sum()), "messages": float(act["messages"][step]),
                         "hops": float(act["hops"][step]), "max_hops": int(act["max_hops"][step]),
                         "slowest_core": k, "slowest_layer": str(owner[k]),
                         "compute_ns": float(busy[step, k]), "route_ns": route_ns,
                         "latency_ns": float(busy[step, k]) + route_ns + t.t_barrier_ns})
    synops = float(core_synops.sum())
    updates = float(core_neurons.sum()) * steps
    msgs, hop = float(act["messages"].sum()), float(act["hops"].sum())
    step_ns = np.array([s["latency_ns"] for s in per_step])
    streamed_ns = float(step_ns.mean()) * steps
    energy = {"synaptic_pj": synops * t.e_synop_pj, "neuron_pj": updates * t.e_neuron_update_pj,
              "routing_pj": msgs * t.e_spike_within_tile_pj + hop * t.e_tile_hop_pj,
              "barrier_pj": steps * t.e_barrier_pj}
    energy["dynamic_pj"] = sum(energy.values())
    energy["static_pj"] = t.p_static_w * m.chips * streamed_ns * 1e3  # W · ns = nJ
    energy["total_pj"] = energy["dynamic_pj"] + energy["static_pj"]
    paper = load_preset("paper-45nm")
    enc_macs = m.input_synapses * steps
    pi = {"synops": synops, "neuron_updates": updates, "messages": msgs, "hops": hop,
          "energy": energy, "step_latency_ns_mean": float(step_ns.mean()),
          "steps": steps + plan.max_depth, "latency_ns": float(step_ns.mean()) * (steps + plan.max_depth),
          "throughput_steps": steps, "time_per_inference_streamed_ns": streamed_ns}
    ranges = _ranges(t, core_synops, core_neurons, energy["dynamic_pj"], updates, step_ns, steps, m.chips)
    if ranges:
        pi["ranges"] = ranges
    return {
        "timesteps": steps, "per_timestep": per_step,
        "per_timestep_summary": {"steps": steps,
                                 "synops": _summarise([s["synops"] for s in per_step], None),
                                 "messages": _summarise([s["messages"] for s in per_step], None),
                                 "latency_ns": _summarise(step_ns, [s["slowest_layer"] for s in per_step])},
        "links": act["links"], "per_inference": pi,
        "comparison": {"paper_45nm": {"name": paper.name, "acs": synops, "encoding_macs": enc_macs,
                                      "energy_pj": synops * paper.e_ac_pj + enc_macs * paper.e_mac_pj,
                                      "e_ac_pj": paper.e_ac_pj, "e_mac_pj": paper.e_mac_pj},
                       "encoding_macs_off_chip": enc_macs},
    }
