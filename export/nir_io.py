"""NIR (1.0.8) exchange of a ``StudentGraph`` (float) or ``QuantizedGraph`` (Loihi fixed point).

Node mapping: each node type writes and reads its own NIR nodes (``nir_node`` / ``NIR_TYPES`` +
``read_nir`` in ``export/nodes/``); ``TO_NIR`` / ``FROM_NIR`` are built from ``NODE_TYPES``;
unknown types raise naming the node:

    InputNode  ↔ nir.Input (shape (C, H, W), (C, L) or (N,))
    Conv2dNode ↔ nir.Conv2d, Conv1dNode ↔ nir.Conv1d (grouped: the equal ungrouped kernel + metadata
                 groups, because NIR 1.0.8's type check ignores groups)
    DenseNode  ↔ nir.Affine (quantised: nir.Linear, bias lives in the LIF)
    neurons    ↔ their family's type (LIF ↔ nir.LIF, IF ↔ nir.IF, CubaLIF ↔ nir.CubaLIF)
    FlattenNode ↔ nir.Flatten(start_dim=−len(input shape), end_dim=−1)
    PoolNode   ↔ nir.AvgPool2d / nir.SumPool2d (kernel, stride, padding as length-2 arrays)
    OutputNode ↔ nir.Output (a leaky readout: nir.LI → nir.Output; read also from a CubaLI with tau_mem = dt)
    nir.Scale → a one-to-one synapse: folded into the conv/affine before or after it, else a diagonal
               affine / depthwise 1×1 conv of its own; per-neuron input gains and thresholds of a
               neuron layer (any r, w_in, v_threshold per neuron) read as Scales on its inputs
    nested nir.NIRGraph → flattened
    residual join = several edges into one node (NIR sums them)
    nir.Threshold, nir.I → refused naming the node, with why (``NO_LOIHI_MAPPING``)

Conventions chosen for other importers (docs/DESIGN.md "Installing the stack"):

- LIF as SpikingJelly's exporter writes it with ``dt = 1e-4``: ``tau = τ·dt``, ``r = 1`` for
  ``decay_input=True`` (``r = τ`` otherwise), ``v_leak = v_reset = 0``; arrays of the neuron
  shape. Importers that use ``dt`` recover SJ's discrete LIF.
- ``Flatten(start_dim=-3, end_dim=-1)`` (``-len`` of the batch-less ``input_type`` (C, H, W)):
  the one convention every reader agrees on. NIR 1.0.8's type inference reads ``start_dim``
  on batch-less shapes, snnTorch's and Norse's importers build ``torch.nn.Flatten(start_dim,
  end_dim)`` and apply it to batched tensors: ``start_dim=0`` (what SpikingJelly writes)
  flattens the batch there, ``start_dim=1`` fails NIR's type check; counted from the end, both
  read "all but batch", so plain ``nir.read(path)`` (default type check) and both importers
  load our files (tests/test_nir_interop.py). ``from_nir`` accepts 0, 1 or ``-len(input)``
  with end_dim −1 (all mean "all but batch").
- Quantised graphs: node arrays hold integers (conv/linear ``weight`` = 8-bit mantissas,
  conv ``bias`` = 0, LIF ``v_threshold`` = vth); Loihi fields go in node ``metadata``: conv /
  linear ``weight_exp``; LIF ``du, dv, vth, scale_S, bias_mant`` (per channel), ``bias_exp``,
  ``tau_float``, ``v_threshold_float``, ``decay_input`` and, per identity skip from node X,
  ``identity_weight_mant.X`` / ``identity_weight_exp.X``; Output ``scale_S, bias_mant,
  bias_exp``. Graph metadata: ``format``, ``format_version``, ``quantized``, ``input_scale``.
  ``from_nir`` of a quantised graph returns a ``QuantizedGraph`` whose float graph holds the
  dequantised weights.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

import nir

from htakl_deploy.atomic import AtomicH5
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import TARGETS, StudentGraph, cycle_problem, strongly_connected
from htakl_deploy.export.nodes import FAMILIES, NIR_DT, NODE_TYPES, InputGain
from htakl_deploy.export.nodes.io import CubaLIReadout, LIReadout, merge_li_readout, merge_neuron_readout
from htakl_deploy.export.quantize import QuantConnection, QuantizedGraph, QuantTarget

DT = NIR_DT
FORMAT = "htakl-deploy-student"
FORMAT_VERSION = 1


# -- ours → NIR ----------------------------------------------------------------------------


# every node type writes its own NIR node (``nir_node``, export/nodes/)
TO_NIR: dict[type, Callable] = {t: t.nir_node for t in NODE_TYPES}


def to_nir(graph: StudentGraph, quantized: QuantizedGraph | None = None) -> nir.NIRGraph:
    """The NIR graph of ``graph`` (float), or of its fixed-point version if ``quantized``."""
    if quantized is not None and quantized.graph is not graph:
        raise ValueError("quantized was computed from another graph")
    nodes = {}
    for name, node in graph.nodes.items():
        fn = TO_NIR.get(type(node))
        if fn is None:
            raise ValueError(f"node {name!r}: no NIR converter for {type(node).__name__}")
        nodes[name] = fn(node, name, graph, quantized)
    edges = list(graph.edges)
    out = graph.output_name
    if hasattr(graph.nodes[out], "read"):  # a neuron read as the output (a netx last layer): NIR's Output after it
        nodes[f"{out}_output"] = nir.Output(output_type={"output": np.array(graph.shapes[out])})
        edges.append((out, f"{out}_output"))
    elif graph.nodes[out].leaky:  # the leaky readout is NIR's LI in front of the Output
        node, li = graph.nodes[out], f"{out}_li"
        shape = graph.shapes[out]
        nodes = {(li if k == out else k): v for k, v in nodes.items()}
        nodes[li] = node.nir_li(shape)
        nodes[out] = node.nir_node(out, graph, quantized)
        edges = [(a, li if b == out else b) for a, b in edges] + [(li, out)]
    meta = {"format": FORMAT, "format_version": np.int64(FORMAT_VERSION),
            "quantized": np.int64(quantized is not None)}
    if quantized is not None:
        meta["input_scale"] = float(quantized.input_scale)
        if quantized.metadata.get("input_lag"):  # a netx file's on-chip first synapse (hw.plan.Link.lag)
            meta["input_lag"] = np.int64(quantized.metadata["input_lag"])
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


# -- NIR → ours ----------------------------------------------------------------------------


# every node type reads its own NIR types (``NIR_TYPES`` / ``read_nir``, export/nodes/); an LI is read
# as the Output's leak, a Scale folded into the conv/affine before it
FROM_NIR: dict[type, Callable] = {
    **{nt: t.read_nir for t in NODE_TYPES for nt in t.NIR_TYPES},
    **{nt: r.read_nir for r in (LIReadout, CubaLIReadout) for nt in r.NIR_TYPES},
    nir.Scale: lambda name, n, dt: _scale_node(name, n, dt),  # defined below
}


# node families written as a NIR type they share with another family (a netx LOIHI neuron is a CubaLIF
# with its integers in metadata): read by the ``family`` tag in the node's metadata
FAMILY_READERS: dict[str, Callable] = {t.FAMILY: t.read_nir for t in NODE_TYPES if getattr(t, "FAMILY", None)}


# NIR node types that have a well-defined meaning but no exact Loihi mapping: refused naming the node, with why
NO_LOIHI_MAPPING: dict[type, str] = {
    nir.Threshold: "a stateless threshold (spike iff x > θ, nothing kept between steps) has no exact Loihi "
                   "neuron: lava's LIF keeps at least 1/4096 of v between steps (dv ≤ 4095), and IF keeps all of "
                   "it; write it as IF/LIF if that is what the model means",
    nir.I: "an integrator keeps all of its state; lava's LIF current u keeps at most 4095/4096 of it per step "
           "(du = 0, truncated), so an exact integrator readout does not exist: use LI with dt/tau ≥ 1/4096",
}


@dataclass(eq=False)
class _ScaleNode:
    """A NIR ``Scale`` while reading (``scale`` scalar or per element; ``shape``: its input's, if the
    file says), and the per-neuron gains of a neuron layer (``InputGain``) on each of its inputs."""

    scale: np.ndarray
    shape: tuple[int, ...] | None = None


def _scale_node(name: str, n: nir.Scale, dt: float) -> _ScaleNode:
    shape = (n.input_type or {}).get("input")
    shape = tuple(int(s) for s in np.asarray(shape).reshape(-1)) if shape is not None and np.size(shape) else None
    return _ScaleNode(np.asarray(n.scale, dtype=np.float64), shape)


def _split_gains(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """A neuron layer read with per-neuron input gains (``InputGain``, export/nodes/): the layer with its
    reference parameters, and a Scale of the gains on each incoming edge (folded next)."""
    out: OrderedDict = OrderedDict()
    for name, node in nodes.items():
        if isinstance(node, InputGain):  # the Scales go just before the layer: the order stays topological
            for k, (a, b) in enumerate([e for e in edges if e[1] == name]):
                gain_name = f"{name}.gain{k}"
                out[gain_name] = _ScaleNode(np.asarray(node.gain, dtype=np.float64), tuple(node.gain.shape))
                edges = [(a, gain_name) if e == (a, b) else e for e in edges] + [(gain_name, b)]
            node = node.node
        out[name] = node
    return out, edges


def _per_channel(scale: np.ndarray, channels: int, what: str, whose: str) -> np.ndarray:
    """``scale`` (scalar, or one value per channel × positions) as one value per channel."""
    if scale.ndim == 0:
        return np.full(channels, float(scale))
    s = scale.reshape(scale.shape[0], -1)
    if s.shape[0] != channels or not np.all(s == s[:, :1]):
        raise UserError(f"{what}: the scale must be one value per channel of {whose} ({channels}), got shape "
                        f"{scale.shape}")
    return s[:, 0]


def _synapse_ahead(nodes: OrderedDict, edges, name: str, node: _ScaleNode):
    """(the conv/affine the Scale ``name`` reaches through single-input pools and flatten, the scale as
    that node's input sees it), or None. A per-channel scale commutes with pooling; through a flatten
    (a route node that ``FLATTENS``) it becomes one value per element (the channel's value repeated
    over its positions)."""
    scale, flat, cur = node.scale, False, name
    while True:
        succs = [b for a, b in edges if a == cur]
        if len(succs) != 1 or [a for a, b in edges if b == succs[0]] != [cur]:
            return None
        nxt = nodes[succs[0]]
        if getattr(nxt, "ROLE", None) == "synapse":
            if flat and scale.ndim and nxt.weight.ndim == 2:  # per channel, flattened: repeat over positions
                per = scale.reshape(scale.shape[0], -1)[:, 0]
                if nxt.weight.shape[1] % per.size or not np.all(scale.reshape(per.size, -1) == per[:, None]):
                    return None
                scale = np.repeat(per, nxt.weight.shape[1] // per.size)
            return succs[0], scale
        if getattr(nxt, "ROLE", None) != "route" or flat:
            return None  # per-channel values through a pool are checked where they fold
        flat = nxt.FLATTENS
        cur = succs[0]


def _fold_scales(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """A Scale is a one-to-one synapse. Right after a conv/affine (its only successor) it multiplies
    that node's weights and bias per output channel; right before one (its only input) it multiplies
    its weights per input channel; elsewhere on a spike path (between a neuron, the input, a pool and
    a neuron or the output) it becomes a synapse of its own: a diagonal affine on a flat layer, a
    depthwise 1×1 conv on channels. UserError naming it where its values do not fit (a conv's scale
    must be one value per channel)."""
    from htakl_deploy.export.nodes.conv import Conv2dNode
    from htakl_deploy.export.nodes.dense import DenseNode

    for name, node in list(nodes.items()):
        if not isinstance(node, _ScaleNode):
            continue
        preds, succs = [a for a, b in edges if b == name], [b for a, b in edges if a == name]
        what = f"NIR node {name!r} (Scale)"
        if len(preds) != 1:
            raise UserError(f"{what}: needs exactly one input, got {preds}")
        src, dst = nodes[preds[0]], (nodes[succs[0]] if len(succs) == 1 else None)
        if getattr(src, "ROLE", None) == "synapse" and [b for a, b in edges if a == preds[0]] == [name]:
            s = _per_channel(node.scale, src.weight.shape[0], what, repr(preds[0]))
            src.weight = src.weight * s.reshape(-1, *([1] * (src.weight.ndim - 1)))
            src.bias = src.bias * s
        elif (ahead := _synapse_ahead(nodes, edges, name, node)) is not None:
            dst_name, scale = ahead  # the scale as the conv/affine's input sees it (through pools, a flatten)
            dst = nodes[dst_name]
            if dst.weight.ndim == 2:  # a dense layer: one factor per input element
                cols = dst.weight.shape[1]
                s = scale.reshape(-1) if scale.ndim else np.full(cols, float(scale))
                if s.size != cols:
                    raise UserError(f"{what}: {s.size} values for the {cols} inputs of {dst_name!r}")
                dst.weight = dst.weight * s[None, :]
            else:  # a conv: one factor per input channel, within its groups
                groups, cg = int(getattr(dst, "groups", 1)), dst.weight.shape[1]
                s = _per_channel(scale, cg * groups, what, f"the input of {dst_name!r}").reshape(groups, 1, cg)
                w = dst.weight.reshape(groups, -1, cg, *dst.weight.shape[2:])
                dst.weight = (w * s.reshape(*s.shape, *([1] * (dst.weight.ndim - 2)))).reshape(dst.weight.shape)
        else:  # a synapse of its own
            shape = node.shape or (tuple(node.scale.shape) if node.scale.ndim else None)
            if shape is None:
                raise UserError(f"{what}: a scalar Scale between {preds[0]!r} and {succs} needs its input shape "
                                "(the node's input_type) to become a synapse")
            if len(shape) == 1:
                s = np.broadcast_to(node.scale, shape).astype(np.float64)
                nodes[name] = DenseNode(np.diag(s), np.zeros(shape[0]))
            elif len(shape) == 3:
                s = _per_channel(np.broadcast_to(node.scale, shape) if node.scale.ndim else node.scale, shape[0],
                                 what, f"its input {preds[0]!r}")
                nodes[name] = Conv2dNode(s.reshape(-1, 1, 1, 1), np.zeros(shape[0]), groups=shape[0])
            else:
                raise UserError(f"{what}: a Scale on a {len(shape)}-D layer (shape {shape}) cannot become a synapse")
            continue
        edges = [(preds[0], b) if a == name else (a, b) for a, b in edges if b != name]
        del nodes[name]
    return nodes, edges


def _batch_free_input(nodes: OrderedDict, edges: list[tuple[str, str]]) -> list[str]:
    """An Input of shape ``(1, N)`` feeding only affine layers of ``N`` inputs (Rockpool writes its
    batch of one into the type) is read as ``(N,)``; returns the warning saying so."""
    for name, node in nodes.items():
        if getattr(node, "ROLE", None) != "input" or len(node.shape) < 2 or node.shape[0] != 1:
            continue
        succ = [nodes[b] for a, b in edges if a == name]
        rest = int(np.prod(node.shape[1:]))
        if succ and all(getattr(s, "KIND", None) == "dense" and s.weight.shape[1] == rest for s in succ):
            nodes[name] = type(node)((rest,))
            return [f"NIR Input {name!r} has type {node.shape}, its affine layer takes ({rest},): the leading 1 "
                    "read as a batch of one (NIR types have no batch dimension)"]
    return []


def _check_finite(name: str, n: nir.NIRNode) -> None:
    """UserError naming the node and field if any numeric parameter is NaN or infinite."""
    for f in dataclasses.fields(n):
        value = getattr(n, f.name)
        if isinstance(value, (np.ndarray, float, np.floating)):
            arr = np.asarray(value)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                raise UserError(f"NIR node {name!r} ({type(n).__name__}): {f.name} has NaN or infinite values")


def _topological(flat: dict, edges: list[tuple[str, str]]) -> list[str]:
    """The node names in topological order of the forward edges: each cycle must pass through one
    neuron, and the edges into that neuron from its cycle are its recurrent (backward) inputs
    (``export.graph``, "Recurrence"). UserError naming the nodes of a cycle with no neuron or several."""
    names = list(flat)
    neuron_types = tuple(t for fam in FAMILIES for t in fam.NIR_TYPES)
    back: set[tuple[str, str]] = set()
    while True:
        fwd = [e for e in edges if e not in back]
        comps = strongly_connected(names, fwd)
        if not comps:
            break
        for comp in comps:
            neurons = [n for n in comp if isinstance(flat[n], neuron_types)]
            problem = cycle_problem(comp, neurons)
            if problem:
                raise UserError(f"NIR graph: {problem}")
            listed = ", ".join(map(repr, comp))
            closing = {(a, b) for a, b in fwd if b == neurons[0] and a in comp}
            if all(e in closing for e in fwd if e[1] == neurons[0]):
                raise UserError(f"NIR graph: neuron {neurons[0]!r} takes input only from its own cycle ({listed}); a "
                                "recurrent layer needs an input from outside the cycle besides its recurrent one")
            back |= closing
    indeg = {n: 0 for n in names}
    fwd = [e for e in edges if e not in back]
    for _, b in fwd:
        indeg[b] += 1
    order, ready = [], [n for n in names if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in fwd:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return order


def _inline_subgraphs(ng: nir.NIRGraph, prefix: str = "") -> tuple[dict, list[tuple[str, str]]]:
    """The graph's nodes and edges with every nested ``NIRGraph`` flattened into it: a subgraph
    ``S``'s nodes become ``S.X``, its Input and Output are spliced out (an edge into ``S`` or
    ``S.<its Input>`` goes to what that Input feeds; an edge from ``S`` or ``S.<its Output>``
    comes from what feeds that Output). UserError for an edge naming no node, or a subgraph
    without exactly one Input and one Output."""
    nodes: dict = {}
    edges: list[tuple[str, str]] = []
    entry, exit_ = {}, {}  # subgraph name → its (prefixed) Input / Output node
    passes: set[str] = set()
    for name, n in ng.nodes.items():
        full = prefix + str(name)
        if isinstance(n, nir.NIRGraph):
            sub_nodes, sub_edges = _inline_subgraphs(n, full + ".")
            ins = [k for k, v in sub_nodes.items() if isinstance(v, nir.Input)]
            outs = [k for k, v in sub_nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise UserError(f"NIR subgraph {full!r}: needs exactly one Input and one Output node, "
                                f"got {len(ins)} and {len(outs)}")
            entry[full], exit_[full] = ins[0], outs[0]
            passes.update((ins[0], outs[0]))
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
        else:
            nodes[full] = n
    for a, b in ng.edges:
        a, b = prefix + str(a), prefix + str(b)
        a, b = exit_.get(a, a), entry.get(b, b)
        for end in (a, b):
            if end not in nodes:
                raise UserError(f"NIR edge ({a!r}, {b!r}) names a node that does not exist")
        edges.append((a, b))
    for p in passes:  # splice out the subgraphs' own Input/Output nodes
        preds = [a for a, b in edges if b == p]
        succs = [b for a, b in edges if a == p]
        edges = [e for e in edges if p not in e] + [(a, b) for a in preds for b in succs]
        del nodes[p]
    return nodes, list(dict.fromkeys(edges))


def from_nir(ng: nir.NIRGraph, *, dt: float = DT) -> StudentGraph | QuantizedGraph:
    """Our description of a NIR graph: a ``StudentGraph``, or a ``QuantizedGraph`` if the
    graph was written from one (``metadata['quantized']``). Raises UserError naming any node
    whose type has no converter or whose parameters are not deployable or not finite.

    ``dt`` (seconds) turns NIR's continuous time constants into steps: a NIR file does not
    record the step its exporter assumed (SpikingJelly's and snnTorch's exporters use 1e-4)."""
    flat_nodes, edges = _inline_subgraphs(ng)
    nodes: OrderedDict = OrderedDict()
    for name in _topological(flat_nodes, edges):
        n = flat_nodes[name]
        family = (n.metadata or {}).get("family") if isinstance(getattr(n, "metadata", None), dict) else None
        family = family.decode() if isinstance(family, bytes) else family
        fn = FAMILY_READERS.get(str(family)) if family is not None else None
        if fn is None and type(n) in NO_LOIHI_MAPPING:  # (a family tag: e.g. netx's SDNN written as a Threshold)
            raise UserError(f"NIR node {name!r} ({type(n).__name__}): {NO_LOIHI_MAPPING[type(n)]}")
        if fn is None:  # a family tag (a netx neuron written as its NIR type) decides first; else the type
            fn = FROM_NIR.get(type(n))
            if fn is not None:
                _check_finite(name, n)
        if fn is None:
            raise UserError(f"NIR node {name!r} has type {type(n).__name__}, which htakl-deploy cannot "
                            f"import (supported: {sorted(c.__name__ for c in FROM_NIR)})")
        try:
            nodes[name] = fn(name, n, dt)
        except ValueError as e:
            raise UserError(f"NIR node {name!r} ({type(n).__name__}): {e}") from None
    nodes, edges = merge_neuron_readout(*merge_li_readout(*_fold_scales(*_split_gains(nodes, edges))))
    warnings = _batch_free_input(nodes, edges)
    try:
        graph = StudentGraph(nodes, edges, metadata={"warnings": warnings})
    except ValueError as e:
        raise UserError(f"NIR graph is not a valid student: {e}") from None
    meta = ng.metadata if isinstance(ng.metadata, dict) else {}
    if not int(meta.get("quantized", 0)):
        return graph
    try:
        q = _quantized_from_nir(ng, graph, float(meta["input_scale"]))
    except (ValueError, KeyError, TypeError) as e:  # a node missing or out of place in a quantised graph
        raise UserError(f"quantised NIR graph is not deployable as written: "
                        f"{e if not isinstance(e, KeyError) else f'missing metadata {e}'}") from None
    if int(meta.get("input_lag", 0)):
        q.metadata["input_lag"] = int(meta["input_lag"])
    return q


def _quantized_from_nir(ng: nir.NIRGraph, graph: StudentGraph, input_scale: float) -> QuantizedGraph:
    """Rebuild the fixed-point description; the float graph gets dequantised weights."""
    from htakl_deploy.export.quantize import connections_into  # path factors (pools, input)

    targets, conns = {}, []
    for name, node in graph.nodes.items():
        if node.ROLE not in TARGETS:
            continue
        m = ng.nodes[name].metadata
        try:
            s = int(m["scale_S"])
            du, dv, vth = ((int(m["du"]), int(m["dv"]), int(m["vth"])) if "vth" in m
                           else (int(m.get("du", 4095)), 0, 0))
            targets[name] = QuantTarget(name, s, du, dv, vth, np.asarray(m["bias_mant"]), int(m["bias_exp"]), 0.0)
        except KeyError as e:
            raise UserError(f"NIR node {name!r}: quantised graph lacks metadata {e}") from None
        neuron = node.loihi()  # the readout's too: input gain β·r, f_du = β
        own_bias = getattr(node, "OWN_BIAS", False)  # a netx neuron: its integers are its floats, bias its own
        gain = 1.0 if own_bias else s / (neuron.v_threshold * neuron.input_divisor)
        bias_gain = 1.0 / neuron.f_du  # the bias's steady state, see quantize
        bias_f = (targets[name].bias_v() / (64.0 * gain * bias_gain)).astype(np.float64)
        for path in connections_into(graph, name):
            src = path.node if not path.identity else (path.via[-1] if path.via else path.source)
            snode = graph.nodes[src]
            if not path.identity:
                exp = int(ng.nodes[src].metadata["weight_exp"])
                bits = int(ng.nodes[src].metadata.get("weight_bits", 8))
                mant = np.asarray(snode.weight).astype(np.int64)
                factor = (input_scale if graph.role(path.source) == "input" else 1.0) / path.divisor
                snode.weight = mant * 2.0**exp / gain / factor
                snode.bias = np.zeros(snode.weight.shape[0])
                conns.append(QuantConnection(src, name, False, mant, exp, 0, mant.size, 0.0, weight_bits=bits))
            else:
                mant = np.asarray(m[f"identity_weight_mant.{src}"], dtype=np.int64)
                conns.append(QuantConnection(src, name, True, mant, int(m[f"identity_weight_exp.{src}"]), 0, 1, 0.0))
        first = next((c for c in conns if c.target == name and not c.identity), None)
        if first is not None and not own_bias:  # the summed bias goes back onto one connection
            graph.nodes[first.node].bias = bias_f
    graph = StudentGraph(graph.nodes, graph.edges)
    return QuantizedGraph(graph, conns, targets, input_scale)


# -- files ---------------------------------------------------------------------------------


def write_nir(graph: StudentGraph | nir.NIRGraph, path: str | os.PathLike,
              quantized: QuantizedGraph | None = None) -> Path:
    """Write ``graph`` (ours, optionally quantised, or a NIR graph) to ``path`` atomically."""
    ng = graph if isinstance(graph, nir.NIRGraph) else to_nir(graph, quantized)
    with AtomicH5(path) as out:  # a full disk: one UserError, no crash inside libhdf5
        nir.write(out.sink, ng)
    return Path(path)


_NIR_TYPES = {"NIRGraph", *(t for t in dir(nir) if isinstance(getattr(nir, t), type)
                            and issubclass(getattr(nir, t), nir.NIRNode))}


def _array_fields(typ: str) -> set[str]:
    """The fields of NIR node type ``typ`` that hold arrays of numbers (``np.ndarray``, maybe Optional)."""
    import dataclasses

    cls = getattr(nir, typ, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return set()
    return {f.name for f in dataclasses.fields(cls)
            if f.type is np.ndarray or str(f.type) in ("typing.Optional[numpy.ndarray]", "numpy.ndarray")}


def _check_node_types(path: Path) -> None:
    """Every node of a known type, and no text where the type holds numbers (named by node and field)."""
    import h5py

    with h5py.File(path, "r") as f:
        nodes = f["node"]["nodes"] if "node" in f and "nodes" in f["node"] else {}
        for name in nodes:
            typ = nodes[name]["type"][()] if "type" in nodes[name] else b"?"
            typ = typ.decode("utf8", "replace") if isinstance(typ, bytes) else str(typ)
            if typ not in _NIR_TYPES:
                raise UserError(f"{path}: NIR node {name!r} has unknown type {typ!r}")
            for field in sorted(_array_fields(typ) & set(nodes[name])):
                ds = nodes[name][field]
                if isinstance(ds, h5py.Dataset) and ds.dtype.kind not in "biuf":
                    raise UserError(f"{path}: NIR node {name!r} ({typ}): field {field!r} holds "
                                    f"{'text' if ds.dtype.kind in 'SUO' else ds.dtype}, expected an array of numbers")


def type_check_failure(path: str | os.PathLike) -> str | None:
    """What NIR's own type check (``nir.read(path)``: ``infer_types`` then ``check_types``) says
    against the file, or None if it passes. We read without it (``read_nir``): a file that fails it
    is read all the same, with this as a warning naming the mismatch."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nir.read(Path(path), type_check=True)
    except Exception as e:  # whatever NIR's checker raises: its message names the nodes
        return f"NIR's own type check fails on this file ({type(e).__name__}: {str(e)[:200]}); read without it"
    return None


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """``nir.read`` with one-line ``UserError`` for a missing, corrupt or truncated file and
    for nodes of unknown type (naming node and type)."""
    from htakl_deploy.readers import check_h5, describe_missing

    p = Path(path)
    if not p.is_file():
        raise describe_missing(p, "", "NIR file")
    try:
        check_h5(p)  # no external links/storage, no dataset larger than the file holds: before any read
        _check_node_types(p)
        return nir.read(p, type_check=False)
    except UserError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/ValueError/TypeError on bad files
        raise UserError(f"{p}: not a readable NIR file (corrupt or truncated?): {type(e).__name__}: {e}") from None
