"""lava-dl netx files in (export/netx_in.py): networks written by lava-dl's own slayer ``export_hdf5``
(installed from PyPI) are read as our graph and run by the emulator and by our Lava builder, state
for state (``u``, ``v`` and spikes of every layer at every step) equal to lava-dl's own
``netx.hdf5.Network`` in Lava ``fixed_pt`` (``hw.netx_reference``). Intel's PilotNet LIF traces
themselves are compared in ``bench/netx_groundtruth.py`` (marker ``netx_groundtruth``): lava-dl's
files are not in this repository (docs/NETX.md says why).

The networks here use what PilotNet LIF uses — a bias-driven input layer, CUBA neurons with
``iDecay = 4096`` and with current memory (``iDecay = 2048``), ``vDecay``, ``vThMant``, biases,
strided/padded/dilated/grouped convolutions, flatten, dense layers with odd weights — and end in a
non-spiking readout (``vThMant = 2^17``, read as ``v``) like PilotNet's steering output.
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from htakl_deploy.errors import UserError
from htakl_deploy.export.netx_in import netx_dense_weights, read_netx
from htakl_deploy.hw.emulator import emulate, general_only
from htakl_deploy.hw.plan import plan_from_quantized

T = 5


def _slayer_file(path, *, pool: bool = False, seed: int = 0):
    """A small PilotNet-like network from lava-dl's slayer blocks, written by their ``export_hdf5``:
    bias-driven input (2×12×12), conv (stride 2, padding 1), conv with current memory (dilation,
    stride/padding per axis, groups 2) [or a 2×2 pool], flatten, dense, dense readout."""
    import torch

    from htakl_deploy.hw.netx_reference import import_netx

    import_netx()  # slayer's import needs the same torchvision stand-in as netx's
    from lava.lib.dl import slayer

    torch.manual_seed(seed)

    def params(cd, vd, th=1.0, norm=False):
        p = {"threshold": th, "current_decay": cd, "voltage_decay": vd, "requires_grad": False}
        return {**p, "norm": slayer.neuron.norm.MeanOnlyBatchNorm} if norm else p

    second = (slayer.block.cuba.Pool(params(1.0, 0.2), 2, weight_scale=1) if pool else
              slayer.block.cuba.Conv(params(0.5, 0.2, norm=True), 6, 8, 3, stride=(1, 2), padding=(0, 1),
                                     dilation=(2, 1), groups=2, weight_scale=3))
    n_flat = 6 * 3 * 3 if pool else 8 * 2 * 3
    blocks = [slayer.block.cuba.Input(params(1.0, 0.25)),
              slayer.block.cuba.Conv(params(1.0, 0.1, norm=True), 2, 6, 3, stride=2, padding=1, weight_scale=3),
              second, slayer.block.cuba.Flatten(),
              slayer.block.cuba.Dense(params(1.0, 0.3, norm=True), n_flat, 10, weight_scale=4),
              slayer.block.cuba.Dense(params(1.0, 0.0, th=2048.0), 10, 3, weight_scale=3)]
    gen = torch.Generator().manual_seed(seed)
    with h5py.File(path, "w") as f:
        layers = f.create_group("layer")
        x = torch.zeros(1, 2, 12, 12, 2)
        for i, b in enumerate(blocks):
            x = b(x)  # shapes are set on the first forward pass
            norm = getattr(getattr(b, "neuron", None), "norm", None)
            if norm is not None:  # integer biases: slayer exports -64 × the norm's running mean
                norm.running_mean.data = -torch.randint(-12, 24, norm.running_mean.shape, generator=gen).float() / 64
            b.export_hdf5(layers.create_group(str(i)))
        # slayer's 8-bit weights are even (step 2); Loihi's and netx's need not be: a few odd ones
        w = layers["4/weight"][()]
        w[0, :5] += 1
        layers["4/weight"][...] = w
    return path


def _inputs(shape, samples=2, seed=1):
    """Integer inputs (the input layer's bias mantissas), different per sample and step."""
    gen = np.random.default_rng(seed)
    return gen.integers(0, 80, size=(T, samples, *shape)).astype(np.int64)


@pytest.fixture(scope="module")
def netx_file(tmp_path_factory):
    return _slayer_file(tmp_path_factory.mktemp("netx") / "slayer.net")


def test_reader_maps_every_field(netx_file):
    q = read_netx(netx_file)
    g = q.graph
    with h5py.File(netx_file) as f:
        n = {i: {k: f["layer"][str(i)]["neuron"][k][()] for k in ("iDecay", "vDecay", "vThMant", "refDelay")}
             for i in (0, 1, 2, 4, 5)}
        conv2 = {k: f["layer/2"][k][()] for k in ("stride", "padding", "dilation", "groups", "weight", "bias")}
        dense = f["layer/4/weight"][()]
    assert list(g.nodes) == ["input", "layer0", "layer1.conv", "layer1", "layer2.conv", "layer2", "layer3.flatten",
                             "layer4.dense", "layer4", "layer5.dense", "layer5"]
    for i, p in n.items():
        t, node = q.targets[f"layer{i}"], g.nodes[f"layer{i}"]
        assert (t.du, t.dv, t.vth, node.ref_delay) == (p["iDecay"] - 1, p["vDecay"], p["vThMant"], p["refDelay"])
        assert t.bias_exp == 6
    assert q.targets["layer2"].du == 2047  # current memory: iDecay 2048
    assert g.nodes["layer0"].bias_input and g.nodes["layer5"].read == "v"  # PilotNet's input and readout
    c = g.nodes["layer2.conv"]
    assert (c.stride, c.padding, c.dilation, c.groups) == ((1, 2), (0, 1), (2, 1), 2)
    assert tuple(conv2["stride"]) == (1, 2) and np.array_equal(c.weight, conv2["weight"])
    np.testing.assert_array_equal(q.targets["layer2"].bias_mant, conv2["bias"])
    assert np.abs(conv2["bias"]).max() > 0  # slayer wrote real biases
    mant, exp, bits = netx_dense_weights(dense)
    conn = q.connection("layer4.dense", "layer4")
    np.testing.assert_array_equal(conn.weight_mant, mant)
    assert (conn.weight_exp, conn.weight_bits) == (exp, bits) and exp < 0
    assert np.array_equal(mant >> -exp, dense) and (dense % 2).any()  # odd weights, kept exactly


def test_emulator_and_our_lava_equal_lava_dl_netx_state_for_state(netx_file):
    """Every layer's u, v and spikes at every step of 2 samples: emulator = our Lava builder =
    lava-dl's netx.hdf5.Network in Lava fixed_pt."""
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.netx_reference import run_netx_lava

    plan = plan_from_quantized(read_netx(netx_file))
    x = _inputs(plan.input_shape)
    emu = emulate(plan, x, x_is_int=True, record_state=True)
    ours = run_lava(plan, x, x_is_int=True, record_state=True)
    ref = run_netx_lava(netx_file, x)
    for name, pop in plan.populations.items():
        for i, var in enumerate("uv"):
            np.testing.assert_array_equal(emu.state[name][i], ref[name][var], err_msg=f"{name}.{var} emulator")
            np.testing.assert_array_equal(ours.state[name][i], ref[name][var], err_msg=f"{name}.{var} our Lava")
        if not pop.readout:
            np.testing.assert_array_equal(emu.spikes[name], ref[name]["s"], err_msg=name)
            np.testing.assert_array_equal(ours.spikes[name], ref[name]["s"], err_msg=name)
            assert 0.01 < emu.spikes[name].mean() < 0.9, (name, emu.spikes[name].mean())  # the test can fail
    np.testing.assert_array_equal(emu.readout_u, ref["layer5"]["v"])  # the readout is its v
    np.testing.assert_array_equal(ours.readout_u, emu.readout_u)
    assert np.abs(emu.readout_u).max() > 0
    fast = emulate(plan, x, x_is_int=True)  # hw.kernels' fused loop, the input taken as a current
    assert not general_only(plan, "layer0", plan.populations["layer0"])
    for name, s in fast.spikes.items():
        np.testing.assert_array_equal(s, emu.spikes[name], err_msg=f"{name} fast path")
    np.testing.assert_array_equal(fast.readout_u, emu.readout_u)


class _LateSemaphore:
    """A channel's request semaphore whose every message is passed on ``delay_s`` late."""

    def __init__(self, sem, delay_s: float) -> None:
        self.sem, self.delay_s = sem, delay_s

    def acquire(self, *args, **kwargs):
        got = self.sem.acquire(*args, **kwargs)
        time.sleep(self.delay_s)
        return got


def test_bias_input_lands_at_its_step_however_late_lava_delivers_it(netx_file, monkeypatch):
    """The input layer's bias is written (``BiasWriter``, a RefPort) in the management phase after
    each step; the population sets it when it services its VarPort, which it does only while it
    polls in that phase. Here every message to the population's ``bias_mant`` VarPort is queued
    10 ms late (the listener thread of that channel waits before queueing it, as a loaded machine
    can make it wait): the state must still be the emulator's at every step. Without the writer's
    wait for the write, the population ran its next step first and took the bias a step late
    (test_emulator_and_our_lava_equal_lava_dl_netx_state_for_state failed so once at load 17)."""
    from lava.magma.compiler.channels import pypychannel

    from htakl_deploy.hw.lava_net import run_lava

    listen = pypychannel.CspRecvPort._req_callback

    def late(port, req):
        return listen(port, _LateSemaphore(req, 0.01) if "bias_mant" in port.name else req)

    monkeypatch.setattr(pypychannel.CspRecvPort, "_req_callback", late)
    plan = plan_from_quantized(read_netx(netx_file))
    x = _inputs(plan.input_shape)
    emu = emulate(plan, x, x_is_int=True, record_state=True)
    ours = run_lava(plan, x, x_is_int=True, record_state=True, worker=False)  # forked here: the patch holds
    for name in plan.populations:
        for i, var in enumerate("uv"):
            np.testing.assert_array_equal(ours.state[name][i], emu.state[name][i], err_msg=f"{name}.{var}")


def test_refractory_delay_and_pool_run_the_same_in_emulator_and_our_lava(tmp_path):
    """A slayer pool block (netx 0.6.0 cannot build it) and refDelay = 3 (netx does not pass it to
    Lava): our emulator and our Lava builder agree state for state, and the hold is real (the
    spikes differ from refDelay = 1)."""
    from htakl_deploy.hw.lava_net import run_lava

    path = _slayer_file(tmp_path / "pool.net", pool=True)
    base = plan_from_quantized(read_netx(path))
    with h5py.File(path, "r+") as f:
        for i in (1, 2):
            f[f"layer/{i}/neuron/refDelay"][()] = 3
    plan = plan_from_quantized(read_netx(path))
    assert [p.ref_delay for p in plan.populations.values()] == [1, 3, 3, 1, 1]
    x = _inputs(plan.input_shape)
    emu = emulate(plan, x, x_is_int=True, record_state=True)
    ours = run_lava(plan, x, x_is_int=True, record_state=True)
    for name in plan.populations:
        for i, var in enumerate("uv"):
            np.testing.assert_array_equal(ours.state[name][i], emu.state[name][i], err_msg=f"{name}.{var}")
    for name in ("layer1", "layer2"):
        np.testing.assert_array_equal(ours.spikes[name], emu.spikes[name])
        s = emu.spikes[name]
        assert s.any() and not (s[1:] & s[:-1]).any()  # never on consecutive steps
        assert not np.array_equal(s, emulate(base, x, x_is_int=True).spikes[name])


def test_refractory_hold_by_hand():
    """A neuron driven above threshold every step fires every ref_delay-th step, v held at 0."""
    from htakl_deploy.hw.lif_ref import lif_int_step

    for ref_delay, want in ((1, [1, 1, 1, 1, 1, 1]), (2, [1, 0, 1, 0, 1, 0]), (3, [1, 0, 0, 1, 0, 0])):
        u = v = ref = np.zeros(1, np.int64)
        got = []
        for _ in range(6):
            s, u, v, ref = lif_int_step(u, v, np.array([100]), du=4095, dv=0, bias_v=np.int64(0), vth=50,
                                        ref_delay=ref_delay, ref=ref)
            got.append(int(s[0]))
            assert v[0] == 0
        assert got == want, ref_delay


@pytest.mark.parametrize("edit, match", [
    (lambda f: f["layer/2/type"].__setitem__(0, b"convT"), r"layer 2 \(convT\): layer type 'convT' is not supported"),
    (lambda f: f["layer/4/neuron/type"].__setitem__((), b"RF_IZ"), r"layer 4 \(dense\): neuron type 'RF_IZ'"),
    (lambda f: f["layer/1/weight"].__setitem__((0, 0, 0, 0), np.nan), r"layer 1 \(conv\): 'weight' holds NaN"),
    (lambda f: f["layer/4"].__delitem__("weight"), r"layer 4 \(dense\): missing dataset 'weight'"),
    (lambda f: f["layer/1/shape"].__setitem__(0, 7), r"layer 1 \(conv\): shape \(7, 6, 6\) does not follow"),
])
def test_bad_files_are_refused_naming_the_layer(netx_file, tmp_path, edit, match):
    import shutil

    path = tmp_path / "bad.net"
    shutil.copy(netx_file, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    with pytest.raises(UserError, match=match):
        read_netx(path)


def test_fractional_weights_are_truncated_as_netx_does_and_reported(netx_file, tmp_path):
    import shutil

    path = tmp_path / "frac.net"
    shutil.copy(netx_file, path)
    with h5py.File(path, "r+") as f:
        w = f["layer/1/weight"][()]
        w[0, 0, 0, :2] = [2.75, -2.75]
        f["layer/1/weight"][...] = w
    q = read_netx(path)
    assert q.connection("layer1.conv", "layer1").weight_mant[0, 0, 0, :2].tolist() == [2, -2]
    assert any("layer 1 (conv): 2 weight values have fractions" in w for w in q.warnings())


def test_plan_of_a_netx_file_saves_and_reads_back_checked(netx_file, tmp_path):
    """The Lava artefact of a netx network (bias input link, odd dense weights with netx's weight
    bits, a v readout) passes the artefact checks and runs to the same integers."""
    from htakl_deploy.hw.artefact_check import read_plan

    plan = plan_from_quantized(read_netx(netx_file))
    plan.metadata["timesteps"] = T
    back = read_plan(plan.save(tmp_path / "netx.lava.npz"))
    assert [(k.kind, k.num_weight_bits) for k in back.links] == [(k.kind, k.num_weight_bits) for k in plan.links]
    assert back.readout.read == "v" and back.links[0].kind == "bias"
    x = _inputs(plan.input_shape)
    a, b = emulate(plan, x, x_is_int=True), emulate(back, x, x_is_int=True)
    np.testing.assert_array_equal(a.readout_u, b.readout_u)
    for name, s in a.spikes.items():
        np.testing.assert_array_equal(s, b.spikes[name])


def _dense_only_file(path, seed: int = 3):
    """An mnist/oxford-shaped network (lava-dl's tutorials): no input layer, a dense layer reading
    the input spikes through its synapse, then a spiking dense output; written by slayer."""
    import torch

    from htakl_deploy.hw.netx_reference import import_netx

    import_netx()
    from lava.lib.dl import slayer

    torch.manual_seed(seed)
    p = {"threshold": 0.5, "current_decay": 0.1, "voltage_decay": 0.1, "requires_grad": False}
    blocks = [slayer.block.cuba.Dense(p, 40, 24, weight_scale=6), slayer.block.cuba.Dense(p, 24, 5, weight_scale=6)]
    with h5py.File(path, "w") as f:
        x = torch.zeros(1, 40, 2)
        for i, b in enumerate(blocks):
            x = b(x)
            b.export_hdf5(f.create_group(f"layer/{i}"))
    return path


def test_first_layer_reading_spikes_through_its_synapse_equals_netx(tmp_path):
    """lava-dl's tutorial networks start with a dense layer that reads the input spikes on chip: the
    input reaches it one step late (a sample's last step opens the next one, ``hw.plan.Link.lag``).
    Emulator = our Lava = lava-dl netx, u, v and spikes, 3 samples back to back, iDecay 410."""
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.netx_reference import run_netx_lava

    path = _dense_only_file(tmp_path / "dense.net")
    plan = plan_from_quantized(read_netx(path))
    assert plan.input_link.lag == 1 and plan.readout.read == "spikes" and plan.populations["layer0"].du == 409
    x = (np.random.default_rng(4).random((T, 3, 40)) < 0.3).astype(np.int64)
    emu = emulate(plan, x, x_is_int=True, record_state=True)
    ours = run_lava(plan, x, x_is_int=True, record_state=True)
    ref = run_netx_lava(path, x, input_message_bits=0)
    for name in plan.populations:
        for i, var in enumerate("uv"):
            np.testing.assert_array_equal(emu.state[name][i], ref[name][var], err_msg=f"{name}.{var}")
            np.testing.assert_array_equal(ours.state[name][i], ref[name][var], err_msg=f"{name}.{var} our Lava")
    np.testing.assert_array_equal(emu.spikes["layer0"], ref["layer0"]["s"])
    np.testing.assert_array_equal(emu.readout_u, ref["layer1"]["s"])  # a spiking readout: its spikes
    assert emu.spikes["layer0"].any() and emu.readout_u.any()
    # the lag is real: sample 1 opens with sample 0's last input step
    assert not np.array_equal(emulate(plan, x[:, 1:2], x_is_int=True).spikes["layer0"][:, 0], emu.spikes["layer0"][:, 1])


def test_round_trips_keep_every_integer(netx_file, tmp_path):
    """lava-dl file → our quantised NIR → back, and → our netx file → back: the same connections,
    targets and input link, so the same u, v and spikes; our own netx file (a student's) reads back
    with the integers it holds."""
    from htakl_deploy.export.netx_hdf5 import read_netx_summary, write_netx
    from htakl_deploy.export.nir_io import from_nir, read_nir, write_nir

    q = read_netx(netx_file)
    via_nir = from_nir(read_nir(write_nir(q.graph, tmp_path / "q.nir", quantized=q)))
    via_netx = read_netx(write_netx(via_nir, tmp_path / "back.net"))
    x = _inputs(q.graph.shapes["input"])
    want = emulate(plan_from_quantized(q), x, x_is_int=True, record_state=True)
    for back in (via_nir, via_netx):
        assert list(back.graph.nodes) == list(q.graph.nodes)
        for a, b in zip(q.connections, back.connections):
            assert (a.node, a.target, a.identity) == (b.node, b.target, b.identity)
            np.testing.assert_array_equal(a.weight_mant * 2.0 ** a.weight_exp, b.weight_mant * 2.0 ** b.weight_exp)
        for a, b in zip(q.targets.values(), back.targets.values()):
            assert (a.du, a.dv, a.vth) == (b.du, b.dv, b.vth)
            np.testing.assert_array_equal(a.bias_mant << a.bias_exp, b.bias_mant << b.bias_exp)
        got = emulate(plan_from_quantized(back), x, x_is_int=True, record_state=True)
        for name, (u, v) in want.state.items():
            np.testing.assert_array_equal(got.state[name][0], u)
            np.testing.assert_array_equal(got.state[name][1], v)
    # a student's netx file (ours: input layer without neuron, graded 8-bit input) read back as netx holds it
    from test_netx import _pool_chain

    from htakl_deploy.export.quantize import quantize

    ours = tmp_path / "student.net"
    write_netx(quantize(_pool_chain()), ours)
    s, q2 = read_netx_summary(ours), read_netx(ours)
    files = [lay for lay in s["layers"] if lay["type"] in ("conv", "dense")]
    for lay, c in zip(files, [c for c in q2.connections if not c.identity]):
        np.testing.assert_array_equal(c.weight_mant * 2.0 ** c.weight_exp, lay["weight"])
        t = q2.targets[c.target]
        assert (t.du, t.dv, t.vth) == (lay["neuron"]["iDecay"] - 1, lay["neuron"]["vDecay"], lay["neuron"]["vThMant"])
    assert plan_from_quantized(q2).input_link.lag == 1  # netx runs its first conv on chip


def test_subcommands_take_a_netx_file(netx_file, tmp_path, capsys):
    """export (nir, lava, netx), map, simulate --input, energy --graph: a netx file goes where a NIR
    file goes. The energy counts are recounted here: the input layer's input is a bias (no op), the
    first conv's ACs are the input layer's spikes times their fan-out."""
    import json

    from htakl_deploy.cli import main
    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.export.nodes.conv import conv_matrix

    out = tmp_path / "export"
    assert main(["export", str(netx_file), "--target", "nir", "lava", "netx", "--lava-check", "2", "--out",
                 str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["lava"]["lava_check"]["samples"] == 2 and (out / "student.netx.h5").is_file()
    assert not rep["netx"].get("inexact_layers")  # the file's integers go back out exactly
    assert main(["map", str(netx_file), "--no-spikes", "--json-out", str(tmp_path / "map.json")]) == 0
    cores = json.loads((tmp_path / "map.json").read_text())["totals"]["cores"]
    assert cores >= 5  # one core per population at least
    x = _inputs((2, 12, 12), samples=3)
    np.save(tmp_path / "x.npy", x)
    sim = tmp_path / "sim"
    assert main(["simulate", str(out / "student.lava.npz"), "--backend", "emulator", "--input",
                 str(tmp_path / "x.npy"), "--out", str(sim)]) == 0
    assert main(["energy", str(sim / "spikes.h5"), "--graph", str(netx_file), "--json-out", str(tmp_path / "e.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "e.json").read_text())["layers"]}
    assert "input->layer0" not in rows  # the input is the input layer's bias: no synapse
    q = read_netx(netx_file)
    conv = q.graph.nodes["layer1.conv"]
    m = conv_matrix(np.ones_like(conv.weight), (2, 12, 12), conv.stride, conv.padding, conv.dilation, conv.groups)
    with open_spikes(sim / "spikes.h5") as rec:
        s0 = rec.layer_counts("layer0").reshape(T, -1)
    assert rows["layer1.conv"]["acs"] == int((s0 @ np.asarray(m.sum(axis=0)).reshape(-1)).sum()) > 0


def test_a_bias_beyond_13_bits_moves_into_the_exponent(tmp_path):
    """Our own netx writer may hold a first-layer bias beyond Loihi's 13-bit mantissa (the layer runs at
    2^j × its scale): read as mantissa × 2^exponent, the same integer Lava adds; an odd one is refused."""
    from bad_inputs.cases import netx_file

    netx_file("m.net", lambda f, ws: f["layer/2"].create_dataset("bias", data=np.full(10, 4682.0)))(tmp_path)
    t = read_netx(tmp_path / "m.net").targets["layer2"]
    assert (int(t.bias_mant[0]), t.bias_exp) == (2341, 7) and int(t.bias_v()[0]) == 4682 << 6


def _sdnn_file(path, seed: int = 0, sigma_output: bool = True):
    """A PilotNet-SDNN-like network from slayer's sigma-delta blocks (delta input, two convolutions —
    one dilated, grouped, strided per axis —, flatten, dense, a sigma decoder output — or, without
    ``sigma_output``, a sigma-delta last layer sending graded spikes), with biases."""
    import torch

    from htakl_deploy.hw.netx_reference import import_netx

    import_netx()
    from lava.lib.dl import slayer

    torch.manual_seed(seed)
    p = {"threshold": 0.1, "tau_grad": 0.5, "scale_grad": 1, "requires_grad": False, "shared_param": True,
         "activation": torch.nn.functional.relu}
    pb = {**p, "norm": slayer.neuron.norm.MeanOnlyBatchNorm}
    sd = slayer.block.sigma_delta
    blocks = [sd.Input(p), sd.Conv(pb, 2, 6, 3, stride=2, padding=1, weight_scale=2),
              sd.Conv(pb, 6, 8, 3, stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2, weight_scale=2),
              sd.Flatten(), sd.Dense(pb, 48, 10, weight_scale=2),
              sd.Output(p, 10, 3, weight_scale=2) if sigma_output else sd.Dense(pb, 10, 3, weight_scale=2)]
    gen = torch.Generator().manual_seed(seed)
    with h5py.File(path, "w") as f:
        x = torch.zeros(1, 2, 12, 12, 2)
        for i, b in enumerate(blocks):
            x = b(x)
            norm = getattr(getattr(b, "neuron", None), "norm", None)
            if norm is not None:  # integer biases: slayer exports -64 × the norm's running mean
                norm.running_mean.data = -torch.randint(-12, 24, norm.running_mean.shape, generator=gen).float() / 64
            b.export_hdf5(f.create_group(f"layer/{i}"))
    return path


def test_sigma_delta_network_equals_lava_dl_netx(tmp_path):
    """SDNN (graded spikes): emulator = our Lava = lava-dl netx in Lava, every layer's sigma, act and
    graded outputs at every step, 2 samples of signed inputs; each sample starts from the network's
    own pipeline fill, as netx (which resets no sigma-delta neuron) runs it."""
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.netx_reference import run_netx_lava

    path = _sdnn_file(tmp_path / "sdnn.net")
    plan = plan_from_quantized(read_netx(path))
    assert [p.neuron for p in plan.populations.values()] == ["delta", "sigma_delta", "sigma_delta", "sigma_delta",
                                                           "sigma"]
    assert plan.readout.read == "sigma" and plan.populations["layer1"].message_bits == 16
    x = np.random.default_rng(1).integers(-60, 60, size=(T, 2, 2, 12, 12))
    emu = emulate(plan, x, x_is_int=True, record_state=True)
    ours = run_lava(plan, x, x_is_int=True, record_state=True)
    ref = run_netx_lava(path, x)
    for name, pop in plan.populations.items():
        for i, var in enumerate("uv"):
            np.testing.assert_array_equal(emu.state[name][i], ref[name][var], err_msg=f"{name}.{var}")
            np.testing.assert_array_equal(ours.state[name][i], ref[name][var], err_msg=f"{name}.{var} our Lava")
        out = emu.readout_u if pop.readout else emu.spikes[name]
        np.testing.assert_array_equal(out, ref[name]["s"], err_msg=name)
        np.testing.assert_array_equal(ours.readout_u if pop.readout else ours.spikes[name], out, err_msg=name)
        assert 0.05 < (out != 0).mean() and np.abs(out).max() > 1, name  # graded, not 0/1
    from htakl_deploy.hw.emulator import pipeline_fill

    fill = pipeline_fill(plan)  # the biases drive the deeper layers before the input reaches them
    assert np.abs(fill["layer4"][2]).max() > 0 and np.abs(fill["layer1"][0]).max() > 0  # act; graded outputs


def test_sigma_delta_subcommands_count_graded_messages(tmp_path, capsys):
    """export --target lava, simulate, energy --graph, map on a sigma-delta network: the artefact
    checks and runs to the same integers; a graded layer's ACs are its messages (payload ≠ 0) ×
    fan-out, recounted here, with the 16-bit payload reported."""
    import json

    from htakl_deploy.cli import main
    from htakl_deploy.energy.spikefile import open_spikes
    from htakl_deploy.hw.artefact_check import read_plan

    path = _sdnn_file(tmp_path / "sdnn.net", seed=2)
    out = tmp_path / "export"
    assert main(["export", str(path), "--target", "lava", "--out", str(out)]) == 0
    capsys.readouterr()
    plan, back = plan_from_quantized(read_netx(path)), read_plan(out / "student.lava.npz")
    assert [(p.neuron, p.message_bits) for p in back.populations.values()] == \
        [(p.neuron, p.message_bits) for p in plan.populations.values()]
    x = np.random.default_rng(5).integers(0, 120, size=(T, 3, 2, 12, 12))  # --input takes counts >= 0
    np.save(tmp_path / "x.npy", x)
    sim = tmp_path / "sim"
    assert main(["simulate", str(out / "student.lava.npz"), "--backend", "emulator", "--input",
                 str(tmp_path / "x.npy"), "--out", str(sim)]) == 0
    emu = emulate(back, x, x_is_int=True)
    assert main(["energy", str(sim / "spikes.h5"), "--graph", str(path), "--json-out", str(tmp_path / "e.json")]) == 0
    rep = json.loads((tmp_path / "e.json").read_text())
    rows = {r["name"]: r for r in rep["layers"]}
    assert "graded spikes" in capsys.readouterr().out
    dense = plan.populations["layer4"]
    assert next(k for k in plan.links if k.dst == "layer4").src == "layer2"  # through the flatten
    fan_out = np.full(48, 10)  # dense 48 -> 10: every synapse, as for binary spikes
    with open_spikes(sim / "spikes.h5") as rec:
        msgs = rec.layer_counts("layer2").reshape(T, -1)
    np.testing.assert_array_equal(msgs, (emu.spikes["layer2"] != 0).sum(1).reshape(T, -1))
    assert rows["layer4.dense"]["acs"] == int((msgs @ fan_out).sum()) > 0
    assert rows["layer4.dense"]["payload_bits"] == 16 and dense.message_bits == 16
    assert main(["map", str(path), "--no-spikes", "--json-out", str(tmp_path / "map.json")]) == 0


def test_sigma_delta_network_round_trips_through_nir_and_netx(tmp_path):
    """lava-dl SDNN file → our quantised NIR (family-tagged Threshold nodes) → back, and → our netx
    file → back: the same sigma, act and graded outputs at every step; lava-dl's netx runs our file
    to the same integers."""
    from htakl_deploy.export.netx_hdf5 import write_netx
    from htakl_deploy.export.nir_io import from_nir, read_nir, write_nir
    from htakl_deploy.hw.netx_reference import run_netx_lava

    q = read_netx(_sdnn_file(tmp_path / "sdnn.net", seed=3))
    via_nir = from_nir(read_nir(write_nir(q.graph, tmp_path / "q.nir", quantized=q)))
    ours = write_netx(via_nir, tmp_path / "ours.net")
    x = np.random.default_rng(2).integers(-60, 60, size=(T, 2, 2, 12, 12))
    a = emulate(plan_from_quantized(q), x, x_is_int=True, record_state=True)
    assert np.abs(a.readout_u).max() > 0
    ref = run_netx_lava(ours, x)
    for back in (via_nir, read_netx(ours)):
        b = emulate(plan_from_quantized(back), x, x_is_int=True, record_state=True)
        assert [p.neuron for p in plan_from_quantized(back).populations.values()][-1] == "sigma"
        for name, (s, act) in a.state.items():
            np.testing.assert_array_equal(b.state[name][0], s, err_msg=name)
            np.testing.assert_array_equal(b.state[name][1], act, err_msg=name)
            np.testing.assert_array_equal(ref[name]["u"], s, err_msg=f"{name}: netx on our file")
        np.testing.assert_array_equal(a.readout_u, b.readout_u)


def test_a_graded_last_layer_reads_as_its_payloads(tmp_path):
    """An SDNN network ending in a sigma-delta layer (no sigma decoder): its readout is the graded
    spikes it sends, emulator = lava-dl netx in Lava at every step."""
    from htakl_deploy.hw.netx_reference import run_netx_lava

    path = _sdnn_file(tmp_path / "sdnn.net", seed=4, sigma_output=False)
    plan = plan_from_quantized(read_netx(path))
    assert (plan.readout.neuron, plan.readout.read) == ("sigma_delta", "spikes")
    x = np.random.default_rng(3).integers(-60, 60, size=(T, 2, 2, 12, 12))
    emu = emulate(plan, x, x_is_int=True)
    ref = run_netx_lava(path, x)
    np.testing.assert_array_equal(emu.readout_u, ref[plan.readout.name]["s"])
    assert np.abs(emu.readout_u).max() > 1  # graded
