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
    nir.Scale after a conv/affine → folded into its weights; nested nir.NIRGraph → flattened
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

from htakl_deploy.atomic import atomic_path
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import TARGETS, StudentGraph
from htakl_deploy.export.nodes import NIR_DT, NODE_TYPES
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
    nir.Scale: lambda name, n, dt: _ScaleNode(np.asarray(n.scale, dtype=np.float64)),
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
    """A NIR ``Scale`` while reading: folded into the conv/affine before it."""

    scale: np.ndarray


def _fold_scales(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """A Scale right after a conv/affine (its only successor) multiplies that node's weights and
    bias per output channel (the scale must be uniform over a conv's H and W); anywhere else it is
    refused naming it."""
    for name, node in list(nodes.items()):
        if not isinstance(node, _ScaleNode):
            continue
        preds = [a for a, b in edges if b == name]
        src = nodes[preds[0]] if len(preds) == 1 else None
        what = f"NIR node {name!r} (Scale)"
        if getattr(src, "ROLE", None) != "synapse" or [b for a, b in edges if a == preds[0]] != [name]:
            raise UserError(f"{what}: supported only as the one successor of a conv/affine (folded into its weights)")
        cout = src.weight.shape[0]
        s = node.scale.reshape(node.scale.shape[0], -1) if node.scale.ndim else np.full((cout, 1), float(node.scale))
        if s.shape[0] != cout or not np.all(s == s[:, :1]):
            raise UserError(f"{what}: the scale must be one value per output channel of {preds[0]!r} ({cout})")
        s = s[:, 0]
        src.weight = src.weight * s.reshape(-1, *([1] * (src.weight.ndim - 1)))
        src.bias = src.bias * s
        edges = [(preds[0], b) if a == name else (a, b) for a, b in edges if b != name]
        del nodes[name]
    return nodes, edges


def _check_finite(name: str, n: nir.NIRNode) -> None:
    """UserError naming the node and field if any numeric parameter is NaN or infinite."""
    for f in dataclasses.fields(n):
        value = getattr(n, f.name)
        if isinstance(value, (np.ndarray, float, np.floating)):
            arr = np.asarray(value)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                raise UserError(f"NIR node {name!r} ({type(n).__name__}): {f.name} has NaN or infinite values")


def _topological(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    indeg = {n: 0 for n in names}
    for _, b in edges:
        indeg[b] += 1
    order, ready = [], [n for n in names if indeg[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    if len(order) != len(names):
        raise UserError("NIR graph has a cycle (recurrent graphs are not supported)")
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
    for name in _topological(list(flat_nodes), edges):
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
    nodes, edges = merge_neuron_readout(*merge_li_readout(*_fold_scales(nodes, edges)))
    try:
        graph = StudentGraph(nodes, edges)
    except ValueError as e:
        raise UserError(f"NIR graph is not a valid student: {e}") from None
    meta = ng.metadata if isinstance(ng.metadata, dict) else {}
    if not int(meta.get("quantized", 0)):
        return graph
    q = _quantized_from_nir(ng, graph, float(meta["input_scale"]))
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
    with atomic_path(path) as tmp:
        nir.write(tmp, ng)
    return Path(path)


_NIR_TYPES = {"NIRGraph", *(t for t in dir(nir) if isinstance(getattr(nir, t), type)
                            and issubclass(getattr(nir, t), nir.NIRNode))}


def _check_node_types(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        nodes = f["node"]["nodes"] if "node" in f and "nodes" in f["node"] else {}
        for name in nodes:
            typ = nodes[name]["type"][()] if "type" in nodes[name] else b"?"
            typ = typ.decode("utf8", "replace") if isinstance(typ, bytes) else str(typ)
            if typ not in _NIR_TYPES:
                raise UserError(f"{path}: NIR node {name!r} has unknown type {typ!r}")


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """``nir.read`` with one-line ``UserError`` for a missing, corrupt or truncated file and
    for nodes of unknown type (naming node and type)."""
    from htakl_deploy.readers import check_h5_self_contained, describe_missing

    p = Path(path)
    if not p.is_file():
        raise describe_missing(p, "", "NIR file")
    try:
        check_h5_self_contained(p)  # no external links/storage: a NIR file cannot make us read others
        _check_node_types(p)
        return nir.read(p, type_check=False)
    except UserError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/ValueError/TypeError on bad files
        raise UserError(f"{p}: not a readable NIR file (corrupt or truncated?): {type(e).__name__}: {e}") from None
