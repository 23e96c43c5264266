"""Neuron node families (export/nodes/): float semantics against loop references, and the
Loihi mapping checked by running quantised graphs with CubaLIF and IF layers (Lava = emulator,
fixed point ≈ float)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.export.graph import CubaLIFNode, IFNode, LIFNode, NeuronNode, run_float
from htakl_deploy.export.nir_io import from_nir, read_nir
from htakl_deploy.export.nodes import FAMILIES
from htakl_deploy.export.quantize import QuantizedGraph, quantize, run_int
from htakl_deploy.hw.plan import load_plan


def _loop_cuba(x, alpha, beta, r, w_in, th):
    """NIR CubaLIF, one Euler step per time step, written out element by element."""
    i = v = 0.0
    out = []
    for xt in x:
        i = i + alpha * (-i + w_in * xt)
        v = v + beta * (-v + r * i)
        s = v >= th
        out.append(float(s))
        v = 0.0 if s else v
    return out


def _loop_if(x, gain, th):
    v, out = 0.0, []
    for xt in x:
        v = v + gain * xt
        out.append(float(v >= th))
        v = 0.0 if v >= th else v
    return out


def test_float_semantics_match_loop_references():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 1.5, (30, 5))
    cuba = CubaLIFNode(alpha=0.5, beta=0.25, r=2.0, w_in=1.5, v_threshold=1.0)
    got = cuba.run_float(torch.from_numpy(x[:, :, None]))[:, :, 0].numpy()
    want = np.array([_loop_cuba(x[:, b], 0.5, 0.25, 2.0, 1.5, 1.0) for b in range(5)]).T
    np.testing.assert_array_equal(got, want)
    assert 0 < got.mean() < 1
    iff = IFNode(gain=0.7, v_threshold=1.0)
    got = iff.run_float(torch.from_numpy(x[:, :, None]))[:, :, 0].numpy()
    want = np.array([_loop_if(x[:, b], 0.7, 1.0) for b in range(5)]).T
    np.testing.assert_array_equal(got, want)


def test_loihi_parameters():
    """du: Lava keeps 4096 − (du + 1) of u per step; dv: keeps 4096 − dv of v."""
    cuba = CubaLIFNode(alpha=0.25, beta=0.125, r=8.0, w_in=4.0, v_threshold=1.0).loihi()
    assert (cuba.du, cuba.dv) == (1023, 512)
    assert cuba.input_divisor == 1.0  # β·r·α·w_in = 1: snnTorch's / SpikingJelly's convention
    assert (IFNode(1.0, 2.0).loihi().du, IFNode(1.0, 2.0).loihi().dv) == (4095, 0)
    lif = LIFNode(2.0, 1.0).loihi()
    assert (lif.du, lif.dv, lif.input_divisor) == (4095, 2048, 2.0)
    assert all(issubclass(f, NeuronNode) and f.NIR_TYPE is not None for f in FAMILIES)


def _graph(shape=(1, 6, 6)) -> nir.NIRGraph:
    """input → conv → CubaLIF → avg pool → conv → IF → flatten → affine → output, by hand."""
    rng = np.random.default_rng(3)
    c, h, w = 4, 6, 6
    full = lambda v, s: np.full(s, v)  # noqa: E731
    dt = 1e-4
    nodes = {
        "input": nir.Input(input_type={"input": np.array(shape)}),
        "conv1": nir.Conv2d(input_shape=np.array([h, w]), weight=rng.normal(0.3, 0.6, (c, 1, 3, 3)),
                            stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                            bias=np.full(c, 0.1)),
        "cuba": nir.CubaLIF(tau_syn=full(2 * dt, (c, h, w)), tau_mem=full(4 * dt, (c, h, w)), r=full(4.0, (c, h, w)),
                            v_leak=full(0.0, (c, h, w)), v_threshold=full(1.0, (c, h, w)),
                            v_reset=full(0.0, (c, h, w)), w_in=full(2.0, (c, h, w))),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "conv2": nir.Conv2d(input_shape=np.array([3, 3]), weight=rng.normal(0.2, 0.8, (c, c, 3, 3)),
                            stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                            bias=np.zeros(c)),
        "if": nir.IF(r=full(1.0 / dt, (c, 3, 3)), v_threshold=full(1.0, (c, 3, 3)), v_reset=full(0.0, (c, 3, 3))),
        "flat": nir.Flatten(input_type={"input": np.array([c, 3, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.5, (5, c * 9)), bias=np.zeros(5)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("input", "conv1"), ("conv1", "cuba"), ("cuba", "pool"), ("pool", "conv2"), ("conv2", "if"),
             ("if", "flat"), ("flat", "fc"), ("fc", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_cuba_and_if_graph_deploys(tmp_path, capsys):
    path = tmp_path / "cuba_if.nir"
    nir.write(path, _graph())
    out = tmp_path / "out"
    assert main(["export", "--json", str(path), "--target", "nir", "lava", "netx", "--lava-check", "6", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lava"]["lava_check"]["spike_agreement"] == {"all": 1.0, "cuba": 1.0, "if": 1.0}
    assert report["lava"]["lava_check"]["readout_identical"]
    graph = from_nir(read_nir(path))
    assert isinstance(graph.nodes["cuba"], CubaLIFNode) and isinstance(graph.nodes["if"], IFNode)
    plan = load_plan(out / "student.lava.npz")
    assert (plan.populations["cuba"].du, plan.populations["cuba"].dv) == (2047, 1024)  # α = 1/2, β = 1/4
    assert (plan.populations["if"].du, plan.populations["if"].dv) == (4095, 0)
    # the quantised file reads back with the same families and Loihi fields
    q = from_nir(read_nir(out / "student_quant.nir"))
    assert isinstance(q, QuantizedGraph) and isinstance(q.graph.nodes["cuba"], CubaLIFNode)
    assert (q.targets["cuba"].du, q.targets["cuba"].dv) == (2047, 1024)
    # netx: the same neuron as a CUBA layer (iDecay = du + 1)
    from htakl_deploy.export.netx_hdf5 import read_netx_summary

    neurons = [layer["neuron"] for layer in read_netx_summary(out / "student.netx.h5")["layers"] if "neuron" in layer]
    assert (neurons[0]["iDecay"], neurons[0]["vDecay"]) == (2048, 1024)


def test_fixed_point_follows_the_float_dynamics():
    """The integer network (timestep-aligned) against the float graph: the 8-bit rounding and the
    bias (Loihi adds it to v from step 0; through CubaLIF's current it ramps up over ~1/α steps)
    change a few spikes; a wrong current decay changes many more (checked here too)."""
    graph = from_nir(_graph())
    q = quantize(graph)
    x = torch.rand(8, 64, 1, 6, 6, generator=torch.Generator().manual_seed(0)).double()
    _, f_vals = run_float(graph, x, record=True)

    def agreement() -> dict[str, float]:
        _, i_vals = run_int(q, x.numpy(), record=True)
        return {n: float(((f_vals[n].numpy() > 0.5) == (i_vals[n] > 0)).mean()) for n in ("cuba", "if")}

    for name in ("cuba", "if"):
        assert 0.05 < (f_vals[name].numpy() > 0.5).mean() < 0.95, name  # active, not saturated
    good = agreement()  # measured: cuba 0.983, if 0.966
    assert good["cuba"] > 0.975 and good["if"] > 0.96, good
    for wrong_du in (4095, 1023, 3071):  # no current memory, α = 3/4, α = 1/4 instead of 1/2
        q.targets["cuba"].du = wrong_du
        assert agreement()["cuba"] < 0.95


def test_hand_written_graph_with_every_family_li_readout_and_subgraph(tmp_path, capsys):
    """CubaLIF and IF layers, an average pool, a nested subgraph and an LI readout in one hand-written
    NIR graph: deployed like any other (Lava = emulator on every spike and readout value)."""
    g = _graph()
    shape = np.array([5])
    g.nodes["li"] = nir.LI(tau=np.full(shape, 2e-4), r=np.full(shape, 1.5), v_leak=np.zeros(shape))
    g.edges.remove(("fc", "output"))
    g.edges.extend([("fc", "li"), ("li", "output")])
    block = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1, 6, 6])}),
                                "conv1": g.nodes.pop("conv1"), "cuba": g.nodes.pop("cuba"),
                                "out": nir.Output(output_type={"output": np.array([4, 6, 6])})},
                         edges=[("in", "conv1"), ("conv1", "cuba"), ("cuba", "out")], type_check=False)
    g.nodes["block"] = block
    edges = [e for e in g.edges if e not in (("input", "conv1"), ("conv1", "cuba"), ("cuba", "pool"))]
    path = tmp_path / "all.nir"
    nir.write(path, nir.NIRGraph(nodes=g.nodes, edges=edges + [("input", "block"), ("block", "pool")],
                                 type_check=False))
    graph = from_nir(read_nir(path))
    out = graph.nodes[graph.output_name]
    assert (out.beta, out.r, out.du) == (0.5, 1.5, 2047) and "block.cuba" in graph.nodes
    assert main(["export", "--json", str(path), "--target", "nir", "lava", "netx", "--lava-check", "6",
                 "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lava"]["lava_check"]["spike_agreement"]["all"] == 1.0
    assert report["lava"]["lava_check"]["readout_identical"]
    assert load_plan(tmp_path / "out" / "student.lava.npz").readout.du == 2047
    for name in ("student_float.nir", "student_quant.nir"):  # the LI survives our own files
        back = from_nir(read_nir(tmp_path / "out" / name))
        back = back.graph if isinstance(back, QuantizedGraph) else back
        assert (back.nodes[back.output_name].beta, back.nodes[back.output_name].r) == (0.5, 1.5), name
    # the leaky readout integrates: fixed point follows the float logits, and they are not per-step currents
    q = quantize(graph)
    x = torch.rand(8, 32, 1, 6, 6, generator=torch.Generator().manual_seed(1)).double()
    f_out = run_float(graph, x).numpy()
    i_out = run_int(q, x.numpy()) / (64.0 * q.targets[graph.output_name].scale)
    assert np.corrcoef(f_out.ravel(), i_out.ravel())[0, 1] > 0.99
    plain = run_float(from_nir(_graph()), x).numpy()
    assert not np.allclose(f_out, 1.5 * plain)
