"""The op counter against hand counts, a loop-based reference, SpikingJelly's counters and
NeuroBench's definitions (written out here: NeuroBench itself is not installed)."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
import torch

from htakl_deploy.energy.counter import count_ops, dense_ops_per_step, find_connections, fanout
from htakl_deploy.energy.spikefile import SpikeRecording, record_float
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, LIFNode, OutputNode, PoolNode, StudentGraph,
)


def conv(cout, cin, k, stride=1, padding=0, dilation=1, groups=1, weight=None):
    w = np.ones((cout, cin // groups, k, k)) if weight is None else weight
    return Conv2dNode(w, np.zeros(cout), stride, padding, dilation, groups)


def dense(n_out, n_in, weight=None):
    return DenseNode(np.ones((n_out, n_in)) if weight is None else weight, np.zeros(n_out))


def lif():
    return LIFNode(2.0, 1.0)


def graph(in_shape, *chain, extra_edges=()):
    """input → chain[0] → chain[1] → ... → output, plus ``extra_edges``; chain = (name, node)."""
    nodes = OrderedDict(input=InputNode(in_shape))
    edges, prev = [], "input"
    for name, node in chain:
        nodes[name] = node
        edges.append((prev, name))
        prev = name
    nodes["output"] = OutputNode()
    edges.append((prev, "output"))
    return StudentGraph(nodes, edges + list(extra_edges))


def recording(g, T, S, spikes: dict | None = None, x=None):
    """Zero spikes for every LIF node except those given; input zeros (or ``x``)."""
    layers = {n: np.zeros((T, S, *g.shapes[n]), np.uint8) for n, v in g.nodes.items() if isinstance(v, LIFNode)}
    layers.update(spikes or {})
    if x is None:
        x = np.zeros((T, S, *g.shapes["input"]), np.float32)
    return SpikeRecording(layers, x, None, None, {"backend": "test"})


def row(counts, name):
    return next(r for r in counts["layers"] if r["name"] == name)


# -- hand-counted cases --------------------------------------------------------------------


def test_conv3x3_pad1_corner_edge_center_fanouts():
    # a (1,4,4) → 3×3 conv, padding 1, 2 output channels: a corner spike reaches 2×2 outputs,
    # an edge spike 2×3, an inner spike 3×3, each in both channels.
    g = graph((1, 4, 4), ("c0", conv(1, 1, 1)), ("a", lif()), ("c", conv(2, 1, 3, padding=1)), ("b", lif()))
    s = np.zeros((2, 2, 1, 4, 4), np.uint8)
    s[0, 0, 0, 0, 0] = 1  # corner: 4 × 2 = 8
    s[0, 0, 0, 0, 2] = 1  # top edge: 6 × 2 = 12
    s[0, 0, 0, 1, 1] = 1  # inside: 9 × 2 = 18
    s[0, 1, 0, 3, 3] = 1  # other sample, corner: 8
    s[1, 0, 0, 2, 2] = 1  # step 1, inside: 18
    r = row(count_ops(g, recording(g, 2, 2, {"a": s})), "c")
    assert r["acs_per_timestep"] == [8 + 12 + 18 + 8, 18]
    assert r["acs"] == 64 and r["macs"] == 0
    # synapses: per axis the 4 positions reach 2, 3, 3, 2 outputs → (10 × 10) × 2 channels
    assert r["synapses"] == 200
    assert r["dense_ops_per_step"] == 200 and r["dense_ops"] == 200 * 2 * 2


def test_conv_stride2():
    # 3×3, stride 2, padding 1 on 4×4 → 2×2 outputs; output o reads inputs 2o-1..2o+1, so along
    # one axis input 0 reaches {0}, 1 → {0, 1}, 2 → {1}, 3 → {1}.
    g = graph((1, 4, 4), ("c0", conv(1, 1, 1)), ("a", lif()), ("c", conv(3, 1, 3, stride=2, padding=1)), ("b", lif()))
    s = np.zeros((1, 1, 1, 4, 4), np.uint8)
    s[0, 0, 0, 1, 1] = 1  # 2 × 2 positions × 3 channels = 12
    s[0, 0, 0, 0, 0] = 1  # 1 × 1 × 3 = 3
    s[0, 0, 0, 1, 2] = 1  # 2 × 1 × 3 = 6
    s[0, 0, 0, 3, 3] = 1  # 1 × 1 × 3 = 3
    assert row(count_ops(g, recording(g, 1, 1, {"a": s})), "c")["acs"] == 24
    # dense ops: output 0 reads 2 inputs per axis, output 1 reads 3 → (2 + 3)² taps × 3 channels
    assert dense_ops_per_step(g, "c") == 75


def test_conv_dilation2():
    # 3×3, dilation 2, padding 2 on 5×5 → 5×5; output o reads o-2, o, o+2, so along one axis
    # input 0 reaches {0, 2}, 2 → {0, 2, 4}.
    g = graph((1, 5, 5), ("c0", conv(1, 1, 1)), ("a", lif()), ("c", conv(1, 1, 3, padding=2, dilation=2)), ("b", lif()))
    s = np.zeros((1, 1, 1, 5, 5), np.uint8)
    s[0, 0, 0, 2, 2] = 1  # 3 × 3 = 9
    s[0, 0, 0, 0, 0] = 1  # 2 × 2 = 4
    s[0, 0, 0, 2, 0] = 1  # 3 × 2 = 6
    assert row(count_ops(g, recording(g, 1, 1, {"a": s})), "c")["acs"] == 19


def test_conv_groups():
    # 1×1 conv, 4 → 6 channels in 2 groups: a spike reaches the 3 output channels of its group
    g = graph((4, 2, 2), ("c0", conv(4, 4, 1)), ("a", lif()), ("c", conv(6, 4, 1, groups=2)), ("b", lif()))
    s = np.zeros((1, 1, 4, 2, 2), np.uint8)
    s[0, 0, 0, 0, 0] = s[0, 0, 3, 1, 1] = 1
    r = row(count_ops(g, recording(g, 1, 1, {"a": s})), "c")
    assert r["acs"] == 2 * 3
    assert r["dense_ops_per_step"] == 6 * 2 * 4  # Cout × Cin/groups × positions (1×1 kernel)


def test_dense_and_flatten():
    # (2,2,2) spikes → flatten → dense 8 → 5: every spike reaches the 5 rows;
    # then (5,) spikes → dense 5 → 3
    g = graph((2, 2, 2), ("c0", conv(2, 2, 1)), ("a", lif()), ("f", FlattenNode()), ("d1", dense(5, 8)),
              ("b", lif()), ("d2", dense(3, 5)))
    sa = np.zeros((3, 1, 2, 2, 2), np.uint8)
    sa[0, 0, 1, 0, 1] = sa[2, 0, 0, 1, 1] = sa[2, 0, 1, 1, 1] = 1
    sb = np.zeros((3, 1, 5), np.uint8)
    sb[1, 0, [0, 4]] = 1
    c = count_ops(g, recording(g, 3, 1, {"a": sa, "b": sb}))
    assert row(c, "d1")["acs_per_timestep"] == [5, 0, 10]
    assert row(c, "d2")["acs_per_timestep"] == [0, 6, 0]
    assert row(c, "d1")["dense_ops_per_step"] == 40 and row(c, "d2")["synapses"] == 15


def test_residual_join_identity_skip_plus_conv():
    # a → 3×3/pad-1 conv → b, and a → b directly (identity skip summed into b's current)
    g = graph((1, 4, 4), ("c0", conv(1, 1, 1)), ("a", lif()), ("c", conv(1, 1, 3, padding=1)), ("b", lif()),
              extra_edges=[("a", "b")])
    assert {c.name for c in find_connections(g)} == {"c0", "c", "a->b"}
    s = np.zeros((1, 1, 1, 4, 4), np.uint8)
    s[0, 0, 0, 0, 0] = s[0, 0, 0, 1, 2] = 1  # corner 4 + inside 9 through the conv; 1 + 1 via the skip
    c = count_ops(g, recording(g, 1, 1, {"a": s}))
    assert row(c, "c")["acs"] == 13
    skip = row(c, "a->b")
    assert skip["kind"] == "identity" and skip["acs"] == 2 and skip["synapses"] == 16
    assert c["totals"]["acs"] == 15


def test_avgpool_then_conv_counts_the_pooled_fanout():
    # (1,8,8) spikes → 2×2 avg pool → (1,4,4) → 3×3/pad-1 conv, 2 channels. A spike drives what
    # its pooled position drives: (0,0) → pooled corner (0,0): 4 × 2; (3,3) → pooled (1,1),
    # inside: 9 × 2; (0,5) → pooled (0,2), edge: 6 × 2. The pool itself is not an op.
    g = graph((1, 8, 8), ("c0", conv(1, 1, 1)), ("a", lif()), ("p", PoolNode("avg", 2, 2)),
              ("c", conv(2, 1, 3, padding=1)), ("b", lif()))
    s = np.zeros((1, 1, 1, 8, 8), np.uint8)
    s[0, 0, 0, 0, 0] = s[0, 0, 0, 3, 3] = s[0, 0, 0, 0, 5] = 1
    c = count_ops(g, recording(g, 1, 1, {"a": s}))
    r = row(c, "c")
    assert r["acs"] == 8 + 18 + 12 and r["via"] == ["p"]
    # the conv's own dense ops are on the pooled 4×4 map: 10 × 10 × 2
    assert r["dense_ops_per_step"] == 200
    assert c["totals"]["ann_teacher_macs_per_sample"] == 64 + 200  # c0 (1×1 on 8×8) + c


def test_overlapping_pool_counts_distinct_synapses_not_paths():
    # (1,3,3) → 2×2 pool with stride 1 → (1,2,2) → 2×2 conv → one output. The centre spike is in
    # all 4 pooled windows, but after folding it has ONE synapse to the single output.
    g = graph((1, 3, 3), ("c0", conv(1, 1, 1)), ("a", lif()), ("p", PoolNode("sum", 2, 1)),
              ("c", conv(1, 1, 2)), ("b", lif()))
    f = fanout(g, next(c for c in find_connections(g) if c.name == "c"))
    assert f.tolist() == [[[1, 1, 1], [1, 1, 1], [1, 1, 1]]]
    # an identity skip through the same pool reaches each pooled neuron it is summed into
    g2 = graph((1, 3, 3), ("c0", conv(1, 1, 1)), ("a", lif()), ("p", PoolNode("sum", 2, 1)), ("b", lif()))
    f2 = fanout(g2, next(c for c in find_connections(g2) if c.kind == "identity"))
    assert f2.tolist() == [[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]


def test_first_layer_macs_every_position_every_step():
    # analog input (1,4,4) → 3×3/pad-1 conv with 3 channels: every input position × its fan-out,
    # every step, whatever the pixel value: (10 × 10) × 3 = 300 per sample per step.
    g = graph((1, 4, 4), ("c", conv(3, 1, 3, padding=1)), ("a", lif()))
    rng = np.random.default_rng(0)
    x = np.repeat(rng.random((1, 2, 1, 4, 4)).astype(np.float32), 3, axis=0)  # T=3, 2 samples
    x[:, 0, 0, 0, 0] = 0.0  # a zero pixel still costs its MACs in a dense encoding layer
    c = count_ops(g, recording(g, 3, 2, x=x))
    r = row(c, "c")
    assert r["input"] == "analog" and r["acs"] == 0
    assert r["macs_per_timestep"] == [600, 600, 600] and r["macs"] == 1800
    assert c["totals"]["encoding_macs_once_per_sample"] == 300
    assert c["input_encoding"] == "analog"


def test_binary_input_counts_acs():
    # Poisson-encoded input: 0/1 events → ACs per event (here scaled to 7, as a fixed-point
    # input would be: one magnitude still means spikes)
    g = graph((1, 4, 4), ("c", conv(1, 1, 3, padding=1)), ("a", lif()))
    x = np.zeros((2, 1, 1, 4, 4), np.int16)
    x[0, 0, 0, 0, 0] = x[1, 0, 0, 2, 1] = 7
    c = count_ops(g, recording(g, 2, 1, x=x))
    assert c["input_encoding"] == "spikes"
    assert row(c, "c")["acs_per_timestep"] == [4, 9] and row(c, "c")["macs"] == 0


def test_firing_rates_sparsity_and_analytic():
    g = graph((1, 2, 2), ("c0", conv(1, 1, 1)), ("a", lif()), ("f", FlattenNode()),
              ("d", dense(2, 4, weight=np.array([[1.0, 0, 0, 1], [1, 1, 0, 1]]))))
    s = np.zeros((2, 3, 1, 2, 2), np.uint8)
    s[0, 0, 0, 0, 0] = s[1, 2, 0, 1, 1] = s[1, 1, 0, 0, 1] = 1  # 3 spikes of 4 × 2 × 3 = 24
    c = count_ops(g, recording(g, 2, 3, {"a": s}))
    n = c["neurons"][0]
    assert n["spikes"] == 3 and n["firing_rate"] == pytest.approx(3 / 24) and n["spikes_per_timestep"] == [1, 2]
    r = row(c, "d")
    assert r["zero_weights"] == 3 and r["connection_sparsity"] == pytest.approx(3 / 8)
    assert r["dense_ops"] == 8 * 2 * 3 and r["analytic_acs"] == pytest.approx(3 / 24 * 48)
    assert c["totals"]["connection_sparsity"] == pytest.approx(3 / 9)  # c0 has 1 non-zero weight
    assert c["totals"]["activation_sparsity"] == pytest.approx(21 / 24)


def test_recording_mismatch_is_a_user_error():
    g = graph((1, 4, 4), ("c", conv(1, 1, 3, padding=1)), ("a", lif()))
    rec = SpikeRecording({"zzz": np.zeros((1, 1, 1, 4, 4), np.uint8)}, np.zeros((1, 1, 1, 4, 4)), None, None, {})
    with pytest.raises(UserError, match="missing LIF layer"):
        count_ops(g, rec)
    rec = SpikeRecording({"a": np.zeros((1, 1, 2, 4, 4), np.uint8)}, np.zeros((1, 1, 1, 4, 4)), None, None, {})
    with pytest.raises(UserError, match="layer 'a' has shape"):
        count_ops(g, rec)


# -- loop-based reference on a random graph --------------------------------------------------


def _ref_edges(node, in_shape):
    """Loop over every output and every tap: pre index → set of post indices (structure only)."""
    edges = {}
    c_in, h, w = in_shape if len(in_shape) == 3 else (None, None, None)
    if isinstance(node, Conv2dNode):
        cout, cin_g, kh, kw = node.weight.shape
        _, ho, wo = node.out_shape(in_shape)
        for co, oh, ow in itertools.product(range(cout), range(ho), range(wo)):
            grp = co // (cout // node.groups)
            for ci, i, j in itertools.product(range(cin_g), range(kh), range(kw)):
                ih = oh * node.stride[0] - node.padding[0] + i * node.dilation[0]
                iw = ow * node.stride[1] - node.padding[1] + j * node.dilation[1]
                if 0 <= ih < h and 0 <= iw < w:
                    edges.setdefault((grp * cin_g + ci, ih, iw), set()).add((co, oh, ow))
    elif isinstance(node, PoolNode):
        _, ho, wo = node.out_shape(in_shape)
        for c, oh, ow in itertools.product(range(c_in), range(ho), range(wo)):
            for i, j in itertools.product(range(node.kernel_size[0]), range(node.kernel_size[1])):
                ih = oh * node.stride[0] - node.padding[0] + i
                iw = ow * node.stride[1] - node.padding[1] + j
                if 0 <= ih < h and 0 <= iw < w:
                    edges.setdefault((c, ih, iw), set()).add((c, oh, ow))
    elif isinstance(node, FlattenNode):
        for k, idx in enumerate(itertools.product(*map(range, in_shape))):
            edges[idx] = {(k,)}
    elif isinstance(node, DenseNode):
        for i in range(node.weight.shape[1]):
            edges[(i,)] = {(o,) for o in range(node.weight.shape[0])}
    else:  # identity into a LIF
        for idx in itertools.product(*map(range, in_shape)):
            edges[idx] = {idx}
    return edges


def _reference_acs(g, conn, spikes_tb):
    """For every spike, walk its synapses node by node and count the distinct outputs reached."""
    path = [*conn.via, conn.node]
    maps, shape = [], g.shapes[conn.source]
    for name in path:
        maps.append(_ref_edges(g.nodes[name], shape))
        shape = g.shapes[name]
    per_t = []
    for t in range(spikes_tb.shape[0]):
        total = 0
        for spike in np.argwhere(spikes_tb[t]):
            reached = {tuple(int(v) for v in spike[1:])}
            for m in maps:
                reached = set().union(*(m.get(r, set()) for r in reached))
            total += len(reached)
        per_t.append(total)
    return per_t


def test_counter_matches_loop_reference_on_random_graph():
    rng = np.random.default_rng(7)
    w = lambda *s: rng.normal(size=s) * (rng.random(s) > 0.3)  # noqa: E731  (some zero weights)
    nodes = OrderedDict(
        input=InputNode((2, 7, 7)),
        c1=Conv2dNode(w(4, 2, 3, 3), np.zeros(4), 1, 1),           # → (4,7,7)
        a1=LIFNode(2.0, 0.5),
        c2=Conv2dNode(w(4, 2, 3, 3), np.zeros(4), 2, 1, 1, 2),     # stride 2, groups 2 → (4,4,4)
        a2=LIFNode(2.0, 0.5),
        c3=Conv2dNode(w(4, 4, 3, 3), np.zeros(4), 1, 2, 2),        # dilation 2, padding 2 → (4,4,4)
        p1=PoolNode("avg", 3, 2, 1),                                 # a1 pooled, overlapping → (4,4,4)
        a3=LIFNode(2.0, 0.5),                                        # c3 + pooled skip from a1
        p2=PoolNode("sum", 2, 1, 1),                                 # overlapping, padded → (4,5,5)
        c4=Conv2dNode(w(5, 4, 3, 3), np.zeros(5), 2, 1),            # → (5,3,3)
        a4=LIFNode(2.0, 0.5),
        fl=FlattenNode(),
        d=DenseNode(w(3, 45), np.zeros(3)),
        output=OutputNode(),
    )
    edges = [("input", "c1"), ("c1", "a1"), ("a1", "c2"), ("c2", "a2"), ("a2", "c3"), ("c3", "a3"),
             ("a1", "p1"), ("p1", "a3"), ("a3", "p2"), ("p2", "c4"), ("c4", "a4"), ("a4", "fl"),
             ("fl", "d"), ("d", "output")]
    g = StudentGraph(nodes, edges)
    T, S = 3, 2
    layers = {n: (rng.random((T, S, *g.shapes[n])) < 0.3).astype(np.uint8)
              for n, v in g.nodes.items() if isinstance(v, LIFNode)}
    x = rng.random((T, S, 2, 7, 7)).astype(np.float32)
    counts = count_ops(g, SpikeRecording(layers, x, None, None, {}))
    names = {c.name for c in find_connections(g)}
    assert names == {"c1", "c2", "c3", "a1->p1->a3", "c4", "d"}
    for conn in find_connections(g):
        if conn.source == "input":
            continue
        assert row(counts, conn.name)["acs_per_timestep"] == _reference_acs(g, conn, layers[conn.source]), conn.name
    # first layer: every input position × its reference fan-out, each step and sample
    ones = np.ones((1, 1, *g.shapes["input"]), np.uint8)
    per_sample = _reference_acs(g, find_connections(g)[0], ones)[0]
    assert row(counts, "c1")["macs_per_timestep"] == [per_sample * S] * T


# -- SpikingJelly 2.0's op counters where the definitions coincide ----------------------------


def test_spikingjelly_synop_counter_agrees_without_pooling():
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter

    rng = np.random.default_rng(6)
    g = graph((2, 6, 6), ("c1", conv(4, 2, 3, padding=1, weight=rng.normal(size=(4, 2, 3, 3)))), ("a", lif()),
              ("c2", conv(6, 4, 3, stride=2, padding=1, groups=2, weight=rng.normal(size=(6, 2, 3, 3)))),
              ("b", lif()), ("p", PoolNode("avg", 3, 3)),
              ("c3", conv(2, 6, 1, weight=4 * rng.normal(size=(2, 6, 1, 1)))),
              ("c", lif()), ("f", FlattenNode()), ("d", dense(3, 2, weight=rng.normal(size=(3, 2)))))
    x = np.repeat(rng.random((1, 4, 2, 6, 6)), 3, axis=0)
    layers = record_float(g, x)
    assert all(v.any() for v in layers.values())  # every layer fired
    counts = count_ops(g, SpikeRecording(layers, x.astype(np.float32), None, None, {}))

    def sj_counts(name, inp):
        node = g.nodes[name]
        if isinstance(node, Conv2dNode):
            m = torch.nn.Conv2d(node.weight.shape[1] * node.groups, node.weight.shape[0], node.weight.shape[2],
                                node.stride, node.padding, node.dilation, node.groups, bias=False)
        else:
            m = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0], bias=False)
        m.weight.data = torch.as_tensor(node.weight, dtype=torch.float32)
        syn, mac = SynOpCounter(), MACCounter()
        with torch.no_grad(), DispatchCounterMode([syn, mac]):
            for t in range(inp.shape[0]):  # one call per step, like a multi-step layer
                m(torch.as_tensor(inp[t], dtype=torch.float32))
        return syn.get_total(), mac.get_total()

    # spikes straight into conv / dense: SynOps = our ACs (both structural fan-outs)
    assert sj_counts("c2", layers["a"]) == (row(counts, "c2")["acs"], 0)
    assert sj_counts("d", layers["c"].reshape(3, 4, -1)) == (row(counts, "d")["acs"], 0)
    # first layer: SJ's MACs include the padding taps (Cin·k²·Hout·Wout·Cout = 2·9·36·4 per image
    # and step); ours count real input positions only: along one axis the 6 outputs of a 3-tap,
    # pad-1 conv read 2+3+3+3+3+2 = 16 inputs → 2·16²·4 per image and step
    syn, mac = sj_counts("c1", x)
    assert syn == 0 and mac == 2 * 9 * 36 * 4 * 4 * 3
    assert row(counts, "c1")["macs"] == 2 * 16 * 16 * 4 * 4 * 3
    # average pooling before c3: SJ sees non-binary input → MACs on the pooled map; we fold the
    # pool and count ACs at the folded fan-out (each (6,3,3) spike → its pooled position → 2 outputs)
    pooled = torch.nn.functional.avg_pool2d(torch.as_tensor(layers["b"].reshape(12, 6, 3, 3), dtype=torch.float32), 3)
    syn, mac = sj_counts("c3", pooled.reshape(3, 4, 6, 1, 1).numpy())
    assert syn == 0 and mac == 6 * 2 * 4 * 3
    assert row(counts, "c3")["acs"] == 2 * int(layers["b"].sum()) and row(counts, "c3")["macs"] == 0


# -- NeuroBench's definitions, written out -----------------------------------------------------


def test_neurobench_effective_ops_hand_counts():
    # (3,) spikes → dense 3 → 2 with one zero weight: NeuroBench counts non-zero weights only
    wd = np.array([[0.0, 1, 1], [1, 1, 1]])
    g = graph((3,), ("d0", dense(3, 3)), ("a", lif()), ("d", dense(2, 3, weight=wd)), ("b", lif()))
    s = np.zeros((1, 1, 3), np.uint8)
    s[0, 0, [0, 2]] = 1
    c = count_ops(g, recording(g, 1, 1, {"a": s}))
    r = row(c, "d")
    assert r["acs"] == 4  # ours: 2 spikes × 2 rows (a zero weight is still a synapse)
    assert (r["neurobench_eff_acs"], r["neurobench_eff_macs"]) == (1 + 2, 0)
    # the encoding layer: NeuroBench counts non-zero pixels × non-zero weights: 2 pixels × 3
    x = np.array([[[0.5, 0.0, 0.25]]], np.float32)
    c = count_ops(g, recording(g, 1, 1, {"a": s}, x=x))
    r0 = row(c, "d0")
    assert r0["macs"] == 9 and (r0["neurobench_eff_acs"], r0["neurobench_eff_macs"]) == (0, 6)


def test_neurobench_avgpool_input_is_macs():
    # (1,2,2) spikes → 2×2 avg pool → (1,1,1) → flatten → dense 1 → 2. Two spikes at step 0 pool
    # to 0.5 (not in {-1,0,1}) → NeuroBench: 1 input × 2 weights = 2 MACs; ours: 2 spikes × 2 = 4 ACs.
    # One spike at step 1 → 0.25 → 2 more MACs.
    g = graph((1, 2, 2), ("c0", conv(1, 1, 1)), ("a", lif()), ("p", PoolNode("avg", 2, 2)), ("f", FlattenNode()),
              ("d", dense(2, 1)), ("b", lif()))
    s = np.zeros((2, 1, 1, 2, 2), np.uint8)
    s[0, 0, 0, 0, 0] = s[0, 0, 0, 1, 1] = s[1, 0, 0, 0, 1] = 1
    r = row(count_ops(g, recording(g, 2, 1, {"a": s})), "d")
    assert r["acs_per_timestep"] == [4, 2]
    assert (r["neurobench_eff_acs"], r["neurobench_eff_macs"]) == (0, 4)
