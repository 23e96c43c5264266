"""lava-dl netx HDF5 for feed-forward quantised students (``write_netx``, ``read_netx_summary``).

The layout is lava-dl 0.6.0's (``lava/lib/dl/netx/hdf5.py`` reads it, ``slayer/block/base.py``
writes it); a file is a chain of layers ``layer/{i}`` read in order, each a group of datasets:

    layer/0  type 'input', shape (C, H, W)             no neuron: the first conv/dense receives
                                                        the 8-bit pixel integers as graded input
                                                        (``hdf5.Network(..., input_message_bits=8)``)
    conv     type, shape (Cout, H, W), weight [Cout, Cin/groups, kH, kW] (torch layout and torch
             cross-correlation: netx flips and transposes it for Lava itself), inChannels,
             outChannels, kernelSize / stride / padding / dilation as (H, W) pairs, groups,
             bias [Cout], neuron/
    flatten  type, shape (C·H·W, 1, 1)                 netx flattens (C, H, W) in C order, as torch
    dense    type, shape (N,), weight [N, in], inFeatures, outFeatures, bias [N], neuron/
    neuron/  type 'CUBA', iDecay, vDecay, vThMant, refDelay = 1, gradedSpike = False; or, for a
             network read from a netx SDNN file, type 'SDNN', activation 'relu', vThMant (and
             sigma_output on a sigma decoder, which has no bias): its layers are written unscaled
             (j = 0, graded outputs cannot be rescaled), biases in 2**12 steps

Mapping from ``QuantizedGraph`` (docs/DESIGN.md "Loihi-style fixed point"):

- netx builds lava-nc ``LIF(du = iDecay - 1, dv = vDecay, vth = vThMant, bias_exp = 6)``, so
  ``iDecay = du + 1`` (4096 = no current memory), ``vDecay = dv``, ``vThMant = vth``.
- netx has no weight exponent: a file weight is the integer that reaches the neuron (netx
  re-derives its own mantissa/exponent for dense layers; lava-nc's Conv applies none), and
  it must lie in [-256, 254] (else ``ValueError`` naming the node). ``weight_exp >= 0``:
  ``weight_mant << weight_exp``, exact. ``weight_exp = -k < 0`` (``run_int`` shifts the *summed*
  current right) has no netx equivalent, and it is the usual case for the first conv: its
  weights carry the 1/255 pixel scale, S is clamped at S_MAX and k is 2…4. Rounding such
  weights to integers would leave 4–6 bits (measured: 2 % of first-layer spikes differ).
  Instead the layer runs at ``2**j`` times our scale: weights ``weight_mant · 2**(j - k)``
  (exact for j ≥ k − 1, mantissas being even), ``vThMant = vth · 2**j``, bias ``× 2**j``, with
  the largest j ≤ k that keeps ``u = a << 6`` inside 24 bits for the worst-case input (pixels
  0..255, spikes 0/1) and vth inside 17 bits. Its ``v`` is ``2**j`` × ours and its spikes
  differ from ``run_int`` only where ``run_int``'s floor after the shift decides
  (measured: 0.002 % of first-layer spikes). Attribute ``v_scale_exp`` = j; for the output,
  logits = v / (64 · S · 2**j).
- Bias: netx fixes ``bias_exp = 6``, so the file bias is ``(bias_mant << bias_exp) · 2**j / 64``,
  rounded half away from zero: ours has 64× finer steps.
- ``strict=True`` raises ``ValueError`` naming the node for a negative exponent or a bias that is
  not a multiple of 64, i.e. unless the file is bit-identical to ``run_int`` (up to Lava's
  one-step delay per hop). Attributes ``bias_exact`` and ``exact`` record it per layer.
- Output (logits): a dense/conv layer whose neuron never fires (``vThMant = 2**17``, netx's own
  default for a readout: ``v > vth << 6`` needs more than the 24-bit ``v``), with ``iDecay =
  vDecay = 4096``, so its ``v`` each step is ``a << 6 + bias`` — ``quantize.run_int``'s readout.
  A graph whose last layer spikes (its output reads one neuron layer's spikes, as Sinabs' CNNs and
  most netx networks end) ends in that layer; the file attribute ``readout`` is ``spikes`` (else
  ``current``): the decision is its spike counts, as our readout's.
- Pools: netx has none. A pool (stride = kernel, no padding, input H and W multiples of the
  kernel) between a neuron and the next conv/dense is folded into that layer, exactly in
  integers as ``run_int`` computes it (sum of spike counts × mantissas): conv → the kernel
  repeated over each pool window, stride and padding × pool size; dense → each weight
  repeated over its pool window.
- Not expressible (``ValueError`` naming the node): skip/residual edges (a node with several
  inputs or outputs, identity connections), a conv/dense not followed by a LIF or the output,
  pools with padding or stride ≠ kernel, a conv with dilation fed by a pool.

Our own fields are HDF5 *attributes* (netx lists only datasets and groups, so it ignores them):
file ``format``, ``format_version``, ``input_scale``, ``input_message_bits``; per layer
``nodes`` (graph node names), ``weight_exp``, ``v_scale_exp``, ``scale_S``, ``bias_mant``,
``bias_exp`` (our exact values), ``bias_exact``, ``exact``, ``inexact_why`` (why not, in words).
Timing is netx's/Lava's: each conv/dense hop adds one step of delay (layer k at step t + k
equals ``run_int`` at step t), and biases act from step 0, also while a layer waits for its
first input (``run_int`` has no such steps), so exact comparisons use bias-free graphs or
``reset_interval``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import AtomicH5
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import (
    WEIGHTED, Conv2dNode, DenseNode, FlattenNode, InputNode, OutputNode, PoolNode,
)
from htakl_deploy.export.quantize import QuantizedGraph
from htakl_deploy.hw.lif_ref import READOUT_VTH  # v > vth << 6 = 2**23 never holds: never spikes

FORMAT = "htakl-deploy-netx"
FORMAT_VERSION = 1
W_MIN, W_MAX = -256, 254  # lava Dense clips mixed-sign weights to this range (netx optimize_weight_bits)
NETX_BIAS_EXP = 6
INPUT_MESSAGE_BITS = 8  # pixels enter as 8-bit graded spikes: hdf5.Network(..., input_message_bits=8)


def _chain(q: QuantizedGraph) -> list[str]:
    """The graph's nodes as one chain from input to output, or ValueError naming the node
    where it branches or joins."""
    g = q.graph
    for src, neuron in sorted(g.back_edges):
        raise ValueError(f"node {neuron!r}: recurrent connection from {src!r}; this netx writer holds feed-forward "
                         "chains only (netx's 'dense_rec' layer is not written yet): use --target lava")
    for c in q.connections:
        into_input_layer = getattr(g.nodes[c.target], "bias_input", False) or getattr(g.nodes[c.target],
                                                                                     "input_current", False)
        if c.identity and not spiking_readout(q, c) and not (c.node == g.input_name and into_input_layer):
            raise ValueError(f"node {c.target!r}: identity (skip) connection from {c.node!r}; "
                             "netx HDF5 holds feed-forward chains only")
    order, name = [], g.input_name
    while True:
        order.append(name)
        succ = g.successors(name)
        if not succ:
            break
        if len(succ) > 1:
            raise ValueError(f"node {name!r} feeds {succ} (a skip/residual branch); "
                             "netx HDF5 holds feed-forward chains only")
        name = succ[0]
        preds = g.predecessors(name)
        if len(preds) > 1:
            raise ValueError(f"node {name!r} sums {preds} (a residual join); "
                             "netx HDF5 holds feed-forward chains only")
    if len(order) != len(g.nodes):
        raise ValueError(f"nodes {sorted(set(g.nodes) - set(order))} are not on the input→output chain")
    return order


def _fold_pools_conv(name: str, w: np.ndarray, node: Conv2dNode, pools: list[tuple[str, PoolNode]]):
    """Conv after sum pools (stride = kernel, padding 0) → one conv on the pools' input."""
    stride, padding = np.array(node.stride), np.array(node.padding)
    if pools and node.dilation != (1, 1):
        raise ValueError(f"node {name!r}: a dilated conv after pool {pools[-1][0]!r} cannot be folded for netx")
    for _, p in reversed(pools):  # innermost pool (next to the conv) first
        k = np.array(p.kernel_size)
        w = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3)
        stride, padding = stride * k, padding * k
    return w, tuple(int(s) for s in stride), tuple(int(p) for p in padding)


def _fold_pools_dense(w: np.ndarray, pools: list[tuple[str, PoolNode]], in_shapes: list[tuple]) -> np.ndarray:
    """Dense after sum pools and a flatten → dense on the flattened pools' input.
    ``in_shapes[i]`` is the (C, H, W) input of ``pools[i]`` (H, W multiples of its kernel)."""
    for (_, p), (c, h, wd) in zip(reversed(pools), reversed(in_shapes)):
        kh, kw = p.kernel_size
        v = w.reshape(w.shape[0], c, h // kh, wd // kw)
        w = np.repeat(np.repeat(v, kh, axis=2), kw, axis=3).reshape(w.shape[0], -1)
    return w


def _round_shift(x: np.ndarray, exp: int) -> np.ndarray:
    """``x · 2**exp`` as integers, halves rounded away from zero (exact when exp >= 0)."""
    x = np.asarray(x, dtype=np.int64)
    if exp >= 0:
        return x << exp
    return np.sign(x) * ((np.abs(x) + (1 << (-exp - 1))) >> -exp)


def _max_current(w: np.ndarray, x_max: int) -> int:
    """Largest |a| = |Σ w·x| over inputs 0 ≤ x ≤ x_max (spikes, pooled spikes, or pixels)."""
    w = w.reshape(w.shape[0], -1)
    return int(max(np.where(w > 0, w, 0).sum(1).max(initial=0), -np.where(w < 0, w, 0).sum(1).min(initial=0)) * x_max)


def _layer_scale(name: str, mant: np.ndarray, exp: int, vth: int, x_max: int, strict: bool) -> tuple[int, np.ndarray]:
    """(j, file weights): the layer runs at 2**j × our v scale, weights ``mant · 2**(exp + j)``."""
    if exp >= 0 or not np.any(np.asarray(mant) % (1 << -exp)):  # integer weights: exact, whatever the exponent
        j = 0
    elif strict:
        raise ValueError(f"node {name!r}: weight_exp {exp} < 0 (run_int shifts the summed current right), "
                         "which netx cannot express exactly; strict=False scales the layer instead")
    else:  # the largest j <= -exp that keeps u = a << 6 inside 24 bits and vth inside 17 bits
        j = -exp
        while j > 0 and (_max_current(_round_shift(mant, exp + j), x_max) << 6 >= 1 << 23
                         or (vth << j) >= 1 << 17):
            j -= 1
    w = _round_shift(mant, exp + j)
    lo, hi = int(w.min(initial=0)), int(w.max(initial=0))
    if lo < W_MIN or hi > W_MAX:
        raise ValueError(f"node {name!r}: effective weights (mantissa · 2^{exp + j}) span [{lo}, {hi}], "
                         f"outside netx/Lava's 8-bit [{W_MIN}, {W_MAX}]")
    return j, w


def _inexact_why(weight_exp: int, j: int, bias_exact: bool, weights_exact: bool = False) -> str:
    """Why a layer is not bit-identical to ``run_int`` in netx ("" when it is)."""
    why = []
    if weight_exp < 0 and not weights_exact:
        why.append(f"weight_exp {weight_exp} < 0 has no netx equivalent (netx has no weight exponent): the layer "
                   f"runs at 2^{j} x our v scale, spikes differ where run_int's floor after the shift decides")
    if not bias_exact:
        why.append(f"bias is not a multiple of 64 (netx fixes bias_exp = {NETX_BIAS_EXP}): rounded")
    return "; ".join(why)


def _netx_bias(name: str, bias_v: np.ndarray, j: int, strict: bool,
               bias_exp: int = NETX_BIAS_EXP) -> tuple[np.ndarray, bool]:
    """The file's bias: ``bias_v · 2**j`` in units of netx's ``2**bias_exp`` (6 for LIF; a sigma-delta
    layer's 12, ``spike_exp + state_exp``)."""
    bias_v = np.asarray(bias_v, dtype=np.int64) << j
    b = _round_shift(bias_v, -bias_exp)
    exact = bool(np.array_equal(b << bias_exp, bias_v))
    if strict and not exact:
        raise ValueError(f"node {name!r}: bias (mant << exp) is not a multiple of 2^{bias_exp}, netx's bias step "
                         f"(bias_exp fixed at {bias_exp}); strict=False rounds it")
    return b, exact


def _str(group, key: str, value: str) -> None:
    group.create_dataset(key, (1,), "S10", [value.encode("ascii")])  # what slayer writes


def _neuron(group, du: int, dv: int, vth: int, ref_delay: int = 1) -> None:
    n = group.create_group("neuron")
    _str(n, "type", "CUBA")
    n.create_dataset("iDecay", data=np.int64(du + 1))
    n.create_dataset("vDecay", data=np.int64(dv))
    n.create_dataset("vThMant", data=np.int64(vth))
    n.create_dataset("refDelay", data=np.int64(ref_delay))
    n.create_dataset("gradedSpike", data=False)


def spiking_readout(q: QuantizedGraph, c) -> bool:
    """Whether connection ``c`` is the output reading a spiking last layer (the output's one input is
    a neuron layer's spikes): netx networks end in that layer, and its spike counts are the decision."""
    g = q.graph
    return (c.identity and c.target == g.output_name and not c.path.via
            and g.predecessors(c.target) == [c.node] and g.role(c.node) == "neuron")


def _sdnn_spec(node) -> dict:
    """A sigma-delta layer's neuron group, as slayer's sigma-delta blocks write it."""
    return {"type": "SDNN", "vThMant": node.v_th_mant, "sigma_output": node.kind == "sigma"}


def _sdnn_neuron(group, spec: dict) -> None:
    n = group.create_group("neuron")
    _str(n, "type", "SDNN")
    _str(n, "activation", "relu")
    n.create_dataset("vThMant", data=np.int64(spec["vThMant"]))
    if spec["sigma_output"]:
        n.create_dataset("sigma_output", data=True)


def _layers(q: QuantizedGraph, strict: bool) -> list[dict]:
    """Plain descriptions of the netx layers (datasets + attributes), in order: one per
    connection (``QuantConnection.path``: source → pools/flatten → conv/dense → neuron)."""
    g = q.graph
    _chain(q)
    layers = [{"type": "input", "shape": np.array(g.shapes[g.input_name]), "attrs": {"nodes": g.input_name}}]
    for c in q.connections:
        if spiking_readout(q, c):  # the last neuron layer is netx's output: its spikes are read, nothing more
            continue
        name, target, path = c.node, c.target, c.path
        node = g.nodes[name]
        if c.identity:  # a netx input layer whose bias is the input (_chain allows no other identity)
            t, tn = q.targets[target], g.nodes[target]
            transform = g.metadata.get("input_transform", {})
            neuron = _sdnn_spec(tn) if getattr(tn, "MESSAGE_BITS", 0) else (t.du, t.dv, t.vth, tn.ref_delay)
            layers[0].update({"neuron": neuron, "attrs": {"nodes": f"{name},{target}"},
                              **{k: np.float32(v) for k, v in transform.items()}})
            continue
        if node.ROLE == "synapse" and not isinstance(node, (Conv2dNode, DenseNode)):  # e.g. Conv1d
            raise ValueError(f"node {name!r} ({type(node).__name__}): netx has no such layer (its conv is 2-D, "
                             "its dense takes a flat input)")
        if isinstance(g.nodes[path.source], WEIGHTED):
            raise ValueError(f"node {path.source!r} ({type(g.nodes[path.source]).__name__}) has no netx layer "
                             "here: expected a neuron (LIF) or the output after a conv/dense")
        pools: list[tuple[str, PoolNode]] = []
        pool_in: list[tuple] = []
        flatten: str | None = None
        for v in path.via:
            vnode = g.nodes[v]
            if isinstance(vnode, FlattenNode):
                flatten = v
                continue
            if vnode.stride != vnode.kernel_size or vnode.padding != (0, 0):
                raise ValueError(f"node {v!r}: netx has no pooling and only a pool with stride = kernel "
                                 f"and no padding can be folded into the next layer, got {vnode}")
            if flatten is not None:
                raise ValueError(f"node {v!r}: pool after flatten {flatten!r} is not supported")
            in_shape = g.shapes[g.predecessors(v)[0]]
            if in_shape[1] % vnode.kernel_size[0] or in_shape[2] % vnode.kernel_size[1]:
                # the rows/columns the pool drops would reach a folded conv's padding
                raise ValueError(f"node {v!r}: pool input {in_shape[1:]} is not a multiple of its kernel "
                                 f"{vnode.kernel_size}, so it cannot be folded into the next layer for netx")
            pools.append((v, vnode))
            pool_in.append(in_shape)
        t = q.targets[target]
        is_out = isinstance(g.nodes[target], OutputNode)  # our readout (a netx last layer is a real neuron)
        mant, stride, padding = c.weight_mant, None, None
        if isinstance(node, Conv2dNode):
            mant, stride, padding = _fold_pools_conv(name, mant, node, pools)
        else:
            mant = _fold_pools_dense(mant, pools, pool_in)
        x_max = round(1.0 / q.input_scale) if isinstance(g.nodes[path.source], InputNode) else 1
        sdnn = bool(getattr(g.nodes[target], "MESSAGE_BITS", 0))  # graded outputs: no 2^j scaling possible
        j, w = _layer_scale(name, mant, c.weight_exp, 0 if is_out else t.vth, x_max, strict or sdnn)
        w_exact = c.weight_exp >= 0 or not np.any(np.asarray(mant) % (1 << -c.weight_exp))  # integer weights
        bias, b_exact = _netx_bias(target, t.bias_v(), j, strict or sdnn,
                                   g.nodes[target].BIAS_EXP if sdnn else NETX_BIAS_EXP)
        in_shape = g.shapes[path.source]
        if flatten is not None:
            layers.append({"type": "flatten", "shape": np.array([int(np.prod(in_shape)), 1, 1]),
                           "attrs": {"nodes": flatten}})
        attrs = {"nodes": ",".join([p for p, _ in pools] + ([flatten] if flatten else []) + [name, target]),
                 "weight_exp": c.weight_exp, "v_scale_exp": j, "scale_S": t.scale, "bias_mant": t.bias_mant,
                 "bias_exp": t.bias_exp, "bias_exact": b_exact,
                 "exact": w_exact and b_exact, "inexact_why": _inexact_why(c.weight_exp, j, b_exact, w_exact)}
        neuron = (_sdnn_spec(g.nodes[target]) if sdnn else (t.du, 4096, READOUT_VTH) if is_out
                  else (t.du, t.dv, t.vth << j, getattr(g.nodes[target], "ref_delay", 1)))
        out_shape = np.array(g.shapes[target])
        if isinstance(node, Conv2dNode):
            layers.append({"type": "conv", "shape": out_shape, "weight": w, "bias": bias,
                           "inChannels": np.int64(w.shape[1] * node.groups), "outChannels": np.int64(w.shape[0]),
                           "kernelSize": np.array(w.shape[2:]), "stride": np.array(stride),
                           "padding": np.array(padding), "dilation": np.array(node.dilation),
                           "groups": np.int64(node.groups), "neuron": neuron, "attrs": attrs})
        else:
            layers.append({"type": "dense", "shape": out_shape, "weight": w, "bias": bias,
                           "inFeatures": np.int64(w.shape[1]), "outFeatures": np.int64(w.shape[0]),
                           "neuron": neuron, "attrs": attrs})
        if sdnn and neuron["sigma_output"]:  # a sigma decoder has no bias (lava-nc's Sigma takes none)
            if np.any(bias):
                raise ValueError(f"node {target!r}: a sigma decoder with a bias has no netx layer")
            del layers[-1]["bias"]
    return layers


def write_netx(qgraph: QuantizedGraph, path: str | os.PathLike, *, strict: bool = False) -> Path:
    """Write the feed-forward quantised graph as lava-dl netx HDF5 at ``path`` (atomically).

    Raises ``ValueError`` naming the node for anything netx cannot express (see the module
    docstring), before any file is touched."""
    layers = _layers(qgraph, strict)
    with AtomicH5(path) as out:  # a full disk: one UserError, no crash inside libhdf5
        f = out.h5
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["input_scale"] = float(qgraph.input_scale)
        f.attrs["input_message_bits"] = INPUT_MESSAGE_BITS
        f.attrs["readout"] = "spikes" if any(spiking_readout(qgraph, c) for c in qgraph.connections) else "current"
        root = f.create_group("layer")
        for i, layer in enumerate(layers):
            grp = root.create_group(str(i))
            _str(grp, "type", layer["type"])
            for key, val in layer.items():
                if key == "neuron":
                    _neuron(grp, *val) if isinstance(val, tuple) else _sdnn_neuron(grp, val)
                elif key == "attrs":
                    grp.attrs.update(val)
                elif key != "type":
                    grp.create_dataset(key, data=val)
    return Path(path)


def _value(ds):
    v = ds[()]
    if isinstance(v, np.ndarray) and v.dtype.kind == "S":
        v = v[0]
    return v.decode("ascii") if isinstance(v, bytes) else v


def read_netx_summary(path: str | os.PathLike) -> dict:
    """Read a netx HDF5 file back with h5py: ``{"attrs": {...}, "layers": [{"type", "shape",
    dataset name → value, "neuron": {...}, "attrs": {...}}, ...]}`` in file order. Works on any
    netx file (our attributes are simply absent from others). Raises ``UserError`` for a
    missing or unreadable file."""
    import h5py

    from htakl_deploy.readers import check_h5

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such netx HDF5 file")
    check_h5(p)  # no links into other files, no dataset larger than the file holds
    try:
        with h5py.File(p, "r") as f:
            layers = []
            for i in range(len(f["layer"])):
                grp = f["layer"][str(i)]
                layer = {k: _value(grp[k]) for k in grp if isinstance(grp[k], h5py.Dataset)}
                if "neuron" in grp:
                    layer["neuron"] = {k: _value(v) for k, v in grp["neuron"].items()}
                layer["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in grp.attrs.items()}
                layers.append(layer)
            return {"attrs": dict(f.attrs), "layers": layers}
    except Exception as e:  # h5py raises OSError/KeyError/ValueError on bad files
        raise UserError(f"{p}: not a readable netx HDF5 file: {type(e).__name__}: {e}") from None
