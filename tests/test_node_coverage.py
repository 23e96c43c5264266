"""Node coverage beyond the students' own layers, each with its Loihi semantics checked: grouped
and dilated convolutions (emulator = timestep-aligned integer model = real Lava ``fixed_pt`` on
every spike, through Lava's Sparse and its Conv; op counts against the convolution's own
structure), and float run = NIR round trip."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from htakl_deploy.energy.counter import find_connections, fanout
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, LIFNode, OutputNode, StudentGraph, run_float,
)
from htakl_deploy.export.nir_io import from_nir, read_nir, write_nir
from htakl_deploy.export.quantize import quantize, run_int
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import conv_matrix, plan_from_quantized
from htakl_deploy.hw.simulate import spike_agreement

T = 4


def _check_deploys(graph: StudentGraph, x: np.ndarray, *, lava_samples: int = 3, active=(), worker: bool = True):
    """Emulator = the timestep-aligned integer model on every spike and readout value; real Lava
    fixed_pt = emulator on ``lava_samples`` samples; the ``active`` layers spike, not always."""
    from htakl_deploy.hw.lava_net import run_lava

    q = quantize(graph)
    plan = plan_from_quantized(q)
    emu = emulate(plan, x)
    out, vals = run_int(q, x, record=True)
    for name, s in emu.spikes.items():
        np.testing.assert_array_equal(s, vals[name].astype(bool), err_msg=name)
    for name in active:
        assert 0.02 < emu.spikes[name].mean() < 0.9, (name, emu.spikes[name].mean())
    np.testing.assert_array_equal(emu.readout_u + q.targets["output"].bias_v().reshape(1, 1, -1), out)
    lava = run_lava(plan, x[:, :lava_samples], backend="fixed_pt", worker=worker)
    sub = emulate(plan, x[:, :lava_samples])
    assert spike_agreement(lava.spikes, sub.spikes)["all"] == 1.0
    np.testing.assert_array_equal(lava.readout_u, sub.readout_u)
    return plan


def _float_round_trip(graph: StudentGraph, x: np.ndarray, tmp_path) -> StudentGraph:
    """Our float NIR file reads back to a graph with the same float outputs, bit for bit."""
    path = write_nir(graph, tmp_path / "float.nir")
    import nir

    nir.read(path)  # plain nir.read (its default type check) loads our file
    again = from_nir(read_nir(path))
    for name, node in graph.nodes.items():  # the same node types and groups come back
        assert type(again.nodes[name]) is type(node) and getattr(again.nodes[name], "groups", 1) == getattr(
            node, "groups", 1), name
    xt = torch.from_numpy(x)
    np.testing.assert_array_equal(run_float(graph, xt).numpy(), run_float(again, xt).numpy())
    return again


def grouped_dilated_graph(seed: int = 0) -> StudentGraph:
    rng = np.random.default_rng(seed)
    nodes = OrderedDict(
        input=InputNode((2, 9, 9)),
        c1=Conv2dNode(rng.normal(0.2, 0.9, (4, 1, 3, 3)), rng.normal(0.3, 0.05, 4), padding=(2, 2), dilation=(2, 2),
                      groups=2),
        a1=LIFNode(2.0, 1.0),
        c2=Conv2dNode(rng.normal(0.1, 0.7, (6, 2, 3, 3)), rng.normal(0.3, 0.05, 6), stride=(2, 1), padding=(1, 2),
                      dilation=(1, 2), groups=2),
        a2=LIFNode(2.0, 1.0),
        flat=FlattenNode(),
        fc=DenseNode(rng.normal(0, 0.3, (3, 6 * 5 * 9)), np.zeros(3)),
        output=OutputNode(),
    )
    edges = [("input", "c1"), ("c1", "a1"), ("a1", "c2"), ("c2", "a2"), ("a2", "flat"), ("flat", "fc"),
             ("fc", "output")]
    return StudentGraph(nodes, edges)


@pytest.mark.parametrize("lava_conv", [False, True], ids=["sparse", "lava-conv"])
def test_grouped_dilated_convs_deploy_exactly(lava_conv, monkeypatch, tmp_path):
    from htakl_deploy.hw import lava_net

    if lava_conv:  # the builder picks Sparse for kernels this small: force Lava's Conv process
        monkeypatch.setattr(lava_net, "SPARSE_FAST_NNZ", 0)
    graph = grouped_dilated_graph()
    assert graph.shapes["a1"] == (4, 9, 9) and graph.shapes["a2"] == (6, 5, 9)
    x = torch.rand(T, 8, 2, 9, 9, generator=torch.Generator().manual_seed(1)).double().numpy()
    # with Lava's Conv forced, Lava runs in this process (worker=False): the monkeypatch holds there
    plan = _check_deploys(graph, x, active=("a1", "a2"), worker=not lava_conv)
    c2 = next(link for link in plan.links if link.name == "c2")
    assert c2.kind == "conv" and c2.conv["dilation"] == (1, 2) and c2.conv["groups"] == 2
    assert lava_net._as_lava_conv(c2, plan.populations["a2"].shape) is lava_conv
    if lava_conv:
        from htakl_deploy.export.quantize import quantize_input
        from htakl_deploy.hw.emulator import input_currents

        net = lava_net.build_network(plan, input_currents(plan, quantize_input(x[:, :1], plan.input_scale)))
        assert type(net.links["c2"]).__name__ == "Conv"
    _float_round_trip(graph, x, tmp_path)
    # the quantised file: plain nir.read loads it, and it reads back to the same deployed network
    import nir

    q = quantize(graph)
    path = write_nir(graph, tmp_path / "quant.nir", q)
    nir.read(path)
    again = from_nir(read_nir(path))
    assert again.graph.nodes["c2"].groups == 2
    a, b = emulate(plan_from_quantized(q), x), emulate(plan_from_quantized(again), x)
    assert spike_agreement(a.spikes, b.spikes)["all"] == 1.0
    np.testing.assert_array_equal(a.readout_u, b.readout_u)


def test_grouped_dilated_fanout_is_the_convolutions_structure():
    """A source neuron's fan-out (op counter) = the outputs whose kernel taps reach it: the
    non-zero count of its column in the convolution matrix of an all-ones kernel."""
    graph = grouped_dilated_graph()
    for conn in find_connections(graph):
        node = graph.nodes[conn.node]
        if not isinstance(node, Conv2dNode) or conn.source == "input":
            continue
        m = conv_matrix(np.ones_like(node.weight), graph.shapes[conn.source], node.stride, node.padding,
                        node.dilation, node.groups)
        want = np.diff(m.tocsc().indptr).reshape(graph.shapes[conn.source])
        np.testing.assert_array_equal(fanout(graph, conn), want)


def dense_first_graph(seed: int = 0, flat_input: bool = False) -> StudentGraph:
    """input (1, 6, 6) → Flatten → Affine → LIF → Affine → LIF → Affine → output: no conv at all
    (``flat_input``: a 1-D input (36,) straight into the first Affine)."""
    rng = np.random.default_rng(seed)
    nodes = OrderedDict(
        input=InputNode((36,) if flat_input else (1, 6, 6)), flat=FlattenNode(),
        fc1=DenseNode(rng.normal(0.05, 0.4, (20, 36)), rng.normal(0.2, 0.05, 20)), a1=LIFNode(2.0, 1.0),
        fc2=DenseNode(rng.normal(0.1, 0.6, (12, 20)), np.zeros(12)), a2=LIFNode(2.0, 1.0),
        fc3=DenseNode(rng.normal(0, 0.5, (3, 12)), rng.normal(0, 0.1, 3)), output=OutputNode(),
    )
    edges = [("input", "flat"), ("flat", "fc1"), ("fc1", "a1"), ("a1", "fc2"), ("fc2", "a2"), ("a2", "fc3"),
             ("fc3", "output")]
    return StudentGraph(nodes, edges)


@pytest.mark.parametrize("flat_input", [False, True], ids=["image-flatten", "vector"])
def test_dense_first_layer_deploys_exactly(flat_input, tmp_path):
    """A dense first layer straight from the (flattened) input: its integer matrix is the off-chip
    input link, as a first conv's kernel is."""
    graph = dense_first_graph(flat_input=flat_input)
    x = torch.rand(T, 8, 1, 6, 6, generator=torch.Generator().manual_seed(2)).double().numpy()
    x = x.reshape(T, 8, 36) if flat_input else x
    plan = _check_deploys(graph, x, active=("a1", "a2"))
    first = plan.input_link
    assert first.name == "fc1" and first.conv is None and first.matrix.shape == (20, 36)
    _float_round_trip(graph, x, tmp_path)
    from htakl_deploy.hw.lava_net import run_lava

    lava = run_lava(plan, x[:, :3], backend="floating_pt")  # Lava's float model tracks the float graph
    out, vals = run_float(graph, torch.from_numpy(x[:, :3]), record=True)
    np.testing.assert_allclose(lava.logits, out.numpy(), atol=1e-6)


def overlapping_pool_graph(seed: int = 0) -> StudentGraph:
    """Overlapping, padded average pool (3×3, stride 2, padding 1) before a conv, an overlapping sum
    pool (2×2, stride 1) before a dense layer, and an identity skip through the average pool."""
    from htakl_deploy.export.graph import PoolNode

    rng = np.random.default_rng(seed)
    nodes = OrderedDict(
        input=InputNode((1, 8, 8)),
        c1=Conv2dNode(rng.normal(0.2, 0.9, (4, 1, 3, 3)), rng.normal(0.3, 0.05, 4), padding=(1, 1)),
        a1=LIFNode(2.0, 1.0),
        avg=PoolNode("avg", (3, 3), (2, 2), (1, 1)),
        c2=Conv2dNode(rng.normal(0.3, 0.8, (4, 4, 3, 3)), rng.normal(0.1, 0.05, 4), padding=(1, 1)),
        a2=LIFNode(2.0, 1.0),  # + identity skip from a1 through the average pool
        sum=PoolNode("sum", (2, 2), (1, 1)),
        flat=FlattenNode(),
        fc=DenseNode(rng.normal(0, 0.3, (3, 36)), np.zeros(3)),
        output=OutputNode(),
    )
    edges = [("input", "c1"), ("c1", "a1"), ("a1", "avg"), ("avg", "c2"), ("c2", "a2"), ("avg", "a2"),
             ("a2", "sum"), ("sum", "flat"), ("flat", "fc"), ("fc", "output")]
    return StudentGraph(nodes, edges)


def test_overlapping_pools_deploy_exactly(tmp_path):
    """A spike inside several pooled positions reaches the next layer through the sum of their
    weights (the plan composes the pool into the synapses); the quantiser raises the exponent until
    those sums fit Lava's 8 bits, so the deployed network stays exact."""
    graph = overlapping_pool_graph()
    x = torch.rand(T, 8, 1, 8, 8, generator=torch.Generator().manual_seed(3)).double().numpy()
    plan = _check_deploys(graph, x, active=("a1", "a2"))
    for link in plan.links:
        if link.src != "input":
            assert abs(link.int_matrix(plan.populations[link.src].shape)).max() <= 254, link.name
    q = quantize(graph)
    raw = quantize.__globals__["_quantise_weights"]  # what the exponent would be without the overlap
    c2 = q.connection("c2", "a2")
    assert c2.weight_exp > raw(np.asarray(graph.nodes["c2"].weight) / 9.0, q.targets["a2"].scale / 2.0)[1]
    _float_round_trip(graph, x, tmp_path)


def conv1d_nir(seed: int = 0):
    """Input (2, 16) → Conv1d → LIF → Conv1d (groups 2, stride 2, dilation 2) → IF → Flatten →
    Affine → Output, written by hand."""
    import nir

    rng = np.random.default_rng(seed)
    full = lambda v, s: np.full(s, v)  # noqa: E731
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 16])}),
        "c1": nir.Conv1d(input_shape=16, weight=rng.normal(0.2, 0.9, (4, 2, 3)), stride=1, padding=1, dilation=1,
                         groups=1, bias=full(0.3, 4)),
        "lif": nir.LIF(tau=full(2e-4, (4, 16)), r=full(1.0, (4, 16)), v_leak=full(0.0, (4, 16)),
                       v_threshold=full(1.0, (4, 16)), v_reset=full(0.0, (4, 16))),
        "c2": nir.Conv1d(input_shape=16, weight=rng.normal(0.3, 0.8, (6, 2, 3)), stride=2, padding=2, dilation=2,
                         groups=2, bias=full(0.1, 6)),
        "if": nir.IF(r=full(1e4, (6, 8)), v_threshold=full(1.0, (6, 8)), v_reset=full(0.0, (6, 8))),
        "flat": nir.Flatten(input_type={"input": np.array([6, 8])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.4, (3, 48)), bias=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "c1"), ("c1", "lif"), ("lif", "c2"), ("c2", "if"), ("if", "flat"), ("flat", "fc"),
             ("fc", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_conv1d_deploys_exactly_and_is_written_back_as_conv1d(tmp_path, capsys):
    import json

    import nir

    from htakl_deploy.cli import main
    from htakl_deploy.export.nodes.conv1d import Conv1dNode

    graph = from_nir(conv1d_nir())
    assert isinstance(graph.nodes["c2"], Conv1dNode) and graph.shapes["if"] == (6, 8)
    x = torch.rand(T, 8, 2, 16, generator=torch.Generator().manual_seed(5)).double().numpy()
    plan = _check_deploys(graph, x, active=("lif", "if"))
    assert plan.input_link.matrix.shape == (64, 32) and plan.populations["if"].shape == (6, 8)
    # float: torch's conv1d against a loop over the taps
    w, b = graph.nodes["c2"].weight, graph.nodes["c2"].bias
    h = np.random.default_rng(1).normal(size=(1, 1, 4, 16))
    got = graph.nodes["c2"].run_float(torch.from_numpy(h)).numpy()[0, 0]
    hp = np.pad(h[0, 0], ((0, 0), (2, 2)))
    want = np.array([[b[o] + sum(w[o, ci, k] * hp[(o // 3) * 2 + ci, 2 * j + 2 * k] for ci in range(2) for k in range(3))
                      for j in range(8)] for o in range(6)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    again = _float_round_trip(graph, x, tmp_path)
    assert isinstance(again.nodes["c1"], Conv1dNode)
    # op counts: a spike's fan-out is the convolution's structure
    conn = next(c for c in find_connections(graph) if c.node == "c2")
    m = graph.nodes["c2"].matrix(np.ones_like(w), graph.shapes["lif"])
    np.testing.assert_array_equal(fanout(graph, conn), np.diff(m.tocsc().indptr).reshape(4, 16))
    # the CLI: export with its Lava check, the quantised file reads back with Conv1d nodes
    path = tmp_path / "c1d.nir"
    nir.write(path, conv1d_nir())
    out = tmp_path / "out"
    assert main(["export", "--json", str(path), "--target", "nir", "lava", "--lava-check", "3", "--out", str(out)]) == 0
    check = json.loads(capsys.readouterr().out)["lava"]["lava_check"]
    assert check["spike_agreement"]["all"] == 1.0 and check["readout_identical"]
    assert type(nir.read(out / "student_quant.nir").nodes["c2"]).__name__ == "Conv1d"  # NIR's own type check
    # netx has no 1-D conv: refused naming the node, nothing written
    assert main(["export", str(path), "--target", "netx", "--out", str(tmp_path / "netx")]) == 2
    assert "node 'c1' (Conv1dNode): netx has no such layer" in capsys.readouterr().err
    assert not (tmp_path / "netx").exists()


def test_dense_first_nir_file_simulates_and_counts(tmp_path, capsys):
    """The whole chain on a dense-first NIR file: `simulate MODEL.nir --data digits` (quantised on
    the fly, emulator) and `energy`, whose encoding-layer MACs are the hand count: every pixel × its
    20 synapses, every step of every sample."""
    import json

    from htakl_deploy.cli import main

    rng = np.random.default_rng(0)
    graph = StudentGraph(OrderedDict(
        input=InputNode((1, 8, 8)), flat=FlattenNode(),
        fc1=DenseNode(rng.normal(0.05, 0.3, (20, 64)), np.zeros(20)), a1=LIFNode(2.0, 1.0),
        fc2=DenseNode(rng.normal(0, 0.5, (10, 20)), np.zeros(10)), output=OutputNode()),
        [("input", "flat"), ("flat", "fc1"), ("fc1", "a1"), ("a1", "fc2"), ("fc2", "output")])
    model = write_nir(graph, tmp_path / "dense.nir")
    assert main(["simulate", "--json", str(model), "--data", "digits", "--backend", "emulator", "--samples", "12",
                 "--out", str(tmp_path / "sim")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 12 and 0.0 < report["firing_rate"]["a1"] < 1.0
    assert main(["energy", str(tmp_path / "sim" / "spikes.h5"), "--graph",
                 str(tmp_path / "dense-export" / "student_quant.nir"), "--json-out", str(tmp_path / "e.json")]) == 0
    energy = json.loads((tmp_path / "e.json").read_text())
    rows = {r["name"]: r for r in energy["layers"]}
    t = report["timesteps"]
    assert rows["fc1"]["input"] == "analog" and rows["fc1"]["macs"] == 64 * 20 * t * 12
    spikes = next(n["spikes"] for n in energy["neurons"] if n["name"] == "a1")
    assert spikes > 0 and rows["fc2"]["acs"] == 10 * spikes  # each spike reaches the 10 outputs


def test_cubali_readout_with_tau_mem_dt_is_an_li_readout(tmp_path):
    """NIR CubaLI before the Output with tau_mem = dt: v = r·I, one leaky integrator on the current
    (checked against NIR's equations stepped by hand), deployed as the readout's u (Lava = emulator)."""
    import nir

    from htakl_deploy.export.nir_io import to_nir

    graph = dense_first_graph()
    ng = to_nir(graph)
    dt, shape = 1e-4, np.array([3])
    ng.nodes["cubali"] = nir.CubaLI(tau_syn=np.full(shape, 4 * dt), tau_mem=np.full(shape, dt), r=np.full(shape, 1.5),
                                    v_leak=np.zeros(shape), w_in=np.full(shape, 2.0))
    ng.edges.remove(("fc3", "output"))
    ng.edges.extend([("fc3", "cubali"), ("cubali", "output")])
    path = tmp_path / "cubali.nir"
    nir.write(path, ng)
    got = from_nir(read_nir(path))
    assert (got.nodes["output"].beta, got.nodes["output"].r) == (0.25, 3.0)
    x = torch.rand(T, 8, 1, 6, 6, generator=torch.Generator().manual_seed(6)).double()
    out, vals = run_float(got, x, record=True)
    i = v = np.zeros((8, 3))
    for t in range(T):  # NIR's CubaLI, one Euler step each: tau dI/dt = -I + w_in·S, tau_mem dv/dt = -v + r·I
        i = i + 0.25 * (-i + 2.0 * vals["fc3"][t].numpy())
        v = v + 1.0 * (-v + 1.5 * i)
        np.testing.assert_allclose(out[t].numpy(), v, rtol=1e-12, atol=1e-12)
    _check_deploys(got, x.numpy(), active=("a1", "a2"))
    ng.nodes["cubali"] = nir.CubaLI(tau_syn=np.full(shape, 4 * dt), tau_mem=np.full(shape, 2 * dt),
                                    r=np.full(shape, 1.5), v_leak=np.zeros(shape), w_in=np.full(shape, 2.0))
    nir.write(path, ng)
    from htakl_deploy.errors import UserError

    with pytest.raises(UserError, match="NIR node 'cubali': a CubaLI readout maps to Loihi only with tau_mem = dt"):
        from_nir(read_nir(path))


def test_conv1d_op_counts_against_the_hand_count():
    """Counting a Conv1d network's emulated spikes: the encoding conv's MACs are its synapses × T ×
    samples, the spike conv's ACs each spike × its column of the convolution matrix, NeuroBench's
    effective ops run through the node's own conv1d."""
    from htakl_deploy.energy.counter import count_ops
    from htakl_deploy.energy.spikefile import SpikeRecording

    graph = from_nir(conv1d_nir())
    x = torch.rand(T, 6, 2, 16, generator=torch.Generator().manual_seed(7)).double().numpy()
    emu = emulate(plan_from_quantized(quantize(graph)), x)
    layers = {k: v.astype(np.uint8) for k, v in emu.spikes.items()}
    counts = count_ops(graph, SpikeRecording(layers, emu.input_int.astype(np.float32), None, None, {}))
    rows = {r["name"]: r for r in counts["layers"]}
    c1, c2 = graph.nodes["c1"], graph.nodes["c2"]
    syn1 = c1.matrix(np.ones_like(c1.weight), (2, 16)).nnz
    assert rows["c1"]["input"] == "analog" and rows["c1"]["macs"] == syn1 * T * 6
    col = np.diff(c2.matrix(np.ones_like(c2.weight), (4, 16)).tocsc().indptr)  # fan-out per source neuron
    assert rows["c2"]["acs"] == int((layers["lif"].reshape(T, 6, -1).sum((0, 1)) * col).sum()) > 0
    assert rows["c2"]["neurobench_eff_acs"] is not None and rows["c2"]["neurobench_eff_acs"] > 0


@pytest.mark.parametrize("pool", [(2, 2, 0), (3, 1, 1)], ids=["2x2", "overlapping-3x3-s1-p1"])
def test_pool_on_the_input_before_the_first_conv(pool, tmp_path):
    """An average pool on the pixels before the first conv: the input link is then the composed
    matrix (pool into conv), computed off-chip; an overlapping pool raises the exponent so its
    summed weights stay 8-bit like any other link's."""
    from htakl_deploy.export.graph import PoolNode

    k, st, p = pool
    rng = np.random.default_rng(0)
    side = (8 + 2 * p - k) // st + 1
    graph = StudentGraph(OrderedDict(
        input=InputNode((1, 8, 8)), pool=PoolNode("avg", (k, k), (st, st), (p, p)),
        c1=Conv2dNode(rng.normal(0.3, 0.9, (4, 1, 3, 3)), rng.normal(0.2, 0.05, 4), padding=(1, 1)),
        a1=LIFNode(2.0, 1.0), flat=FlattenNode(),
        fc=DenseNode(rng.normal(0, 0.3, (3, 4 * side * side)), np.zeros(3)), output=OutputNode()),
        [("input", "pool"), ("pool", "c1"), ("c1", "a1"), ("a1", "flat"), ("flat", "fc"), ("fc", "output")])
    x = torch.rand(T, 8, 1, 8, 8, generator=torch.Generator().manual_seed(8)).double().numpy()
    plan = _check_deploys(graph, x, active=("a1",))
    assert plan.input_link.conv is None and plan.input_link.matrix.shape == (4 * side * side, 64)
    _float_round_trip(graph, x, tmp_path)
