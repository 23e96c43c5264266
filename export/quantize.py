"""Loihi-style fixed point (lava-nc 0.10 ``fixed_pt``) for a ``StudentGraph``, and an integer runner.

Mapping (docs/DESIGN.md "Loihi-style fixed point"), SpikingJelly LIF(τ, θ, hard reset to 0):

- Every LIF layer gets an integer scale ``S``: its membrane ``v`` (Lava units) is
  ``H · (S/θ) · 64``; threshold ``vth = S`` so Lava's ``v > vth << 6`` is SJ's ``H ≥ θ``
  (up to the ``>``/``≥`` tie, which needs exact equality of integers).
- ``du = 4095`` (no current memory: ``u = a_in << 6``), ``dv = round(4096/τ)``.
- Every *connection* into the LIF (a conv/dense node, or an identity skip of spikes or
  pooled spikes) gets an 8-bit mantissa and its own ``weight_exp``::

      gain = S/(τθ)   (decay_input=True; S/θ otherwise)
      W_int = 2·round(W_eff·gain / 2^weight_exp / 2)     even, clipped to [−254, 254]

  (even because Lava drops the lowest bit of mixed-sign weights; ±254 because all-≤0
  weights clip to −255). ``weight_exp = ceil(log2(max|W_eff|·gain/254))`` in [−8, 7]: the
  connection with the largest weights uses the full mantissa at exponent 0 when
  ``S = floor(254·τθ / max|W_eff|)``; smaller connections get negative exponents (more
  mantissa bits, an arithmetic right shift after the sum, as Lava does). All connections
  into one LIF — the residual skip included — share its ``S``. ``S`` is clamped to
  ``[S_MIN, S_MAX]``: ``S_MAX = 4096`` keeps 32 thresholds of headroom below the 24-bit
  ``v``/``u`` limits; when clamped, exponents > 0 extend the range instead.
- Average pooling is folded into the next connection: pools run as *sum* pools on integer
  spike counts and the connection's ``W_eff = W / (kh·kw)`` (identity skip: ``1/(kh·kw)``).
- Bias: all connections' float biases summed per channel, ``bias_mant << bias_exp =
  round(b · gain · 64)``, ``bias_mant`` 13-bit signed, smallest ``bias_exp ≥ 0``.
- First layer (direct encoding): pixels in [0, 1] become 8-bit integers ``round(255·x)``
  (``INPUT_SCALE = 1/255``, so the first connection's ``W_eff = W/255``) and the first conv
  is computed as integer MACs *off-chip*; its integer currents are fed to the first LIF
  layer (a ring buffer of pre-computed currents on Lava). The energy tools count it as MACs.
- Output (logits, no neuron): a non-leaky accumulator read each step, same mantissa rules
  with ``gain = S``; logits ≈ ``out_v / (64·S)``.

``run_int`` is the **timestep-aligned** integer model: each layer sees its inputs of the same
time step (Lava's one-step Dense/Conv delay per hop is *not* modelled; ``hw.emulator`` is the
Lava-aligned model with those delays). Its LIF update is ``hw.lif_ref``'s, bit for bit.

``S`` comes from the weights alone (no calibration on recorded currents): on the students tested
it loses nothing measurable — digits 98.06 % float → 98.06 % integer, Fashion-MNIST 90.13 → 90.34 %,
0 clipped weights (measured; README at git 8498ed4) — so data-driven calibration has not been added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from htakl_deploy.export.graph import TARGETS, Connection, StudentGraph, connections, make_connection, paths_from
from htakl_deploy.export.nodes.intops import exact as _exact, shift as _shift

INPUT_SCALE = 1.0 / 255.0  # pixel = x_int · INPUT_SCALE, x_int in 0..255
MAX_COUNT = 255  # an input value above 1 is an event count (whole number, at most this many per bin)
MANT_MAX = 254
EXP_RANGE = (-8, 7)
S_MIN, S_MAX = 16, 4096
ZEROED_WARN = 0.25  # QuantizedGraph.warnings: this fraction of a connection's weights rounding to 0
BIAS_MANT_MAX = 4095  # 13-bit signed


@dataclass(eq=False)
class QuantConnection:
    """One connection into a target: a conv/dense node (``node``) or an identity skip
    (``node`` = the source chain's last node, ``weight_mant`` a 0-d array)."""

    node: str
    target: str
    identity: bool
    weight_mant: np.ndarray  # int64, even, in [-254, 254]
    weight_exp: int
    n_clipped: int
    n_weights: int
    max_abs_err: float  # max |W_int·2^exp/gain·pool·(1/in_scale) − W| in the float weights' units
    n_zeroed: int = 0  # non-zero float weights whose mantissa rounds to 0 (lost to the 8-bit range)
    path: Connection | None = None  # the graph's connection (source, pools/flatten, divisor); filled in
    weight_bits: int = 8  # Lava's num_weight_bits for these mantissas (lava-dl's netx passes up to 9)

    def __post_init__(self):
        from htakl_deploy.hw.lif_ref import effective_weights

        self.weight_mant = np.asarray(self.weight_mant, dtype=np.int64)
        self.weight_bits = int(self.weight_bits)
        m = self.weight_mant.reshape(1, -1)
        if np.abs(m).max(initial=0) > 256 or not np.array_equal(effective_weights(m, self.weight_bits), m):
            # ours are even in [-254, 254]; netx's are what Lava keeps with its num_weight_bits
            raise ValueError(f"connection {self.node!r}: mantissas outside what Lava keeps with "
                             f"{self.weight_bits} weight bits (ours: even, in [-{MANT_MAX}, {MANT_MAX}])")
        if not EXP_RANGE[0] <= int(self.weight_exp) <= EXP_RANGE[1]:
            raise ValueError(f"connection {self.node!r}: weight_exp {self.weight_exp} outside {EXP_RANGE}")
        self.weight_exp = int(self.weight_exp)


@dataclass(eq=False)
class QuantTarget:
    """Fixed-point parameters of a LIF layer (or of the output accumulator)."""

    name: str
    scale: int  # S
    du: int
    dv: int
    vth: int  # = S for LIF; 0 (unused) for the output
    bias_mant: np.ndarray  # int64 [C] or [N], per channel
    bias_exp: int
    bias_max_abs_err: float

    def __post_init__(self):
        self.bias_mant = np.asarray(self.bias_mant, dtype=np.int64)
        if np.abs(self.bias_mant).max(initial=0) > BIAS_MANT_MAX:
            raise ValueError(f"target {self.name!r}: bias_mant beyond 13 bits")
        for k, lo, hi in (("du", -1, 4095), ("dv", 0, 4096), ("bias_exp", 0, 24), ("scale", 1, 2**17 - 1)):
            if not lo <= int(getattr(self, k)) <= hi:
                raise ValueError(f"target {self.name!r}: {k}={getattr(self, k)} outside [{lo}, {hi}]")

    def bias_v(self) -> np.ndarray:
        return self.bias_mant << self.bias_exp


@dataclass(eq=False)
class QuantizedGraph:
    graph: StudentGraph
    connections: list[QuantConnection]
    targets: dict[str, QuantTarget]
    input_scale: float = INPUT_SCALE
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        paths = connections(self.graph)
        for c in self.connections:
            if c.node not in self.graph.nodes or c.target not in self.targets:
                raise ValueError(f"connection {c.node!r} → {c.target!r} does not match the graph")
            if c.path is None:
                hop = lambda p: p.via[-1] if p.via else p.source  # noqa: E731  the node next to the target
                found = [p for p in paths if p.target == c.target and
                         (p.node == c.node if not c.identity else p.identity and hop(p) == c.node)]
                if len(found) != 1:
                    raise ValueError(f"connection {c.node!r} → {c.target!r}: {len(found)} paths in the graph")
                c.path = found[0]

    def connection(self, node: str, target: str) -> QuantConnection:
        return next(c for c in self.connections if c.node == node and c.target == target)

    def report(self) -> list[dict]:
        """One row per connection: target, S, weight_exp, clipped count/fraction, max |error|."""
        rows = []
        for c in self.connections:
            t = self.targets[c.target]
            rows.append({
                "connection": c.node if not c.identity else f"{c.node} (identity skip)",
                "target": c.target, "scale_S": t.scale, "weight_exp": c.weight_exp,
                "n_weights": c.n_weights, "n_clipped": c.n_clipped,
                "frac_clipped": c.n_clipped / max(c.n_weights, 1), "n_zeroed": c.n_zeroed,
                "frac_zeroed": c.n_zeroed / max(c.n_weights, 1), "max_abs_err": c.max_abs_err,
                "bias_exp": t.bias_exp, "bias_max_abs_err": t.bias_max_abs_err,
            })
        return rows

    def warnings(self) -> list[str]:
        """Connections that lose much to the 8-bit mantissa: clipped weights, or ≥ ``ZEROED_WARN``
        of the weights rounding to 0 (their range is wider than 254 steps of the scale the
        largest weight sets). Empty for a network the fixed point represents well. A graph read from
        a file adds what its reader reported (``metadata['read_warnings']``: a netx file's truncated
        fractions)."""
        out = list(self.metadata.get("read_warnings", []))
        for row, c in zip(self.report(), self.connections):
            if c.n_clipped:
                out.append(f"{row['connection']} → {c.target}: {c.n_clipped} of {c.n_weights} weights clipped "
                           f"to ±{MANT_MAX}")
            if row["frac_zeroed"] >= ZEROED_WARN:
                out.append(f"{row['connection']} → {c.target}: {row['frac_zeroed']:.0%} of its {c.n_weights} "
                           f"weights round to 0 (S = {row['scale_S']}, weight_exp {c.weight_exp}; the largest "
                           f"weight sets the step) — expect the integer network to lose accuracy; compare "
                           "float vs integer accuracy in export_report.json")
        return out


# -- building ------------------------------------------------------------------------------


def check_deployable(graph: StudentGraph, conn: Connection) -> None:
    """ValueError naming the node unless ``conn`` runs in fixed point: its source is the input
    or a neuron, and only single-input pool/flatten nodes lie between them."""
    for name in reversed(conn.via):
        if len(graph.predecessors(name)) != 1:
            raise ValueError(f"node {name!r}: a sum feeding a pool/flatten is not deployable")
    source = graph.nodes[conn.source]
    if source.ROLE not in ("neuron", "input"):
        raise ValueError(f"node {conn.source!r} ({type(source).__name__}): only pooling/flatten may sit "
                         "between a neuron and the next conv/dense (not deployable)")


def connections_into(graph: StudentGraph, target: str) -> list[Connection]:
    """The deployable connections into neuron/output ``target``, in predecessor order (ValueError
    naming the node for anything else: a conv/dense feeding several nodes or fed by a sum, a
    sum before a pool, a conv between pools and the neuron)."""
    out = []
    for src in graph.predecessors(target):
        if graph.role(src) == "synapse":
            if graph.successors(src) != [target]:
                raise ValueError(f"node {src!r}: a conv/dense must feed exactly one neuron layer "
                                 f"or the output, feeds {graph.successors(src)}")
            preds = graph.predecessors(src)
            if len(preds) != 1:
                raise ValueError(f"node {src!r}: a conv/dense fed by a sum of {preds} is not supported yet")
            found = [make_connection(graph, s, v, src, target) for s, v in paths_from(graph, preds[0])]
        else:
            found = [make_connection(graph, s, v, target, target) for s, v in paths_from(graph, src)]
        for c in found:
            check_deployable(graph, c)
        out.append(found[0])
    return out


def _quantise_weights(w_eff: np.ndarray, gain: float) -> tuple[np.ndarray, int, int, int]:
    """(mantissas, weight_exp, clipped count, count of non-zero weights that round to 0)."""
    m = float(np.abs(w_eff).max(initial=0.0)) * gain
    exp = 0 if m == 0 else int(np.clip(math.ceil(math.log2(m / MANT_MAX)), *EXP_RANGE))
    raw = 2.0 * np.round(w_eff * gain / 2.0**exp / 2.0)
    n_clipped = int((np.abs(raw) > MANT_MAX).sum())
    n_zeroed = int(((raw == 0) & (w_eff != 0)).sum())
    return np.clip(raw, -MANT_MAX, MANT_MAX).astype(np.int64), exp, n_clipped, n_zeroed


def _composed_max(graph: StudentGraph, conn: Connection, mant: np.ndarray) -> int:
    """Largest |weight| of the connection's synapses once its overlapping pools are composed into
    them (what the plan hands Lava: a source in several pooled positions gets their sum)."""
    import scipy.sparse as sp

    prev = conn.source
    pmap = sp.identity(int(np.prod(graph.shapes[prev])), dtype=np.int64, format="csr")
    for v in conn.via:
        pmap = graph.nodes[v].matrix(graph.shapes[prev]).astype(np.int64) @ pmap
        prev = v
    m = pmap * int(mant) if conn.identity else graph.nodes[conn.node].matrix(mant, graph.shapes[prev]) @ pmap
    return int(abs(sp.csr_matrix(m)).max()) if sp.csr_matrix(m).nnz else 0


def _fit_overlapping(graph: StudentGraph, conn: Connection, w_eff: np.ndarray, gain: float, exp: int):
    """Mantissas of a connection through an overlapping pool: the exponent is raised until the
    composed synapse weights (sums of up to kh·kw mantissas) fit Lava's 8 bits too, so the deployed
    network stays exact; ValueError naming the connection if even exponent 7 does not."""
    for e in range(exp, EXP_RANGE[1] + 1):
        raw = 2.0 * np.round(w_eff * gain / 2.0**e / 2.0)
        mant = np.clip(raw, -MANT_MAX, MANT_MAX).astype(np.int64)
        if _composed_max(graph, conn, mant) <= MANT_MAX:
            return mant, e, int((np.abs(raw) > MANT_MAX).sum()), int(((raw == 0) & (w_eff != 0)).sum())
    raise ValueError(f"node {conn.name!r}: the overlapping pool {conn.via} sums weights beyond Lava's 8 bits "
                     f"even at weight_exp {EXP_RANGE[1]}")


def quantize(graph: StudentGraph, *, input_scale: float = INPUT_SCALE) -> QuantizedGraph:
    """Fixed-point parameters for every LIF layer and the output; see the module docstring.

    Raises ValueError naming the node if the graph is not deployable this way (a conv fed by
    a sum, a conv feeding several targets or a non-neuron, two convs in a row).
    """
    quant_conns: list[QuantConnection] = []
    targets: dict[str, QuantTarget] = {}
    for tname, tnode in graph.nodes.items():
        if tnode.ROLE not in TARGETS:
            continue
        paths = []  # (node, identity, w_eff, w_float, divisor·in_scale factor, bias, connection)
        for conn in connections_into(graph, tname):
            in_scale = input_scale if graph.role(conn.source) == "input" else 1.0
            factor = in_scale / conn.divisor
            if conn.identity:
                one = np.array(1.0)
                hop = conn.via[-1] if conn.via else conn.source
                paths.append((hop, True, one * factor, one, factor, None, conn))
            else:
                snode = graph.nodes[conn.node]
                w = np.asarray(snode.weight, dtype=np.float64)
                paths.append((conn.node, False, w * factor, w, factor, np.asarray(snode.bias, dtype=np.float64), conn))
        # The bias enters v each step; a neuron with current memory (CubaLIF) gets its input's bias
        # through u, which settles at 1/f_du times one step's: that steady state goes into v. The
        # node's type says how it runs on Loihi (export/nodes/; the readout: its current u).
        neuron = tnode.loihi()
        denom = neuron.v_threshold * neuron.input_divisor
        du, dv, bias_gain = neuron.du, neuron.dv, 1.0 / neuron.f_du
        m = max(float(np.abs(p[2]).max(initial=0.0)) for p in paths)
        scale = S_MAX if m == 0 else int(np.clip(math.floor(MANT_MAX * denom / m), S_MIN, S_MAX))
        gain = scale / denom
        for node, identity, w_eff, w, factor, _, conn in paths:
            mant, exp, n_clipped, n_zeroed = _quantise_weights(w_eff, gain)
            if any(graph.nodes[v].overlaps for v in conn.via):  # Lava sums a spike's pooled weights
                mant, exp, n_clipped, n_zeroed = _fit_overlapping(graph, conn, w_eff, gain, exp)
            err = float(np.abs(mant * 2.0**exp / gain / factor - w).max(initial=0.0))
            quant_conns.append(QuantConnection(node, tname, identity, mant, exp, n_clipped, int(w.size), err,
                                               n_zeroed, conn))
        biases = [p[5] for p in paths if p[5] is not None]
        nb = graph.shapes[tname][0]
        b = np.sum(biases, axis=0) if biases else np.zeros(nb)
        b_v = b * gain * 64.0 * bias_gain
        peak = float(np.abs(b_v).max(initial=0.0))
        bias_exp = 0 if peak <= BIAS_MANT_MAX else int(math.ceil(math.log2(peak / BIAS_MANT_MAX)))
        bias_mant = np.clip(np.round(b_v / 2.0**bias_exp), -BIAS_MANT_MAX, BIAS_MANT_MAX).astype(np.int64)
        b_err = float(np.abs((bias_mant << bias_exp) / (gain * 64.0 * bias_gain) - b).max(initial=0.0))
        targets[tname] = QuantTarget(tname, scale, du, dv, scale if tnode.ROLE == "neuron" else 0,
                                     bias_mant, bias_exp, b_err)
    return QuantizedGraph(graph, quant_conns, targets, input_scale)


# -- integer runner ------------------------------------------------------------------------


def quantize_input(x_tb, input_scale: float = INPUT_SCALE) -> np.ndarray:
    """Input → int64 ``round(x / input_scale)``: analog values (pixels in [0, 1]) become 0..255, an
    event count ``c`` (whole number up to ``MAX_COUNT``: ``distill.data.inputfile`` checks) ``255·c``
    — the off-chip first layer multiplies exact integers either way. Clipped to that range."""
    x = np.asarray(x_tb, dtype=np.float64)
    return np.clip(np.rint(x / input_scale), 0, MAX_COUNT * round(1.0 / input_scale)).astype(np.int64)


def run_int(q: QuantizedGraph, x_tb, *, record: bool = False):
    """Timestep-aligned integer run on ``x`` ``[T, B, C, H, W]`` (pixels in [0, 1]).

    Returns the output accumulator ``v`` as int64 ``[T, B, K]`` (logits ≈ ``out / (64·S)``;
    ``logits_from_int`` does it), or ``(out, {node: int64 [T, B, ...]})`` with ``record``.
    Values are spikes (0/1) after LIF nodes, integer spike sums after pools, shifted integer
    currents ``a`` after conv/dense nodes.
    """
    g = q.graph
    x = torch.as_tensor(x_tb)
    if x.dim() < 3 or tuple(x.shape[2:]) != g.shapes[g.input_name]:
        raise ValueError(f"expected input [T, B, {g.shapes[g.input_name]}], got {tuple(x.shape)}")
    vals: dict[str, np.ndarray] = {}
    by_node = {(c.node, c.target): c for c in q.connections}
    recurrent = set(g.recurrent)
    for name, node in g.nodes.items():
        preds = g.predecessors(name, back=False)
        if node.ROLE == "input":
            vals[name] = quantize_input(x.numpy(), q.input_scale)
        elif node.ROLE in TARGETS:  # sum the connections' currents, then the node's fixed-point step
            a = _current(by_node, name, {s: vals[s] for s in preds})
            a = np.broadcast_to(np.asarray(a, dtype=np.int64), (x.shape[0], x.shape[1], *g.shapes[name]))
            tq = q.targets[name]
            bias = tq.bias_v().reshape(-1, *([1] * (a.ndim - 3)))
            u = np.zeros(a.shape[1:], np.int64)
            v = np.zeros(a.shape[1:], np.int64)
            out = np.zeros(a.shape, np.int64)
            body, back = (g.cycle_body(name), g.back_inputs(name)) if name in recurrent else ((), ())
            for t in range(a.shape[0]):
                a_t = a[t]
                if back:  # the cycle's current from the previous step's spikes (none before step 0)
                    step = {name: out[t - 1:t] if t else np.zeros((1, *a.shape[1:]), np.int64)}
                    for b in body:
                        step[b] = _int_value(q, b, {s: step[s] if s in step else vals[s][t:t + 1]
                                                    for s in g.predecessors(b, back=False)})
                    a_t = a_t + _current(by_node, name, {s: step[s] for s in back})[0]
                out[t], u, v = node.int_step(u, v, a_t, tq, bias)
            vals[name] = out
        else:
            vals[name] = _int_value(q, name, {s: vals[s] for s in preds})
    out = vals[g.output_name]
    return (out, vals) if record else out


def _current(by_node: dict, target: str, srcs: dict[str, np.ndarray]):
    """The integer current into ``target`` from its sources' values ``[T, B, ...]``: a conv/dense
    node's value as it is, an identity skip's spikes (or pooled counts) times its mantissa, shifted."""
    a = 0
    for src, v in srcs.items():
        c = by_node[(src, target)]
        a = a + (v if not c.identity else _shift(v * c.weight_mant, c.weight_exp))
    return a


def _int_value(q: QuantizedGraph, name: str, srcs: dict[str, np.ndarray]) -> np.ndarray:
    """The integer value of a synapse or route node from its one source's value."""
    node = q.graph.nodes[name]
    if len(srcs) != 1:  # only reachable for pools/flatten fed by sums, rejected by quantize
        raise ValueError(f"node {name!r}: summed inputs outside a neuron are not supported")
    (v,) = srcs.values()
    if node.ROLE == "synapse":  # 8-bit mantissas, then the connection's exponent
        c = next(c for c in q.connections if c.node == name)
        return _shift(_exact(node.apply, v, torch.from_numpy(c.weight_mant.astype(np.float64))), c.weight_exp)
    return node.run_int(v)  # a route: sum pools on integer spike counts, flatten


def logits_from_int(q: QuantizedGraph, out_int: np.ndarray) -> np.ndarray:
    """Float logits ``[T, B, K]`` from the integer output accumulator."""
    return out_int / (64.0 * q.targets[q.graph.output_name].scale)
