"""lava-dl netx HDF5 (export/netx_hdf5.py): parameters round-trip as exact integers, folded
pools and layouts compute what ``run_int`` computes, skip edges are rejected by name, and
lava-dl's own netx loads and runs the file in Lava (spikes equal to our emulator's).

netx on this stack: ``make install`` installs lava-dl 0.6.0 and opencv-python-headless
(``--no-deps``, as lava-nc); torchvision cannot load against the CPU torch pin, and netx needs
only its import to succeed — ``hw.netx_reference.import_netx`` says how an empty stand-in
covers that import.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, LIFNode, OutputNode, PoolNode, StudentGraph,
)
from htakl_deploy.export.netx_hdf5 import NETX_BIAS_EXP, READOUT_VTH, read_netx_summary, write_netx
from htakl_deploy.export.quantize import quantize, quantize_input, run_int
from htakl_deploy.hw.netx_reference import import_netx


def _graph(nodes: dict, edges=None) -> StudentGraph:
    names = list(nodes)
    return StudentGraph(OrderedDict(nodes), edges or list(zip(names[:-1], names[1:])))


def _pool_chain(seed=0) -> StudentGraph:
    """conv → LIF → avg pool → strided conv (odd stride/padding) → LIF → sum pool → flatten → dense."""
    rng = np.random.default_rng(seed)
    return _graph(dict(
        input=InputNode((2, 8, 10)),
        c1=Conv2dNode(rng.normal(0, 0.5, (8, 2, 3, 3)), rng.normal(0, 0.1, 8), 1, 1), l1=LIFNode(2.0, 1.0),
        p1=PoolNode("avg", 2, 2),
        c2=Conv2dNode(rng.normal(0, 0.8, (16, 8, 3, 3)), rng.normal(0.2, 0.1, 16), (1, 2), (1, 0)),
        l2=LIFNode(3.0, 1.0),
        p2=PoolNode("sum", (2, 1), (2, 1)), fl=FlattenNode(),
        fc=DenseNode(rng.normal(0, 0.3, (10, 64)), rng.normal(0, 0.1, 10)), output=OutputNode()))


def _digits_convnet():
    """The default convnet on 8×8 digits, BN calibrated on the data so that it fires."""
    from sklearn.datasets import load_digits

    from htakl_deploy.distill.models import build_model
    from htakl_deploy.export.fold import fold_batchnorm
    from htakl_deploy.export.graph import graph_from_classifier

    d = load_digits()
    x = torch.tensor(d.data[:32] / 16.0, dtype=torch.float32).reshape(32, 1, 8, 8)
    x = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    torch.manual_seed(0)
    m = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = 1.0
            torch.nn.init.constant_(mod.weight, 2.0)
            torch.nn.init.constant_(mod.bias, 0.5)
    m.train()
    with torch.no_grad():
        m(x)
    return graph_from_classifier(fold_batchnorm(m).eval().double()), x.double()


@pytest.fixture(scope="module")
def convnet():
    g, x = _digits_convnet()
    return quantize(g), x


def _weighted_layers(summary):
    return [lay for lay in summary["layers"] if lay["type"] in ("conv", "dense")]


def test_parameters_round_trip_as_exact_integers(convnet, tmp_path):
    q, _ = convnet
    path = write_netx(q, tmp_path / "convnet.net")
    s = read_netx_summary(path)
    assert s["attrs"]["format"] == "htakl-deploy-netx" and s["attrs"]["input_message_bits"] == 8
    assert [lay["type"] for lay in s["layers"]] == ["input", "conv", "conv", "flatten", "dense"]
    assert tuple(s["layers"][0]["shape"]) == (1, 8, 8)
    assert tuple(s["layers"][3]["shape"]) == (64 * 4 * 4, 1, 1)
    g = q.graph
    for lay, (wname, target) in zip(_weighted_layers(s), [("stage1.conv", "stage1.act"),
                                                            ("stage2.conv", "stage2.act"), ("fc", "output")]):
        c, t, a = q.connection(wname, target), q.targets[target], lay["attrs"]
        assert a["nodes"].split(",")[-2:] == [wname, target]
        j = int(a["v_scale_exp"])
        assert a["weight_exp"] == c.weight_exp and a["scale_S"] == t.scale and a["bias_exp"] == t.bias_exp
        assert np.array_equal(a["bias_mant"], t.bias_mant)
        # file weight = the integer reaching the neuron at the layer's scale 2**j
        assert np.issubdtype(lay["weight"].dtype, np.integer)
        assert np.array_equal(lay["weight"], c.weight_mant * 2.0 ** (c.weight_exp + j))
        assert tuple(lay["shape"]) == g.shapes[target]
        want_b = np.sign(t.bias_v()) * ((np.abs(t.bias_v() << j) + 32) >> NETX_BIAS_EXP)
        assert np.array_equal(lay["bias"], want_b)
        assert bool(a["bias_exact"]) == bool(np.array_equal(lay["bias"] << NETX_BIAS_EXP, t.bias_v() << j))
        n = lay["neuron"]
        assert n["type"] == "CUBA" and n["iDecay"] == t.du + 1 == 4096 and n["refDelay"] == 1
        if target == "output":
            assert (n["vDecay"], n["vThMant"]) == (4096, READOUT_VTH) and j == 0
        else:
            assert (n["vDecay"], n["vThMant"]) == (t.dv, t.vth << j)
        if c.weight_exp < 0:  # the first conv (1/255 pixel scale): layer scaled, not rounded
            assert 0 < j <= -c.weight_exp and not a["exact"]
        else:
            assert j == 0
    conv = _weighted_layers(s)[1]
    node = g.nodes["stage2.conv"]
    assert tuple(conv["stride"]) == node.stride and tuple(conv["padding"]) == node.padding
    assert tuple(conv["kernelSize"]) == (3, 3) and conv["groups"] == 1 and conv["inChannels"] == 32


def _currents_from_file(summary, rec, q, x):
    """Per weighted layer: the file's weights applied (torch cross-correlation, C-order
    flatten) to what run_int recorded at that layer's source; returns {layer index: a}."""
    out, src = {}, quantize_input(x.numpy(), q.input_scale)
    for i, lay in enumerate(summary["layers"]):
        if lay["type"] not in ("conv", "dense"):
            continue
        h = torch.from_numpy(src.reshape(-1, *src.shape[2:]).astype(np.float64))
        w = torch.from_numpy(lay["weight"].astype(np.float64))
        if lay["type"] == "conv":
            y = F.conv2d(h, w, None, tuple(lay["stride"]), tuple(lay["padding"]), tuple(lay["dilation"]),
                         int(lay["groups"]))
        else:
            y = h.flatten(1) @ w.T
        out[i] = y.numpy().reshape(*src.shape[:2], *y.shape[1:])
        src = rec[lay["attrs"]["nodes"].split(",")[-1]]
    return out


@pytest.mark.parametrize("case", ["convnet", "pools"])
def test_file_weights_give_run_int_currents(case, convnet, tmp_path):
    """Folded pools, weight layout, stride/padding order and flatten order: the file's layer
    applied to the recorded spikes gives run_int's current (× 2**j; exact when exp >= 0)."""
    if case == "convnet":
        q, x = convnet
    else:
        q = quantize(_pool_chain())
        x = torch.rand(3, 4, 2, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, rec = run_int(q, x, record=True)
    assert all(rec[n].mean() > 0.02 for n, v in q.graph.nodes.items() if isinstance(v, LIFNode))
    s = read_netx_summary(write_netx(q, tmp_path / f"{case}.net"))
    if case == "pools":
        assert [lay["type"] for lay in s["layers"]] == ["input", "conv", "conv", "flatten", "dense"]
        assert tuple(s["layers"][2]["kernelSize"]) == (6, 6) and tuple(s["layers"][2]["stride"]) == (2, 4)
        assert s["layers"][2]["attrs"]["nodes"] == "p1,c2,l2" and s["layers"][3]["attrs"]["nodes"] == "fl"
    for i, a_file in _currents_from_file(s, rec, q, x).items():
        lay = s["layers"][i]
        wname = lay["attrs"]["nodes"].split(",")[-2]
        exp, j = int(lay["attrs"]["weight_exp"]), int(lay["attrs"]["v_scale_exp"])
        if exp >= 0:
            assert np.array_equal(a_file, rec[wname]), wname
        else:  # run_int floors after the right shift; the file keeps the 2**j finer current
            assert np.all(np.floor(a_file / 2**j) == rec[wname]), wname


def test_strict_refuses_what_is_not_bit_exact(convnet, tmp_path):
    q, _ = convnet
    with pytest.raises(ValueError, match="'stage1.conv'.*weight_exp"):
        write_netx(q, tmp_path / "strict.net", strict=True)
    assert not (tmp_path / "strict.net").exists()


def _residual(identity: bool) -> StudentGraph:
    rng = np.random.default_rng(1)
    nodes = dict(input=InputNode((4,)), d1=DenseNode(rng.normal(size=(6, 4)), np.zeros(6)), l1=LIFNode(2.0, 1.0),
                 d2=DenseNode(rng.normal(size=(6, 6)), np.zeros(6)))
    edges = [("input", "d1"), ("d1", "l1"), ("l1", "d2")]
    if not identity:
        nodes["d3"] = DenseNode(rng.normal(size=(6, 6)), np.zeros(6))
        edges += [("l1", "d3"), ("d3", "l2")]
    else:
        edges += [("l1", "l2")]
    nodes.update(l2=LIFNode(2.0, 1.0), d4=DenseNode(rng.normal(size=(3, 6)), np.zeros(3)), output=OutputNode())
    edges += [("d2", "l2"), ("l2", "d4"), ("d4", "output")]
    return StudentGraph(OrderedDict(nodes), edges)


@pytest.mark.parametrize("identity", [True, False])
def test_skip_edges_are_rejected_by_name(identity, tmp_path):
    q = quantize(_residual(identity))
    with pytest.raises(ValueError, match="'l2'.*identity" if identity else "'l1' feeds"):
        write_netx(q, tmp_path / "res.net")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("pool, why", [(PoolNode("avg", 2, 1), "stride = kernel"),
                                       (PoolNode("avg", 3, 3), "not a multiple")])
def test_unfoldable_pool_is_rejected_by_name(pool, why, tmp_path):
    rng = np.random.default_rng(0)
    n_in = 4 * int(np.prod(pool.out_shape((4, 8, 8))[1:]))
    q = quantize(_graph(dict(input=InputNode((1, 8, 8)), c1=Conv2dNode(rng.normal(size=(4, 1, 3, 3)), np.zeros(4), 1, 1),
                             l1=LIFNode(2.0, 1.0), p1=pool, fl=FlattenNode(),
                             fc=DenseNode(rng.normal(size=(3, n_in)), np.zeros(3)), output=OutputNode())))
    with pytest.raises(ValueError, match=f"'p1'.*{why}"):
        write_netx(q, tmp_path / "pool.net")


def test_read_summary_names_a_bad_file(tmp_path):
    with pytest.raises(UserError, match="no such netx"):
        read_netx_summary(tmp_path / "missing.net")
    (tmp_path / "junk.net").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="junk.net"):
        read_netx_summary(tmp_path / "junk.net")


# -- lava-dl netx, for real ----------------------------------------------------------------


def _netx_run(netx, path, x_int: np.ndarray, n_steps: int, probes: list[int]):
    """Run the netx file in Lava fixed_pt on integer pixels ``[T, C, H, W]`` (zeros after T);
    returns the spikes of the layers ``probes`` as bool ``[n_steps, C, H, W]`` / ``[n_steps, N]``
    and the last layer's ``v`` ``[n_steps, ...]``."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    net = netx.hdf5.Network(net_config=str(path), input_message_bits=8)
    data = np.zeros((*net.inp.shape, n_steps), np.int32)
    data[..., : x_int.shape[0]] = np.moveaxis(x_int, (0, 1, 2, 3), (3, 2, 1, 0))  # (W, H, C, t)
    src = RingBuffer(data=data)
    src.s_out.connect(net.inp)
    mons = {i: Monitor() for i in probes}
    for i, m in mons.items():
        m.probe(net.layers[i].out, n_steps)
    mon_v = Monitor()
    mon_v.probe(net.layers[-1].neuron.v, n_steps)
    try:
        net.run(condition=RunSteps(num_steps=n_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        got = {i: next(iter(m.get_data().values()))["out"] for i, m in mons.items()}
        v = next(iter(mon_v.get_data().values()))["v"]
    finally:
        net.stop()
    shapes = {i: tuple(net.layers[i].shape) for i in probes}
    out = {}
    for i, s in got.items():  # Lava (W, H, C) → torch (C, H, W)
        s = s.reshape(n_steps, *shapes[i])
        out[i] = (np.transpose(s, (0, 3, 2, 1)) if s.ndim == 4 else s) != 0
    return out, v, net


def test_netx_loads_and_runs_our_file(tmp_path):
    """lava-dl's own ``netx.hdf5.Network`` loads our file and runs it in Lava ``fixed_pt``: every
    LIF layer's spikes equal our emulator's (Lava-aligned integer model) and the readout's ``v``
    equals ``run_int``, each at its own pipeline delay."""
    netx = import_netx()
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.plan import plan_from_quantized

    q = quantize(_pool_chain())
    for c in q.connections:  # exponent >= 0 and no bias: the file is bit-exact and Lava's
        c.weight_mant = (2 * np.round(c.weight_mant * 2.0 ** min(c.weight_exp, 0) / 2)).astype(np.int64)
        c.weight_exp = max(c.weight_exp, 0)  # bias-during-delay steps do not arise
    for t in q.targets.values():
        t.bias_mant = np.zeros_like(t.bias_mant)
    x = torch.rand(4, 1, 2, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out_ref = run_int(q, x)[:, 0]
    path = write_netx(q, tmp_path / "pools.net")
    n_steps = x.shape[0] + 3
    spikes, v, net = _netx_run(netx, path, quantize_input(x[:, 0].numpy()), n_steps, probes=[0, 1])
    assert len(net.layers) == 3 and tuple(net.layers[0].shape) == (10, 8, 8)  # (W, H, C)
    k = len(net.layers)  # one step of delay per conv/dense hop
    assert np.array_equal(v[k:k + x.shape[0]], out_ref)
    assert np.abs(out_ref).max() > 0
    # our emulator on the same inputs (its spikes are per sample step: Lava's pipeline offsets removed)
    emu = emulate(plan_from_quantized(q), x.numpy())
    for i, pop in enumerate(["l1", "l2"]):
        want = emu.spikes[pop][:, 0]
        got = spikes[i][i + 1:i + 1 + x.shape[0]]  # netx layer i: step t at Lava step t + i + 1
        assert want.shape == got.shape, (pop, want.shape, got.shape)
        assert want.any() and np.array_equal(got, want), (pop, int((got != want).sum()))


def test_export_names_the_layers_netx_cannot_express_exactly(convnet, tmp_path):
    """The digits convnet's first conv has weight_exp < 0 (its weights carry the 1/255 pixel scale)
    and biases that are not multiples of 64: export says which layer and why."""
    from htakl_deploy.export.pipeline import write_netx_target

    q, _ = convnet
    first = q.connection("stage1.conv", "stage1.act")
    assert first.weight_exp < 0
    report = write_netx_target(q, tmp_path)
    by_nodes = {layer["nodes"].split(",")[-2]: layer["why"] for layer in report["inexact_layers"]}
    assert "weight_exp" in by_nodes["stage1.conv"] and "no netx equivalent" in by_nodes["stage1.conv"]
    for layer in read_netx_summary(tmp_path / "student.netx.h5")["layers"][1:]:
        a = layer["attrs"]
        if layer["type"] in ("conv", "dense"):  # why is empty exactly when the layer is exact
            assert bool(a["exact"]) == (a["inexact_why"] == ""), a


def test_spiking_last_layer_ends_the_netx_file(tmp_path):
    """A graph whose output reads its last LIF's spikes (Sinabs' CNNs end so): the netx file ends in
    that layer (``readout = spikes``), and lava-dl's netx runs it with the emulator's spikes there."""
    netx = import_netx()
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.plan import plan_from_quantized

    g = _pool_chain()
    nodes = dict(g.nodes)
    nodes.pop("output")
    nodes["l3"], nodes["output"] = LIFNode(2.0, 0.5), OutputNode()
    edges = [e for e in g.edges if e[1] != "output"] + [("fc", "l3"), ("l3", "output")]
    q = quantize(StudentGraph(nodes, edges))
    for c in q.connections:  # exponent >= 0 and no bias: the file is bit-exact (as above)
        c.weight_mant = (2 * np.round(c.weight_mant * 2.0 ** min(c.weight_exp, 0) / 2)).astype(np.int64)
        c.weight_exp = max(c.weight_exp, 0)
    for t in q.targets.values():
        t.bias_mant = np.zeros_like(t.bias_mant)
    path = write_netx(q, tmp_path / "spiking.net")
    summary = read_netx_summary(path)
    assert summary["attrs"]["readout"] == "spikes" and [la["type"] for la in summary["layers"]][-1] == "dense"
    assert summary["layers"][-1]["neuron"]["vThMant"] < 2**17  # a neuron that fires, not a readout
    x = torch.rand(6, 1, 2, 8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    spikes, _, net = _netx_run(netx, path, quantize_input(x[:, 0].numpy()), x.shape[0] + 4, probes=[2])
    want = emulate(plan_from_quantized(q), x.numpy()).spikes["l3"][:, 0]
    assert want.any() and np.array_equal(spikes[2][3:3 + x.shape[0]], want)
