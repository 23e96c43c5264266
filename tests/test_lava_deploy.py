"""The deployment plan, the emulator and real Lava runs (issues 5 and 6).

The residual test net has every kind of connection the plan knows: the off-chip input conv, a
plain spike conv (Lava ``Conv``), an identity skip that must be delayed by one step to meet the
main path (``DelaySparse``), an average pool folded into the next conv (``Sparse``), a pooled
identity skip, and flatten → dense (``Dense``). Lava runs are real ``Loihi2SimCfg`` runs.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, LIFNode, OutputNode, PoolNode, StudentGraph, run_float,
)
from htakl_deploy.export.quantize import quantize, run_int
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import conv_matrix, lava_perm, load_plan, plan_from_quantized
from htakl_deploy.hw.simulate import read_artefact, spike_agreement

T = 4


def _conv(rng, cout, cin, scale, **kw):
    return Conv2dNode(rng.normal(0, scale, (cout, cin, 3, 3)), rng.normal(0.3, 0.05, cout), padding=(1, 1), **kw)


def residual_graph(seed: int = 0) -> StudentGraph:
    rng = np.random.default_rng(seed)
    nodes = OrderedDict(
        input=InputNode((1, 6, 6)),
        c1=_conv(rng, 4, 1, 0.9), a1=LIFNode(2.0, 1.0),
        c2=_conv(rng, 4, 4, 0.6), a2=LIFNode(2.0, 1.0),
        c3=_conv(rng, 4, 4, 0.6), a3=LIFNode(2.0, 1.0),  # + identity skip from a1 (delayed)
        pool=PoolNode("avg", (2, 2), (2, 2)),
        c4=_conv(rng, 4, 4, 1.5), a4=LIFNode(2.0, 1.0),  # + pooled identity skip from a3
        flat=FlattenNode(),
        fc=DenseNode(rng.normal(0, 0.3, (3, 36)), rng.normal(0, 0.1, 3)),
        output=OutputNode(),
    )
    edges = [("input", "c1"), ("c1", "a1"), ("a1", "c2"), ("c2", "a2"), ("a2", "c3"), ("c3", "a3"),
             ("a1", "a3"), ("a3", "pool"), ("pool", "c4"), ("c4", "a4"), ("pool", "a4"),
             ("a4", "flat"), ("flat", "fc"), ("fc", "output")]
    return StudentGraph(nodes, edges)


@pytest.fixture(scope="module")
def residual():
    graph = residual_graph()
    q = quantize(graph)
    x = torch.rand(T, 6, 1, 6, 6, generator=torch.Generator().manual_seed(1)).double().numpy()
    return graph, q, plan_from_quantized(q), x


def test_conv_matrix_is_the_convolution():
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 6, (6, 2, 3, 2)).astype(np.float64)
    x = rng.integers(0, 2, (4, 5, 7)).astype(np.float64)
    for stride, padding, dilation in (((1, 1), (1, 0), (1, 1)), ((2, 1), (0, 2), (1, 2))):
        want = torch.nn.functional.conv2d(torch.from_numpy(x[None]), torch.from_numpy(w), None, stride, padding,
                                          dilation, groups=2)[0].numpy()
        m = conv_matrix(w, x.shape, stride, padding, dilation, 2)
        np.testing.assert_array_equal(m @ x.reshape(-1), want.reshape(-1))


@pytest.mark.parametrize("src, wshape, spec", [
    ((4, 6, 6), (4, 4, 3, 3), dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)),
    ((4, 6, 6), (4, 1, 2, 2), dict(stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=4)),  # pooled skip
    ((6, 7, 5), (4, 3, 2, 3), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ((4, 8, 8), (8, 4, 6, 6), dict(stride=(2, 2), padding=(2, 2), dilation=(1, 1), groups=1)),  # pool + conv
])
def test_lava_order_conv_matrix_equals_the_permuted_conv_matrix(src, wshape, spec):
    """The Sparse builder's direct Lava-order matrix against ``conv_matrix`` (checked against
    torch's conv above) permuted to Lava's layout: the same synapses, zero weights left out."""
    from htakl_deploy.hw.lava_net import _lava_conv_csr, _permuted

    w = np.random.default_rng(0).integers(-3, 4, wshape)
    dst = tuple(torch.nn.functional.conv2d(torch.zeros(1, *src), torch.zeros(wshape), None, spec["stride"],
                                           spec["padding"], spec["dilation"], spec["groups"]).shape[1:])
    ref = _permuted(conv_matrix(w, src, spec["stride"], spec["padding"], spec["dilation"], spec["groups"]), dst, src)
    ref.eliminate_zeros()
    new = _lava_conv_csr(w, src, dst, spec)
    assert new.shape == ref.shape and new.nnz == ref.nnz > 0 and (new != ref).nnz == 0


def test_lava_perm_maps_chw_to_whc():
    a = np.arange(24).reshape(2, 3, 4)  # (C, H, W)
    np.testing.assert_array_equal(a.reshape(-1)[lava_perm(a.shape)], a.transpose(2, 1, 0).reshape(-1))


def test_plan_depths_kinds_and_delays(residual):
    _, _, plan, _ = residual
    assert {n: p.depth for n, p in plan.populations.items()} == {"a1": 0, "a2": 1, "a3": 2, "a4": 3, "output": 4}
    links = {k.name: (k.src, k.dst, k.kind, k.delay) for k in plan.links}
    assert links["c1"] == ("input", "a1", "input", 0)
    assert links["c2"] == ("a1", "a2", "conv", 0) and links["c3"] == ("a2", "a3", "conv", 0)
    assert links["a1->a3"] == ("a1", "a3", "sparse", 1)  # the skip waits one step for the main path
    # both a4 links start at a3: the 2x2 pool is folded into c4's kernel (3x3 → 6x6, stride 2)
    # and into the skip's depthwise identity kernel (1x1 → 2x2, stride 2)
    assert links["c4"] == ("a3", "a4", "conv", 0) and links["pool->a4"] == ("a3", "a4", "sparse", 0)
    c4 = next(k for k in plan.links if k.name == "c4").conv
    assert c4["weight"].shape[2:] == (6, 6) and c4["stride"] == (2, 2) and c4["padding"] == (2, 2)
    assert links["fc"] == ("a4", "output", "dense", 0)
    assert plan.lava_steps(samples=5, timesteps=T) == 5 * T + 4


def test_folded_pool_kernels_equal_the_composed_matrices(residual):
    """A kernel with the pool folded in computes exactly pool-then-conv (as a matrix product)."""
    from htakl_deploy.hw.plan import pool_matrix

    graph, q, plan, _ = residual
    pool = pool_matrix(graph.nodes["pool"], graph.shapes["a3"]).astype(np.int64)
    conn = q.connection("c4", "a4")
    node = graph.nodes["c4"]
    want = conv_matrix(conn.weight_mant, graph.shapes["pool"], node.stride, node.padding, node.dilation,
                       node.groups).astype(np.int64) @ pool
    got = next(k for k in plan.links if k.name == "c4").int_matrix(graph.shapes["a3"])
    assert (got != want).nnz == 0
    skip = next(k for k in plan.links if k.name == "pool->a4").int_matrix(graph.shapes["a3"])
    assert (skip != pool * int(q.connection("pool", "a4").weight_mant)).nnz == 0


def test_emulator_equals_the_timestep_aligned_integer_model(residual):
    graph, q, plan, x = residual
    emu = emulate(plan, x)
    out, vals = run_int(q, x, record=True)
    for name, s in emu.spikes.items():
        np.testing.assert_array_equal(s, vals[name].astype(bool), err_msg=name)
        assert 0.02 < s.mean() < 0.8, (name, s.mean())  # the net is active: the comparison means something
    bias = q.targets["output"].bias_v().reshape(1, 1, -1)
    np.testing.assert_array_equal(emu.readout_u + bias, out)


def test_plan_save_load_round_trip(residual, tmp_path):
    _, _, plan, x = residual
    path = plan.save(tmp_path / "p.npz")
    again = load_plan(path)
    a, b = emulate(plan, x), emulate(again, x)
    assert spike_agreement(a.spikes, b.spikes)["all"] == 1.0
    np.testing.assert_array_equal(a.readout_u, b.readout_u)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(UserError, match="not a readable Lava artefact"):
        read_artefact(path)


def test_lava_fixed_pt_equals_emulator_on_residual_net(residual):
    from htakl_deploy.hw.lava_net import run_lava

    _, _, plan, x = residual
    lava = run_lava(plan, x[:, :3], backend="fixed_pt", chunk_samples=2)
    emu = emulate(plan, x[:, :3])
    for name in emu.spikes:
        np.testing.assert_array_equal(lava.spikes[name], emu.spikes[name], err_msg=name)
    np.testing.assert_array_equal(lava.readout_u, emu.readout_u)
    assert not multiprocessing.active_children()  # the runtime was stopped


def test_lava_floating_pt_tracks_the_float_student(residual):
    from htakl_deploy.hw.lava_net import run_lava

    graph, _, plan, x = residual
    lava = run_lava(plan, x[:, :3], backend="floating_pt")
    out, vals = run_float(graph, torch.from_numpy(x[:, :3]), record=True)
    for name, s in lava.spikes.items():
        assert (s == (vals[name].numpy() > 0.5)).mean() > 0.95, name
    np.testing.assert_allclose(lava.logits, out.numpy(), atol=1e-6)


def test_file_recorders_record_what_lavas_monitor_records(residual):
    """The recorders (written each step into shared memory, read once) against Lava's own ``Monitor``
    (read back through ``Var.get``): the same spikes and readout currents, both precisions."""
    from htakl_deploy.hw.lava_net import run_lava

    _, _, plan, x = residual
    for backend in ("fixed_pt", "floating_pt"):
        new, old = (run_lava(plan, x[:, :2], backend=backend, record=r) for r in ("shared", "monitor"))
        assert spike_agreement(new.spikes, old.spikes)["all"] == 1.0 and any(s.any() for s in new.spikes.values())
        np.testing.assert_array_equal(new.readout_u, old.readout_u)
        assert new.readout_u.any()


@pytest.mark.parametrize("copies", [1, 4])
def test_copies_side_by_side_equal_the_emulator(residual, copies):
    """K copies of the network per Lava step (populations K times wider, block-diagonal links;
    6 samples: with K = 4 the last group is padded with empty samples) — every spike and the
    readout of every sample equal the emulator's, as with one sample per step."""
    from htakl_deploy.hw.lava_net import run_lava, tile_plan

    _, _, plan, x = residual
    tiled = tile_plan(plan, copies)
    assert [p.shape[0] for p in tiled.populations.values()] == [copies * p.shape[0] for p in plan.populations.values()]
    timings = {}
    lava, emu = run_lava(plan, x, copies=copies, timings=timings), emulate(plan, x)
    assert timings["copies"] == copies and timings["steps"] == plan.lava_steps(-(-6 // copies), T)
    # Lava ran in its worker process, which never imported torch (its forked children would
    # inherit it), while this process has torch
    assert timings["worker_imported_torch"] is False and "torch" in sys.modules
    assert spike_agreement(lava.spikes, emu.spikes)["all"] == 1.0
    np.testing.assert_array_equal(lava.readout_u, emu.readout_u)


def test_lava_runtime_is_stopped_when_interrupted(residual):
    from htakl_deploy.hw.lava_net import run_lava

    _, _, plan, x = residual

    def interrupt(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_lava(plan, x, backend="fixed_pt", progress=interrupt, chunk_samples=1)
    assert not multiprocessing.active_children()
    from htakl_deploy.hw.lava_worker import _children  # the Lava worker (and so its tree) is gone

    assert not [pid for pid in _children(os.getpid())
                if b"lava_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_residual_graph_through_nir_builds_and_runs_in_lava(residual, tmp_path):
    """ResNet-style graph (skips, pooled skip) → quantised NIR file → read back → Lava: the same
    spikes as the plan built directly from the in-memory quantised graph."""
    from htakl_deploy.export.nir_io import from_nir, read_nir, write_nir
    from htakl_deploy.export.quantize import QuantizedGraph
    from htakl_deploy.hw.lava_net import run_lava

    graph, q, plan, x = residual
    path = write_nir(graph, tmp_path / "res_quant.nir", quantized=q)
    q2 = from_nir(read_nir(path))
    assert isinstance(q2, QuantizedGraph)
    plan2 = plan_from_quantized(q2)
    assert [(k.name, k.kind, k.delay) for k in plan2.links] == [(k.name, k.kind, k.delay) for k in plan.links]
    lava = run_lava(plan2, x[:, :2], backend="fixed_pt")
    emu = emulate(plan, x[:, :2])
    assert spike_agreement(lava.spikes, emu.spikes)["all"] == 1.0
    np.testing.assert_array_equal(lava.readout_u, emu.readout_u)


def test_residual_net_with_128_channels_runs_through_lava_conv(monkeypatch):
    """lava-nc 0.10's Conv model failed with >= 128 channels under numpy 2 (an int8 ``groups``
    overflow in its child process, which hung the run); ``lava_compat`` carries the fix. A
    128 → 128-channel conv (8 groups: 1,024 channel pairs, fast) plus an identity skip (``Sparse``) runs through Lava
    ``Conv`` (the builder would pick Sparse for a kernel this small: not here) and equals the
    emulator spike for spike, one sample per step and two side by side (a 16-group Conv)."""
    from htakl_deploy.hw import lava_net
    from htakl_deploy.hw.lava_net import build_network, run_lava

    monkeypatch.setattr(lava_net, "SPARSE_FAST_NNZ", 0)
    from htakl_deploy.export.quantize import quantize_input
    from htakl_deploy.hw.emulator import input_currents

    rng = np.random.default_rng(3)
    nodes = OrderedDict(
        input=InputNode((1, 3, 3)),
        c1=_conv(rng, 128, 1, 0.9), a1=LIFNode(2.0, 1.0),
        c2=_conv(rng, 128, 16, 0.3, groups=8), a2=LIFNode(2.0, 1.0),  # + identity skip from a1
        flat=FlattenNode(), fc=DenseNode(rng.normal(0, 0.05, (2, 1152)), np.zeros(2)), output=OutputNode(),
    )
    edges = [("input", "c1"), ("c1", "a1"), ("a1", "c2"), ("c2", "a2"), ("a1", "a2"), ("a2", "flat"),
             ("flat", "fc"), ("fc", "output")]
    plan = plan_from_quantized(quantize(StudentGraph(nodes, edges)))
    kinds = {(k.src, k.dst): k.kind for k in plan.links}
    assert kinds[("a1", "a2")] == "sparse" and [k.kind for k in plan.links if k.name.startswith("c2")] == ["conv"]
    x = torch.rand(T, 2, 1, 3, 3, generator=torch.Generator().manual_seed(4)).double().numpy()
    net = build_network(plan, input_currents(plan, quantize_input(x, plan.input_scale)))
    assert [type(p).__name__ for p in net.links.values()].count("Conv") == 1
    emu = emulate(plan, x)
    assert emu.spikes["a2"].any() and not emu.spikes["a2"].all()
    for copies in (1, 2):
        lava = run_lava(plan, x, copies=copies, worker=False)  # in this process: the monkeypatch holds
        assert spike_agreement(lava.spikes, emu.spikes)["all"] == 1.0
        np.testing.assert_array_equal(lava.readout_u, emu.readout_u)


def test_convs_with_weight_exp_run_as_lava_conv(residual, monkeypatch):
    """A quantised student's spike convs mostly have ``weight_exp != 0``, which lava-nc 0.10's Conv
    model ignores; ``lava_compat`` makes it shift the sums as Dense/Sparse do. The residual net
    with every kernel link without delay built as a Lava ``Conv`` process (the builder would pick
    Sparse for kernels this small: not here) — c2, c3, c4 (exponent 0) and the pooled identity
    skip pool→a4 (exponent −2: a 2×2 stride-2 depthwise kernel) — equals the emulator spike for
    spike, one sample per step and three side by side."""
    from htakl_deploy.hw import lava_compat, lava_net
    from htakl_deploy.hw.emulator import input_currents
    from htakl_deploy.export.quantize import quantize_input

    _, _, plan, x = residual
    monkeypatch.setattr(lava_net, "SPARSE_FAST_NNZ", 0)
    convs = [k for k in plan.links if lava_net._as_lava_conv(k, plan.populations[k.dst].shape)]
    assert {k.name for k in convs} == {"c2", "c3", "c4", "pool->a4"}
    assert [k.weight_exp for k in convs if k.name == "pool->a4"] == [-2]
    net = lava_net.build_network(plan, input_currents(plan, quantize_input(x[:, :1], plan.input_scale)))
    built = {name: p for name, p in net.links.items() if type(p).__name__ == "Conv"}
    assert built.keys() == {k.name for k in convs}
    assert int(built["pool->a4"].weight_exp.init) == -2  # the Var the patched model applies
    emu = emulate(plan, x)
    assert all(s.any() for s in emu.spikes.values())
    for copies in (1, 3):
        lava = lava_net.run_lava(plan, x, copies=copies, worker=False)  # in this process: the monkeypatch holds
        assert spike_agreement(lava.spikes, emu.spikes)["all"] == 1.0
        np.testing.assert_array_equal(lava.readout_u, emu.readout_u)
    # lava-nc's own Conv model source holds the line the fix replaces
    old, new, _ = lava_compat.PATCHES[lava_compat.CONV_MODELS_MODULE][-1]
    src = Path(lava_compat.importlib.util.find_spec(lava_compat.CONV_MODELS_MODULE).origin).read_text()
    assert old in src and new in lava_compat.patch_source(lava_compat.CONV_MODELS_MODULE, src)


def test_emulator_batches_are_independent(residual):
    _, _, plan, x = residual
    whole, parts = emulate(plan, x), emulate(plan, x, batch_size=4)  # 6 samples: batches of 4 and 2
    assert spike_agreement(whole.spikes, parts.spikes)["all"] == 1.0
    np.testing.assert_array_equal(whole.readout_u, parts.readout_u)


@pytest.mark.parametrize("du, dv, a_max", [(4095, 2048, 2**17), (1000, 300, 2**17), (0, 4095, 2**17),
                                           (4095, 2048, 2**16), (1000, 300, 2**27)])
def test_emulator_lif_equals_the_numpy_step(du, dv, a_max):
    """The emulator's neurons (``lif_int_step`` on torch tensors, wraps skipped where it proves
    they cannot trigger) against the same step on numpy with every wrap, the update checked bit
    for bit against real Lava in test_lava.py. a_max 2**16: no u wrap with du = 4095; 2**27:
    int32 wraps of ``a_in << 6``."""
    from htakl_deploy.hw.emulator import _run_population_t
    from htakl_deploy.hw.lif_ref import lif_int_step
    from htakl_deploy.hw.plan import Population

    rng = np.random.default_rng(du)
    a = rng.integers(-a_max, a_max, (6, 50, 3, 2, 2))  # 2**17: large enough for u's 24-bit wrap
    pop = Population("p", (3, 2, 2), 0, False, 100, du, dv, 1000, rng.integers(-4000, 4000, 3), 2,
                     1.0, 0.5, 1.0, np.zeros(3))
    bias = pop.per_neuron(pop.bias_mant) << pop.bias_exp
    s_emu, u_emu = _run_population_t(pop, torch.from_numpy(a))
    u = v = np.zeros(a.shape[1:], np.int64)
    for t in range(a.shape[0]):
        s, u, v = lif_int_step(u, v, a[t], du=du, dv=dv, bias_v=bias, vth=pop.vth)
        np.testing.assert_array_equal(s_emu[t].numpy(), s)
        np.testing.assert_array_equal(u_emu[t].numpy(), u)
    assert s_emu.any() and not s_emu.all()


def test_lava_worker_failures_are_one_line_errors(residual):
    """The worker raising (here: a bad setting only the worker checks) and the worker killed
    (SIGKILL, as the OOM killer does) each end ``run_lava`` with a one-line ``LavaWorkerError``
    (a UserError: the CLI prints it and exits 2), not a traceback or a hang; no worker is left."""
    import signal

    from htakl_deploy.hw.emulator import input_currents
    from htakl_deploy.hw.lava_worker import LavaWorkerError, _children, run_in_worker
    from htakl_deploy.export.quantize import quantize_input

    _, _, plan, x = residual
    currents = input_currents(plan, quantize_input(x, plan.input_scale))
    with pytest.raises(LavaWorkerError) as err:
        run_in_worker(plan, currents, backend="fixed_pt", copies=1, record="bogus")
    assert "\n" not in str(err.value) and "exit status 1" in str(err.value) and "record 'bogus'" in str(err.value)
    assert isinstance(err.value, UserError)

    def kill_worker(done):
        for pid in _children(os.getpid()):
            if b"lava_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(LavaWorkerError, match=r"^the Lava worker process was killed by SIGKILL \(out of memory\?\); no result$"):
        run_in_worker(plan, currents, backend="fixed_pt", copies=1, progress=kill_worker, chunk_samples=1)
    assert not [pid for pid in _children(os.getpid()) if b"lava_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
