"""Making a plan fit: a fan-in no core can hold, moved onto relays that forward graded spikes.

``hw.mapping`` refuses a population whose single neuron breaks a core's limit: its fan-in needs
more input axons, or its synapses more memory, than one core has (ResNet-19's fc1, after the
8 × 8 global average pool folded into it, takes 32,768 inputs per neuron; Loihi 2's cores take
16,000 input axons and 12,000 words). Two exact rewrites of the plan, both built from **graded
relays**: populations (``Population.neuron == "graded"``, Lava's ``GradedVec`` with threshold 0,
a Loihi 2 programmable neuron) that send, every step, the integer current they received as a
graded spike (payload up to 24 bits):

- **pool as a layer** (``with_pool_layer``): where the link's weights are the same for every
  position of each source channel (a global pool folded into a dense layer), a relay per channel
  sums its channel's spikes (a depthwise kernel of ones over the whole map, stored once per core)
  and the dense layer reads the counts with one weight per channel: ``Σ_c V[n, c]·Σ_p s[c, p]`` is
  the folded link's ``Σ_{c,p} W[n, c, p]·s[c, p]``, integer for integer; likewise where a
  ``kp × kp`` average pool was composed into the next convolution (VGG-16's pooled stages: a 6 × 6
  stride-2 kernel whose taps repeat over 2 × 2 blocks), relays sum each ``kp × kp`` block and the
  convolution reads the sums with its own 3 × 3 taps;
- **fan-in split** (``with_fan_in_split``): the source's neurons are cut into groups of at most
  ``group`` inputs; a relay per (group, target neuron) computes that group's partial sum ``W_i·s_i``
  and one sparse link of ones adds the partial sums at the target, then applies the link's
  exponent once (a shift per partial sum would round differently).

A relay adds one synaptic hop: ``retime`` recomputes every population's depth and every link's
delay (a skip into the same target is delayed to meet it; a convolution link that needs a delay
becomes a sparse one, as in ``plan_from_quantized``). The emulator and the Lava builder run the
rewritten plan (tests/test_map_transform.py: every spike and every relay payload equal, the
readout identical to the untransformed plan's).

``deployable(plan, target)`` applies them where a population fits on no core: the pool layer
where the weights factor (it is far cheaper: one relay per channel), else the split, and says
what it did and what each option costs.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from htakl_deploy.errors import UserError
from htakl_deploy.hw.plan import INPUT, MAX_DELAY, DeploymentPlan, Link, Population

GRADED_PAYLOAD_BITS = 24  # Lava's graded spikes (GradedVec, num_message_bits) and Loihi 2's


def relay_population(name: str, shape, depth: int) -> Population:
    """A graded relay: no bias; it forwards its input current every step (its LIF fields are unused:
    Lava's GradedVec runs it with threshold 0)."""
    c = int(shape[0])
    return Population(name, tuple(shape), depth, False, 1, 4095, 4095, 1, np.zeros(c, np.int64), 0, 1.0, 1.0, 1.0,
                      np.zeros(c), neuron="graded", message_bits=GRADED_PAYLOAD_BITS)


def retime(plan: DeploymentPlan) -> DeploymentPlan:
    """Depths (``max(depth(src) + 1)``, 0 for the input's population) and delays
    (``depth(dst) − depth(src) − 1``) recomputed from the links, in the plan's population order."""
    depth: dict[str, int] = {}
    for name in plan.populations:
        ins = plan.links_into(name)
        depth[name] = max((0 if k.src == INPUT else depth[k.src] + 1) for k in ins)
    links = []
    for k in plan.links:
        d = 0 if k.src == INPUT else depth[k.dst] - depth[k.src] - 1
        if d > MAX_DELAY:
            raise UserError(f"link {k.name!r} would need a delay of {d} steps (Loihi 2 delays are at most {MAX_DELAY})")
        kind = k.kind
        if d and kind in ("conv", "dense"):  # Lava's Conv and Dense have no delay: DelaySparse
            kind = "sparse"
        links.append(replace(k, delay=d, kind=kind, weight_exp=k.weight_exp) if (d, kind) != (k.delay, k.kind) else k)
    pops = {n: replace(p, depth=depth[n]) if p.depth != depth[n] else p for n, p in plan.populations.items()}
    return DeploymentPlan(plan.input_shape, plan.input_scale, pops, links, copy.deepcopy(plan.metadata))


def _insert_after(plan: DeploymentPlan, before: str, new: dict[str, Population]) -> dict[str, Population]:
    out = {}
    for n, p in plan.populations.items():
        if n == before:
            out.update(new)
        out[n] = p
    return out


def pool_factor(link: Link, src_shape) -> np.ndarray | None:
    """``V`` [N, C] if the link's integer weights from a (C, H, W) source are the same for every
    position of each channel (``W[n, c, p] = V[n, c]``, zeros included), else None."""
    if len(src_shape) != 3 or link.src == INPUT or link.conv is not None:
        return None
    c, h, w = src_shape
    m = link.int_matrix(tuple(src_shape))
    full = m.toarray().reshape(m.shape[0], c, h * w)
    if not np.all(full == full[:, :, :1]):
        return None
    return full[:, :, 0]


def conv_pool_factor(link: Link, src_shape) -> int | None:
    """``kp`` if the link's kernel is a ``kp × kp`` sum pool (stride ``kp``) composed with a
    convolution (each tap repeated over ``kp × kp`` blocks, stride and padding multiples of ``kp``,
    as ``plan_from_quantized`` composes them), the largest such; else None."""
    c = link.conv
    if c is None or len(src_shape) != 3 or link.src == INPUT or tuple(c["dilation"]) != (1, 1):
        return None
    w = np.asarray(c["weight"])
    kh, kw = w.shape[2:]
    for kp in range(min(kh, kw), 1, -1):
        ok = (kh % kp == 0 and kw % kp == 0 and all(s % kp == 0 for s in c["stride"])
              and all(p % kp == 0 for p in c["padding"]) and src_shape[1] % kp == 0 and src_shape[2] % kp == 0)
        if ok and np.array_equal(np.repeat(np.repeat(w[:, :, ::kp, ::kp], kp, axis=2), kp, axis=3), w):
            return kp
    return None


def with_pool_layer(plan: DeploymentPlan, link_name: str) -> DeploymentPlan:
    """``plan`` with the pool folded into link ``link_name`` as its own layer of graded relays
    (module docstring): a global pool folded into a dense layer (``pool_factor``), or a ``kp × kp``
    pool composed into a convolution (``conv_pool_factor``)."""
    link = next(k for k in plan.links if k.name == link_name)
    src = plan.populations[link.src]
    c, h, w = src.shape
    relay = f"{link.src}.pool"
    v = pool_factor(link, src.shape)
    kp = None if v is not None else conv_pool_factor(link, src.shape)
    if v is not None:  # global: a relay per channel, the dense layer reads the counts
        ph, pw = h, w
        f = link.matrices(src.shape)[1]  # float weights: None in a plan read from an artefact
        m = sp.csr_matrix(v.astype(np.int64))
        fm = None if f is None else sp.csr_matrix(f.toarray().reshape(v.shape[0], c, h * w)[:, :, 0])
        m.eliminate_zeros()
        reads = Link(link.name, relay, link.dst, "dense", 0, link.weight_exp, m, fm,
                     num_weight_bits=link.num_weight_bits)
    elif kp is not None:  # kp × kp: the convolution reads the pooled counts with its own taps
        ph = pw = kp
        spec = link.conv
        base = {**spec, "weight": np.asarray(spec["weight"])[:, :, ::kp, ::kp],
                "f_weight": None if spec.get("f_weight") is None  # per spike, so per count
                else np.asarray(spec["f_weight"])[:, :, ::kp, ::kp],
                "stride": tuple(s // kp for s in spec["stride"]), "padding": tuple(p // kp for p in spec["padding"])}
        reads = Link(link.name, relay, link.dst, "sparse", 0, link.weight_exp, conv=base,
                     num_weight_bits=link.num_weight_bits)
    else:
        raise ValueError(f"link {link_name!r}: its weights do not factor into a pool and a layer reading it")
    ones = np.ones((c, 1, ph, pw), np.int64)
    pool = Link(f"{link.src}->{relay}", link.src, relay, "conv", 0, 0, conv={
        "weight": ones, "f_weight": ones.astype(np.float64), "stride": (ph, pw), "padding": (0, 0),
        "dilation": (1, 1), "groups": c})
    pops = _insert_after(plan, link.dst, {relay: relay_population(relay, (c, h // ph, w // pw), 0)})
    links = [k for k in plan.links if k.name != link_name] + [pool, reads]
    return retime(DeploymentPlan(plan.input_shape, plan.input_scale, pops, links, copy.deepcopy(plan.metadata)))


def with_fan_in_split(plan: DeploymentPlan, link_name: str, group: int) -> DeploymentPlan:
    """``plan`` with link ``link_name``'s fan-in split into groups of at most ``group`` source
    neurons, their partial sums relayed to the target (module docstring)."""
    link = next(k for k in plan.links if k.name == link_name)
    src, dst = plan.populations[link.src], plan.populations[link.dst]
    m, fm = link.matrices(src.shape)
    m, fm = m.tocsr(), None if fm is None else fm.tocsr()
    n_src, n_dst = src.size, dst.size
    k = -(-n_src // group)
    bound = int(np.asarray(abs(m).sum(axis=1)).max(initial=0))
    if bound >= 2 ** (GRADED_PAYLOAD_BITS - 1):
        raise UserError(f"link {link_name!r}: a partial sum can reach {bound}, beyond a {GRADED_PAYLOAD_BITS}-bit "
                        "graded spike")
    group_of = np.arange(n_src) // group
    # relay (i, n) holds group i's partial sum for target n: the link's columns of group i, stacked
    part = sp.vstack([m @ sp.diags((group_of == i).astype(np.int64), dtype=np.int64) for i in range(k)]).tocsr()
    f_part = None if fm is None else sp.vstack(
        [fm @ sp.diags((group_of == i).astype(np.float64), dtype=np.float64) for i in range(k)]).tocsr()
    part.eliminate_zeros()
    relay = f"{link.dst}.partial"
    add = sp.hstack([sp.identity(n_dst, dtype=np.int64, format="csr")] * k).tocsr()
    pops = _insert_after(plan, link.dst, {relay: relay_population(relay, (k * n_dst,), 0)})
    links = [x for x in plan.links if x.name != link_name]
    links += [Link(f"{link.name}.partial", link.src, relay, "sparse", 0, 0, part, f_part),
              Link(link.name, relay, link.dst, "sparse", 0, link.weight_exp, add, add.astype(np.float64))]
    return retime(DeploymentPlan(plan.input_shape, plan.input_scale, pops, links, copy.deepcopy(plan.metadata)))


def _no_fit(plan: DeploymentPlan, target) -> dict[str, str]:
    """Populations a single neuron of which fits on no core, with the reason (``hw.mapping``)."""
    from htakl_deploy.hw.map_geom import HostGeom, link_geom
    from htakl_deploy.hw.map_tiling import single_neuron_problem

    out = {}
    for name, pop in plan.populations.items():
        geoms = [HostGeom() if k.src == INPUT else link_geom(k, plan, target) for k in plan.links_into(name)]
        problem = single_neuron_problem(pop.shape, geoms, lambda til: np.zeros(til.n_tiles), target)
        if problem:
            out[name] = problem
    return out


def _fan_in(link: Link, plan: DeploymentPlan) -> int:
    if link.conv is not None:
        return int(np.count_nonzero(np.asarray(link.conv["weight"])[0]))
    return int(link.int_matrix(plan.populations[link.src].shape).getnnz(axis=1).max(initial=0))


def split_group(target) -> int:
    """The most source neurons one partial-sum relay can take: every input axon of a core, each
    storing at least one synapse word (one relay neuron per core)."""
    words = target.synapse_memory_bits_per_core // target.synapse_word_bits
    return int(min(target.input_axons_per_core, words))


def deployable(plan: DeploymentPlan, target, strategy: str = "compiler") -> tuple[DeploymentPlan, list[dict]]:
    """``plan`` rewritten so that every population fits on a core (module docstring), and the
    decisions: per rewritten link, the options with their cores (the one taken first). A
    population whose every incoming link fits but which still fits nowhere is refused with the
    reason (UserError)."""
    from htakl_deploy.hw.mapping import map_plan

    decisions = []
    for _ in range(len(plan.links) + 1):
        no_fit = _no_fit(plan, target)
        if not no_fit:
            return plan, decisions
        name, why = next(iter(no_fit.items()))
        links = [k for k in plan.links_into(name) if k.src != INPUT and (
            k.conv is None or conv_pool_factor(k, plan.populations[k.src].shape) is not None)]
        if not links:
            raise UserError(f"layer {name!r} fits on no {target.name} core: {why}; no link into it can be rewritten "
                            "(dense and sparse fan-ins can be split, pools folded into a link can become a layer)")
        link = max(links, key=lambda k: _fan_in(k, plan))
        options = []
        src_shape = plan.populations[link.src].shape
        if pool_factor(link, src_shape) is not None or conv_pool_factor(link, src_shape) is not None:
            options.append(("pool-layer", with_pool_layer(plan, link.name)))
        if link.conv is None:
            options.append(("fan-in-split", with_fan_in_split(plan, link.name, split_group(target))))
        costs = []
        for kind, candidate in options:
            try:
                m = map_plan(candidate, target, strategy)
                costs.append({"option": kind, "cores": m.cores,
                              "new_layer_cores": sum(lm.cores for n, lm in m.layers.items()
                                                     if n not in plan.populations or n == name)})
            except UserError as e:
                costs.append({"option": kind, "cores": None, "error": str(e)})
        fits = [(c["cores"], i) for i, c in enumerate(costs) if c["cores"] is not None]
        if not fits:
            raise UserError(f"layer {name!r} fits on no {target.name} core: {why}; neither a pool layer nor a "
                            f"fan-in split makes it fit: " + "; ".join(c.get("error", "") for c in costs))
        best = min(fits)[1]
        decisions.append({"population": name, "link": link.name, "reason": why, "chosen": costs[best]["option"],
                          "options": costs})
        plan = options[best][1]
    raise UserError("the fan-in rewrites did not converge")
