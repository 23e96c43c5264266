"""NIR (1.0.8) exchange of a ``StudentGraph`` (float) or ``QuantizedGraph`` (Loihi fixed point).

Node mapping (one function per type, in tables both ways; unknown types raise naming the node):

    InputNode  ↔ nir.Input (shape (C, H, W))      Conv2dNode ↔ nir.Conv2d
    DenseNode  ↔ nir.Affine (quantised: nir.Linear, bias lives in the LIF)
    neurons    ↔ their family's type (export/nodes/: LIF ↔ nir.LIF, IF ↔ nir.IF, CubaLIF ↔ nir.CubaLIF)
    FlattenNode ↔ nir.Flatten(start_dim=−len(input shape), end_dim=−1)
    PoolNode   ↔ nir.AvgPool2d / nir.SumPool2d (kernel, stride, padding as length-2 arrays)
    OutputNode ↔ nir.Output (a leaky readout: nir.LI → nir.Output)
    nir.Scale after a conv/affine → folded into its weights; nested nir.NIRGraph → flattened
    residual join = several edges into one node (NIR sums them)

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
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, OutputNode, PoolNode, StudentGraph,
)
from htakl_deploy.export.nodes import FAMILIES, NeuronNode
from htakl_deploy.export.quantize import QuantConnection, QuantizedGraph, QuantTarget

DT = 1e-4
FORMAT = "htakl-deploy-student"
FORMAT_VERSION = 1


# -- ours → NIR ----------------------------------------------------------------------------


def _conv_to_nir(name, node: Conv2dNode, g: StudentGraph, q: QuantizedGraph | None):
    in_shape = g.shapes[g.predecessors(name)[0]]
    weight, bias, meta = node.weight, node.bias, {}
    if q is not None:
        c = next(c for c in q.connections if c.node == name)
        weight, bias = c.weight_mant.astype(np.int32), np.zeros(node.bias.shape, np.int32)
        meta = {"weight_exp": np.int64(c.weight_exp)}
    return nir.Conv2d(input_shape=np.array(in_shape[1:]), weight=weight, stride=np.array(node.stride),
                      padding=np.array(node.padding), dilation=np.array(node.dilation),
                      groups=node.groups, bias=bias, metadata=meta)


def _dense_to_nir(name, node: DenseNode, g, q):
    if q is None:
        return nir.Affine(weight=node.weight, bias=node.bias)
    c = next(c for c in q.connections if c.node == name)
    return nir.Linear(weight=c.weight_mant.astype(np.int32), metadata={"weight_exp": np.int64(c.weight_exp)})


def _identity_meta(name, g, q) -> dict:
    meta = {}
    for c in q.connections:
        if c.target == name and c.identity:
            meta[f"identity_weight_mant.{c.node}"] = np.int64(c.weight_mant)
            meta[f"identity_weight_exp.{c.node}"] = np.int64(c.weight_exp)
    return meta


def _neuron_to_nir(name, node: NeuronNode, g, q):
    """A neuron of any family (``export/nodes/``): its own NIR node; quantised, the integer
    threshold and the Loihi fields (plus the exact float parameters) in metadata."""
    shape = g.shapes[name]
    n = node.to_nir(shape, DT)
    if q is None:
        return n
    t = q.targets[name]
    meta = {"du": np.int64(t.du), "dv": np.int64(t.dv), "vth": np.int64(t.vth), "scale_S": np.int64(t.scale),
            "bias_mant": t.bias_mant, "bias_exp": np.int64(t.bias_exp), **node.float_metadata(),
            **_identity_meta(name, g, q)}
    return dataclasses.replace(n, v_threshold=np.full(shape, t.vth, dtype=np.int64), metadata=meta)


def _flatten_to_nir(name, node, g, q):
    in_shape = g.shapes[g.predecessors(name)[0]]
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=-len(in_shape), end_dim=-1)


def _pool_to_nir(name, node: PoolNode, g, q):
    cls = nir.AvgPool2d if node.kind == "avg" else nir.SumPool2d
    return cls(kernel_size=np.array(node.kernel_size), stride=np.array(node.stride), padding=np.array(node.padding))


def _input_to_nir(name, node: InputNode, g, q):
    return nir.Input(input_type={"input": np.array(node.shape)})


def _output_to_nir(name, node, g, q):
    meta = {}
    if q is not None:
        t = q.targets[name]
        meta = {"scale_S": np.int64(t.scale), "bias_mant": t.bias_mant, "bias_exp": np.int64(t.bias_exp),
                "du": np.int64(t.du), **_identity_meta(name, g, q)}
    return nir.Output(output_type={"output": np.array(g.shapes[name])}, metadata=meta)


TO_NIR: dict[type, Callable] = {
    InputNode: _input_to_nir, Conv2dNode: _conv_to_nir, DenseNode: _dense_to_nir,
    FlattenNode: _flatten_to_nir, PoolNode: _pool_to_nir, OutputNode: _output_to_nir,
    **{family: _neuron_to_nir for family in FAMILIES},
}


def to_nir(graph: StudentGraph, quantized: QuantizedGraph | None = None) -> nir.NIRGraph:
    """The NIR graph of ``graph`` (float), or of its fixed-point version if ``quantized``."""
    if quantized is not None and quantized.graph is not graph:
        raise ValueError("quantized was computed from another graph")
    nodes = {}
    for name, node in graph.nodes.items():
        fn = TO_NIR.get(type(node))
        if fn is None:
            raise ValueError(f"node {name!r}: no NIR converter for {type(node).__name__}")
        nodes[name] = fn(name, node, graph, quantized)
    edges = list(graph.edges)
    out = graph.output_name
    if graph.nodes[out].leaky:  # the leaky readout is NIR's LI in front of the Output
        node, li = graph.nodes[out], f"{out}_li"
        shape = graph.shapes[out]
        nodes = {(li if k == out else k): v for k, v in nodes.items()}
        nodes[li] = nir.LI(tau=np.full(shape, DT / node.beta), r=np.full(shape, node.r), v_leak=np.zeros(shape))
        nodes[out] = _output_to_nir(out, node, graph, quantized)
        edges = [(a, li if b == out else b) for a, b in edges] + [(li, out)]
    meta = {"format": FORMAT, "format_version": np.int64(FORMAT_VERSION),
            "quantized": np.int64(quantized is not None)}
    if quantized is not None:
        meta["input_scale"] = float(quantized.input_scale)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


# -- NIR → ours ----------------------------------------------------------------------------


def _neuron_from_nir(family: type) -> Callable:
    def convert(name, n, dt: float):
        meta = n.metadata or {}
        if "v_threshold_float" in meta:  # quantised: the exact float parameters are kept in metadata
            return family.from_metadata(meta)
        return family.from_nir(name, n, dt)
    return convert


def _flatten_from_nir(name, n: nir.Flatten, dt: float) -> FlattenNode:
    in_type = (n.input_type or {}).get("input") if isinstance(n.input_type, dict) else None
    all_dims = (0, 1) if in_type is None else (0, 1, -len(np.asarray(in_type).reshape(-1)))
    if int(n.start_dim) not in all_dims or int(n.end_dim) != -1:
        raise UserError(f"NIR node {name!r}: only Flatten of all non-batch dims is supported "
                        f"(start_dim {' or '.join(map(str, all_dims))}, end_dim -1), got {n.start_dim}, {n.end_dim}")
    return FlattenNode()


def _conv_from_nir(name, n: nir.Conv2d, dt: float) -> Conv2dNode:
    if isinstance(n.padding, str):
        raise UserError(f"NIR node {name!r}: string padding {n.padding!r} is not supported")
    return Conv2dNode(np.asarray(n.weight), np.asarray(n.bias), n.stride, n.padding, n.dilation, int(n.groups))


FROM_NIR: dict[type, Callable] = {
    nir.Input: lambda name, n, dt: InputNode(np.asarray(n.input_type["input"])),
    nir.Output: lambda name, n, dt: OutputNode(),
    nir.LI: lambda name, n, dt: _li_from_nir(name, n, dt),
    nir.Scale: lambda name, n, dt: _ScaleNode(np.asarray(n.scale, dtype=np.float64)),
    nir.Conv2d: _conv_from_nir,
    nir.Affine: lambda name, n, dt: DenseNode(np.asarray(n.weight), np.asarray(n.bias)),
    nir.Linear: lambda name, n, dt: DenseNode(np.asarray(n.weight), np.zeros(np.asarray(n.weight).shape[0])),
    **{family.NIR_TYPE: _neuron_from_nir(family) for family in FAMILIES},
    nir.Flatten: _flatten_from_nir,
    nir.AvgPool2d: lambda name, n, dt: PoolNode("avg", n.kernel_size, n.stride, n.padding),
    nir.SumPool2d: lambda name, n, dt: PoolNode("sum", n.kernel_size, n.stride, n.padding),
}


@dataclass(eq=False)
class _LIReadout:
    """A NIR ``LI`` while reading: it must feed the Output alone (then it becomes the Output's leak)."""

    beta: float
    r: float


def _li_from_nir(name, n: nir.LI, dt: float) -> _LIReadout:
    from htakl_deploy.export.nodes import uniform

    if uniform(n.v_leak, "v_leak", name) != 0:
        raise UserError(f"NIR node {name!r}: only v_leak = 0 is supported for an LI readout")
    beta = dt / uniform(n.tau, "tau", name)
    if not 0.0 < beta <= 1.0:
        raise UserError(f"NIR node {name!r}: dt/tau = {beta} (dt = {dt} s) must be in (0, 1] (is --dt right?)")
    return _LIReadout(round(beta, 12), uniform(n.r, "r", name))


def _merge_li_readout(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """An LI whose only successor is the Output, and the Output's only input, becomes the Output's
    leak (``OutputNode(beta, r)``); an LI anywhere else is refused naming it."""
    for name, node in list(nodes.items()):
        if not isinstance(node, _LIReadout):
            continue
        succ = [b for a, b in edges if a == name]
        out = succ[0] if len(succ) == 1 else None
        if out is None or not isinstance(nodes[out], OutputNode) or [a for a, b in edges if b == out] != [name]:
            raise UserError(f"NIR node {name!r} (LI): a leaky integrator is supported only as the readout, "
                            "the Output's one input")
        nodes[out] = OutputNode(node.beta, node.r)
        edges = [(a, out) if b == name else (a, b) for a, b in edges if a != name]
        del nodes[name]
    return nodes, edges


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
        if not isinstance(src, (Conv2dNode, DenseNode)) or [b for a, b in edges if a == preds[0]] != [name]:
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
    nodes, edges = _merge_li_readout(*_fold_scales(nodes, edges))
    try:
        graph = StudentGraph(nodes, edges)
    except ValueError as e:
        raise UserError(f"NIR graph is not a valid student: {e}") from None
    meta = ng.metadata if isinstance(ng.metadata, dict) else {}
    if not int(meta.get("quantized", 0)):
        return graph
    return _quantized_from_nir(ng, graph, float(meta["input_scale"]))


def _quantized_from_nir(ng: nir.NIRGraph, graph: StudentGraph, input_scale: float) -> QuantizedGraph:
    """Rebuild the fixed-point description; the float graph gets dequantised weights."""
    from htakl_deploy.export.quantize import connections_into  # path factors (pools, input)

    targets, conns = {}, []
    for name, node in graph.nodes.items():
        if not isinstance(node, (NeuronNode, OutputNode)):
            continue
        m = ng.nodes[name].metadata
        try:
            s = int(m["scale_S"])
            du, dv, vth = ((int(m["du"]), int(m["dv"]), int(m["vth"])) if isinstance(node, NeuronNode)
                           else (int(m.get("du", 4095)), 0, 0))
            targets[name] = QuantTarget(name, s, du, dv, vth, np.asarray(m["bias_mant"]), int(m["bias_exp"]), 0.0)
        except KeyError as e:
            raise UserError(f"NIR node {name!r}: quantised graph lacks metadata {e}") from None
        neuron = node.loihi() if isinstance(node, NeuronNode) else None
        gain = s / (neuron.v_threshold * neuron.input_divisor) if neuron else s * node.beta * node.r
        bias_gain = 1.0 / (neuron.f_du if neuron else node.beta)  # the bias's steady state, see quantize
        bias_f = (targets[name].bias_v() / (64.0 * gain * bias_gain)).astype(np.float64)
        for path in connections_into(graph, name):
            src = path.node if not path.identity else (path.via[-1] if path.via else path.source)
            snode = graph.nodes[src]
            if not path.identity:
                exp = int(ng.nodes[src].metadata["weight_exp"])
                mant = np.asarray(snode.weight).astype(np.int64)
                factor = (input_scale if isinstance(graph.nodes[path.source], InputNode) else 1.0) / path.divisor
                snode.weight = mant * 2.0**exp / gain / factor
                snode.bias = np.zeros(snode.weight.shape[0])
                conns.append(QuantConnection(src, name, False, mant, exp, 0, mant.size, 0.0))
            else:
                mant = np.asarray(m[f"identity_weight_mant.{src}"], dtype=np.int64)
                conns.append(QuantConnection(src, name, True, mant, int(m[f"identity_weight_exp.{src}"]), 0, 1, 0.0))
        first = next((c for c in conns if c.target == name and not c.identity), None)
        if first is not None:  # the summed bias goes back onto one connection
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
