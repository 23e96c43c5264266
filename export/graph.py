"""A framework-free description of a deployable student: typed nodes + edges, validated.

The description is plain data (NIR's idea): every node is a small dataclass holding numpy
parameters and checked in ``__post_init__``; a ``StudentGraph`` is ``nodes`` (name → node,
in topological order) and ``edges`` (src, dst). A node with several incoming edges receives
their **sum** — this is how residual joins are written (the add of currents before a
neuron, or a spike/pooled-spike skip added to a conv's current).

Shapes exclude time and batch (``(C, H, W)`` or ``(N,)``); runners work on ``[T, B, ...]``.

Recurrence. Nodes are in topological order of the *forward* edges; an edge that goes backwards
closes a cycle and must enter the cycle's one neuron (``back_edges``): the value crossing it is the
previous step's (before step 0: the cycle's nodes evaluated on zero spikes — a recurrent affine's
bias acts from step 0, as snnTorch's recurrent cells compute it). On Lava this is a layer's
connection from its ``s_out`` back to its ``a_in``, whose one-step synapse delay is exactly that.
A cycle with no neuron on it (an algebraic loop) and a cycle through several neuron layers (Lava
would delay it by one step per layer, where the graph means one step) are refused naming the nodes.

``graph_from_classifier(model)`` builds the description from a **BN-folded** ``Classifier``
(``export.fold.fold_batchnorm``) by walking its modules in data-flow order with two tables:

- ``LEAF_CONVERTERS``: module type → function returning a node (or ``None`` for a
  pass-through such as the ``nn.Identity`` left by BN folding), built from each node type's
  ``TORCH_TYPES`` / ``from_torch`` (export/nodes/);
- ``BLOCK_WALKERS``: container type → function that walks its children in the order its
  ``forward`` uses them (``nn.Sequential``, ``Classifier``, ``ops.BasicBlock``).

A module in neither table raises ``ValueError`` naming its path and type (MaxPool2d,
Dropout, an unfolded BatchNorm, an unknown block...). The float runner
(``export.run.run_float``) reproducing the student's outputs is the check that the walk is
right.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from htakl_deploy.distill.models.classifier import Classifier
from htakl_deploy.distill.models.ops import BasicBlock
from htakl_deploy.export.nodes import FAMILIES, NODE_TYPES, Node, NeuronNode, of_role  # noqa: F401
from htakl_deploy.export.nodes.conv import Conv2dNode
from htakl_deploy.export.nodes.cuba_lif import CubaLIFNode  # noqa: F401  (re-exported)
from htakl_deploy.export.nodes.dense import DenseNode
from htakl_deploy.export.nodes.flatten import FlattenNode
from htakl_deploy.export.nodes.geometry import Shape, axis_reach  # noqa: F401  (re-exported)
from htakl_deploy.export.nodes.if_node import IFNode  # noqa: F401  (re-exported)
from htakl_deploy.export.nodes.io import InputNode, OutputNode
from htakl_deploy.export.nodes.lif import LIFNode, lif_float_step  # noqa: F401  (re-exported)
from htakl_deploy.export.nodes.pool import PoolNode

NEURONS = FAMILIES  # every spiking neuron family (export/nodes/), for callers outside the walk
WEIGHTED = of_role("synapse")  # conv/dense-like nodes: weights and a bias
VIA = of_role("route")  # nodes that only route an emitter's values to the next synapses (pool, flatten)
TARGETS = ("neuron", "output")  # roles that sum currents into a population


@dataclass(eq=False)
class StudentGraph:
    """``nodes``: name → node in topological order; ``edges``: (src, dst) pairs; incoming
    edges of a node are summed in list order. Exactly one input node (no incoming edge)
    and one output node (no outgoing edge). ``shapes`` (derived): node → output shape.
    Node types live in ``export/nodes/`` (one module each; their ``ROLE`` places them here)."""

    nodes: "OrderedDict[str, Node]"
    edges: list[tuple[str, str]]
    metadata: dict = field(default_factory=dict)
    shapes: dict[str, Shape] = field(init=False)
    back_edges: frozenset = field(init=False)  # (src, neuron) edges closing a cycle: previous step's value

    def __post_init__(self):
        self.nodes = OrderedDict(self.nodes)
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        names = list(self.nodes)
        pos = {n: i for i, n in enumerate(names)}
        for name, node in self.nodes.items():
            if getattr(node, "ROLE", None) not in ("input", "synapse", "route", *TARGETS):
                raise ValueError(f"node {name!r}: {type(node).__name__} is not a node type (export/nodes/)")
        for a, b in self.edges:
            if a not in pos or b not in pos:
                raise ValueError(f"edge ({a!r}, {b!r}) names an unknown node")
        if len(set(self.edges)) != len(self.edges):
            raise ValueError("duplicate edge")
        self.back_edges = frozenset(e for e in self.edges if pos[e[0]] >= pos[e[1]])
        for a, b in sorted(self.back_edges, key=lambda e: (pos[e[1]], pos[e[0]])):
            check_cycle(self, a, b)
        inputs = [n for n, v in self.nodes.items() if v.ROLE == "input"]
        outputs = [n for n, v in self.nodes.items() if v.ROLE == "output"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"need exactly one input and one output node, got {inputs} and {outputs}")
        self.shapes = {}
        for name, node in self.nodes.items():
            srcs = self.predecessors(name, back=False)
            if node.ROLE == "input":
                if srcs:
                    raise ValueError(f"input node {name!r} has incoming edges {srcs}")
                self.shapes[name] = node.out_shape(None)
                continue
            if not srcs:
                raise ValueError(f"node {name!r} ({type(node).__name__}) has no incoming edge")
            in_shapes = {self.shapes[s] for s in srcs}
            if len(in_shapes) != 1:
                raise ValueError(f"node {name!r} sums inputs of different shapes {sorted(in_shapes)}")
            try:
                self.shapes[name] = node.out_shape(in_shapes.pop())
            except ValueError as e:
                raise ValueError(f"node {name!r}: {e}") from None
            if node.ROLE == "output" and self.successors(name):
                raise ValueError(f"output node {name!r} has outgoing edges")
        for a, b in self.back_edges:  # a recurrent input is summed with the forward ones: same shape
            want = {self.shapes[s] for s in self.predecessors(b, back=False)}
            if {self.shapes[a]} != want:
                raise ValueError(f"node {b!r} sums inputs of different shapes {sorted(want | {self.shapes[a]})} "
                                 f"(its recurrent input from {a!r})")

    @property
    def input_name(self) -> str:
        return next(n for n, v in self.nodes.items() if v.ROLE == "input")

    @property
    def output_name(self) -> str:
        return next(n for n, v in self.nodes.items() if v.ROLE == "output")

    def role(self, name: str) -> str:
        return self.nodes[name].ROLE

    def predecessors(self, name: str, *, back: bool = True) -> list[str]:
        """The nodes whose values ``name`` sums, in edge order (``back=False``: the forward ones only)."""
        return [a for a, b in self.edges if b == name and (back or (a, b) not in self.back_edges)]

    def back_inputs(self, name: str) -> list[str]:
        """The sources of ``name``'s backward (recurrent) edges, in edge order."""
        return [a for a, b in self.edges if b == name and (a, b) in self.back_edges]

    @property
    def recurrent(self) -> list[str]:
        """The neurons closing a cycle (targets of ``back_edges``), in node order."""
        targets = {b for _, b in self.back_edges}
        return [n for n in self.nodes if n in targets]

    def cycle_body(self, neuron: str) -> list[str]:
        """The nodes on the cycles through ``neuron`` other than itself, in node order."""
        body = set().union(*(on_cycle(self, a, b) for a, b in self.back_edges if b == neuron)) - {neuron}
        return [n for n in self.nodes if n in body]

    def successors(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]


# -- cycles ------------------------------------------------------------------------------------


def _reach(start: str, edges: list[tuple[str, str]]) -> set[str]:
    """The nodes reachable from ``start`` along ``edges`` (``start`` included)."""
    seen, frontier = {start}, [start]
    while frontier:
        n = frontier.pop()
        for x, y in edges:
            if x == n and y not in seen:
                seen.add(y)
                frontier.append(y)
    return seen


def on_cycle(graph: "StudentGraph", a: str, b: str) -> set[str]:
    """The nodes on forward paths from ``b`` to ``a`` (both included): the cycle the edge (a, b)
    closes; empty if there is none (the edge merely goes backwards in the node order)."""
    fwd = [e for e in graph.edges if e not in graph.back_edges]
    down = _reach(b, fwd)
    return down & _reach(a, [(y, x) for x, y in fwd]) if a in down else set()


def cycle_problem(names: list[str], neurons: list[str]) -> str | None:
    """Why the cycle through ``names`` (its ``neurons`` among them) cannot run, or None: it needs
    exactly one neuron layer (module docstring, "Recurrence")."""
    listed = ", ".join(map(repr, names))
    if not neurons:
        return f"nodes {listed} form a cycle with no neuron on it (an algebraic loop: each needs the other's value " \
               "of the same step)"
    if len(neurons) > 1:
        return (f"nodes {listed} form a cycle through {len(neurons)} neuron layers ({', '.join(map(repr, neurons))}): "
                "Lava delays a cycle by one step per layer where the graph means one step; only a cycle through one "
                "neuron layer (a layer's recurrent connection) deploys")
    return None


def check_cycle(graph: "StudentGraph", a: str, b: str) -> None:
    """ValueError naming the nodes unless the backward edge (a, b) closes a cycle through exactly one
    neuron, ``b`` (see the module docstring)."""
    cycle = on_cycle(graph, a, b)
    if not cycle:
        raise ValueError(f"edge ({a!r}, {b!r}) goes backwards: nodes must be in topological order")
    names = [n for n in graph.nodes if n in cycle]
    neurons = [n for n in names if graph.nodes[n].ROLE == "neuron"]
    problem = cycle_problem(names, neurons)
    if problem:
        raise ValueError(problem)
    if neurons != [b]:
        raise ValueError(f"edge ({a!r}, {b!r}) closes the cycle {', '.join(map(repr, names))} but does not enter its neuron "
                         f"{neurons[0]!r}: order the nodes so that the neuron's recurrent input is the backward edge")


def strongly_connected(names: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (more than one node, or a self-loop), each in
    ``names`` order (Tarjan's algorithm, iterative)."""
    succ = {n: [b for a, b in edges if a == n] for n in names}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            n, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                elif nxt in on:
                    low[n] = min(low[n], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[n])
            if low[n] == index[n]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == n:
                        break
                if len(comp) > 1 or (n, n) in edges:
                    order = {k: i for i, k in enumerate(names)}
                    out.append(sorted(comp, key=order.__getitem__))
    return out


# -- connections: emitter → pools/flatten → synapses → neuron ---------------------------------

@dataclass(frozen=True)
class Connection:
    """One set of synapses: ``source`` (an emitter: the input, a neuron or — countable, not
    deployable — a conv/dense node) → ``via`` (the pool/flatten nodes in between, data-flow
    order) → ``node`` (the conv/dense node whose weights they are; for an *identity skip*, a
    residual join of spikes or pooled spikes, the neuron/output itself) → ``target`` (the
    neuron/output that sums ``node``'s current; None if ``node`` does not feed exactly one).
    ``divisor``: the product of the average pools' kernel areas on the way (pools run as sum
    pools on integer spike counts; the divisor is folded into the weights)."""

    source: str
    via: tuple[str, ...]
    node: str
    target: str | None
    kind: str  # "conv" | "dense" | "identity"
    divisor: float = 1.0

    @property
    def identity(self) -> bool:
        return self.kind == "identity"

    @property
    def name(self) -> str:
        """Row name: the conv/dense node, or ``src->[via->]dst`` for an identity skip."""
        return self.node if not self.identity else "->".join((self.source, *self.via, self.node))


def paths_from(graph: "StudentGraph", name: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every (emitter, via) path ending at ``name``: walks back through pool/flatten nodes (a
    pool fed by a sum gives one path per summand); ``name`` itself if it is not one."""
    if graph.nodes[name].ROLE != "route":
        return [(name, ())]
    return [(src, via + (name,)) for p in graph.predecessors(name) for src, via in paths_from(graph, p)]


def paths_into(graph: "StudentGraph", name: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every (emitter, via) path into ``name``, in predecessor order."""
    return [path for p in graph.predecessors(name) for path in paths_from(graph, p)]


def make_connection(graph: "StudentGraph", source: str, via: tuple[str, ...], node: str,
                    target: str | None) -> Connection:
    kind = "identity" if node == target else graph.nodes[node].KIND
    divisor = 1.0
    for name in via:
        divisor *= graph.nodes[name].divisor
    return Connection(source, via, node, target, kind, divisor)


def connections(graph: "StudentGraph") -> list[Connection]:
    """Every connection of ``graph``, in node order — the one walk the quantiser, the deployment
    plan, the netx writer and the op counter share. Conv/dense nodes: one per path into them.
    Neurons and the output: an identity skip per path from an input/neuron emitter (a path
    from a conv/dense node is that node's own current, not a synapse set). Never raises:
    callers that deploy check what they support (``quantize.check_deployable``)."""
    out = []
    for name, node in graph.nodes.items():
        if node.ROLE == "synapse":
            succ = graph.successors(name)
            target = succ[0] if len(succ) == 1 and graph.role(succ[0]) in TARGETS else None
            out.extend(make_connection(graph, s, v, name, target) for s, v in paths_into(graph, name))
        elif node.ROLE in TARGETS:
            out.extend(make_connection(graph, s, v, name, name) for s, v in paths_into(graph, name)
                       if graph.role(s) != "synapse")
    return out


# -- building from a Classifier ------------------------------------------------------------


# Module type → converter: each node type's own ``from_torch`` for its ``TORCH_TYPES`` (export/nodes/),
# looked up along the MRO, so SpikingJelly's multi-step layers (subclasses of the torch ones) are
# covered. ``None`` result = pass-through (the ``nn.Identity`` BN folding leaves).
LEAF_CONVERTERS: dict[type, Callable[[str, nn.Module], Node | None]] = {
    **{t: cls.from_torch for cls in NODE_TYPES for t in getattr(cls, "TORCH_TYPES", ())},
    nn.Identity: lambda path, m: None,
}


class _Builder:
    def __init__(self) -> None:
        self.nodes: OrderedDict[str, Node] = OrderedDict()
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node: Node, sources: list[str]) -> list[str]:
        self.nodes[name] = node
        self.edges.extend((s, name) for s in sources)
        return [name]

    def walk(self, path: str, m: nn.Module, sources: list[str]) -> list[str]:
        """Add ``m`` fed by the sum of ``sources``; return the nodes whose sum is its output."""
        for cls in type(m).__mro__:
            if cls in BLOCK_WALKERS:
                return BLOCK_WALKERS[cls](self, path, m, sources)
        for cls in type(m).__mro__:
            if cls in LEAF_CONVERTERS:
                node = LEAF_CONVERTERS[cls](path, m)
                return sources if node is None else self.add(path, node, sources)
        raise ValueError(
            f"module {path!r} of type {type(m).__name__} cannot be exported: no converter "
            f"(deployable: {sorted(c.__name__ for c in LEAF_CONVERTERS)}; fold BatchNorm first)")


def _walk_sequential(b: _Builder, path: str, m: nn.Module, sources: list[str]) -> list[str]:
    for name, child in m.named_children():
        sources = b.walk(f"{path}.{name}" if path else name, child, sources)
    return sources


def _walk_basic_block(b: _Builder, path: str, m: BasicBlock, sources: list[str]) -> list[str]:
    # act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x)): the add is a join of two edge sets.
    h = sources
    for name in ("conv1", "bn1", "act1", "conv2", "bn2"):
        h = b.walk(f"{path}.{name}", getattr(m, name), h)
    skip = b.walk(f"{path}.shortcut", m.shortcut, sources)
    return b.walk(f"{path}.act2", m.act2, h + skip)


BLOCK_WALKERS: dict[type, Callable[[_Builder, str, nn.Module, list[str]], list[str]]] = {
    Classifier: _walk_sequential,
    nn.Sequential: _walk_sequential,
    BasicBlock: _walk_basic_block,
}


def graph_from_classifier(model: Classifier) -> StudentGraph:
    """The ``StudentGraph`` of a BN-folded ``Classifier`` (parameters copied, dtype kept).

    Raises ValueError naming the first module without a converter (e.g. an unfolded
    BatchNorm, MaxPool2d, Dropout) or a non-deployable setting (soft reset, ...).
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"graph_from_classifier expects a Classifier, got {type(model).__name__}")
    b = _Builder()
    b.add("input", InputNode(model.in_shape), [])
    out = _walk_sequential(b, "", model, ["input"])
    b.add("output", OutputNode(), out)
    return StudentGraph(b.nodes, b.edges, metadata={"spec": dict(model.spec)})


# -- float reference runner ----------------------------------------------------------------

RUN_BYTES = 256 << 20  # a whole-graph run (float or integer, every node's values kept) this big at a time


def samples_per_batch(graph: StudentGraph, timesteps: int, cap: int, budget: int = RUN_BYTES) -> int:
    """How many samples a run of ``graph`` over ``timesteps`` takes at once so that every node's values
    (float64 / int64: 8 bytes each) fit ``budget``: at most ``cap``, at least 1. Long inputs (300-step
    event streams) then run a few samples at a time instead of holding ``[T, B, ...]`` of every layer."""
    per_sample = 8 * int(timesteps) * sum(int(np.prod(s)) for s in graph.shapes.values())
    return int(max(1, min(cap, budget // max(per_sample, 1))))


def run_float(graph: StudentGraph, x_tbchw, *, dtype=torch.float64, record: bool = False):
    """Run the graph in floating point on ``x`` ``[T, B, *input_shape]`` → output ``[T, B, K]``.

    With ``record=True`` returns ``(output, {node: tensor [T, B, ...]})``. Parameters are cast
    to ``dtype``; pass ``torch.float32`` to compare with a float32 student. A neuron closing a
    cycle runs step by step (``_run_recurrent``); every other node over all steps at once.
    """
    x = torch.as_tensor(x_tbchw, dtype=dtype)
    shape = graph.shapes[graph.input_name]
    if x.dim() != 2 + len(shape) or tuple(x.shape[2:]) != shape:
        raise ValueError(f"expected input [T, B, {', '.join(map(str, shape))}], got {tuple(x.shape)}")
    vals: dict[str, torch.Tensor] = {}
    recurrent = set(graph.recurrent)
    for name, node in graph.nodes.items():
        srcs = graph.predecessors(name, back=False)
        h = x if not srcs else vals[srcs[0]]
        for s in srcs[1:]:
            h = h + vals[s]
        # each node type's float semantics (export/nodes/)
        vals[name] = _run_recurrent(graph, name, h, vals) if name in recurrent else node.run_float(h)
    out = vals[graph.output_name]
    return (out, vals) if record else out


def _run_recurrent(graph: StudentGraph, name: str, h: torch.Tensor, vals: dict) -> torch.Tensor:
    """Spikes of neuron ``name`` whose forward input is ``h`` ``[T, B, ...]`` and which also sums its
    cycle's back edges: at step ``t`` the cycle's nodes evaluated on its spikes of step ``t − 1``
    (zero spikes before step 0), one step at a time (``float_step``, export/nodes/)."""
    node, body, back = graph.nodes[name], graph.cycle_body(name), graph.back_inputs(name)
    out = torch.empty_like(h)
    prev, state = torch.zeros_like(h[:1]), None
    for t in range(h.shape[0]):
        step = {name: prev}
        for b in body:  # stateless synapses/routes: one step each
            srcs = graph.predecessors(b, back=False)
            got = [step[s] if s in step else vals[s][t:t + 1] for s in srcs]
            step[b] = graph.nodes[b].run_float(sum(got[1:], got[0]))
        x_t = h[t] + sum(step[a][0] for a in back)
        out[t], state = node.float_step(x_t, state)
        prev = out[t:t + 1]
    return out
