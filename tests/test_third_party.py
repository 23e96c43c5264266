"""snnTorch and Norse models, trained a little on digits and written by their own NIR exporters,
deployed by us (issue 14): ``export X.nir --target nir lava netx`` with Lava = emulator on every
spike (20 samples), then the framework's own float run vs our fixed-point run on every digits
test image (decision agreement >= 98 % here, the issue's 99 % target in the bench; accuracy
within 1 point). Conv, dense (flatten → linear from the pixels: the first Linear is the
off-chip input link) and residual (slow) nets.

How each graph is written (``htakl_deploy.export.third_party`` says why, measured):
snnTorch conv and dense-only nets through ``snntorch.export_nir.export_to_nir`` itself
(``ignore_dims=[0]``, per-neuron beta/threshold); Norse conv and dense-only nets through the
``extract_nir_graph`` call ``norse.torch.to_nir`` makes, plus the AvgPool2d/Flatten mappings Norse
lacks; residual joins (both) through each framework's own module conversion under nirtorch's fx
tracer.

Neurons are configured as Loihi's: snnTorch ``Leaky(reset_mechanism='zero', reset_delay=False)``
(its default ``reset_delay`` resets one step late, which NIR's LIF cannot say), Norse
``LIFBoxCell`` (its update is NIR's LIF with ``r = 1``). The readout is a Linear layer averaged
over time. Training: Adam, 8 epochs of BPTT over T = 4 (seconds).

docs/NIR.md's table is these tests' printed lines:
``pytest -m 'slow or not slow' tests/test_third_party.py -s -k deploys``.
"""

from __future__ import annotations

import json
import warnings

import nir
import numpy as np
import pytest
import torch

from conftest import netx_warnings
from htakl_deploy.cli import main
from htakl_deploy.distill.data import encode
from htakl_deploy.distill.data.registry import load_dataset
from htakl_deploy.export.graph import run_float
from htakl_deploy.export.nir_io import from_nir, read_nir
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import load_plan

snn = pytest.importorskip("snntorch", reason="snntorch not installed (make install)")
pytest.importorskip("nirtorch", reason="nirtorch not installed (make install)")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # norse's import-time deprecation notes
    nt = pytest.importorskip("norse.torch", reason="norse not installed (make install)")

import snntorch.utils  # noqa: E402

from htakl_deploy.export import third_party  # noqa: E402

T = 4
NORSE_DT_S = 1e-6  # Norse writes tau = dt/tau_mem_inv with dt = 1e-3: --dt dt² gives back dt·tau_mem_inv


# -- the models, as a user of each framework writes them -----------------------------------------

def _leaky(shape, beta=0.5):
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", reset_delay=False)


def _lifbox(shape, tau_mem_inv=500.0):
    p = nt.LIFBoxParameters(tau_mem_inv=torch.full(shape, tau_mem_inv), v_th=torch.ones(shape),
                            v_leak=torch.zeros(shape), v_reset=torch.zeros(shape))
    return nt.LIFBoxCell(p)


def snntorch_dense():
    """flatten → dense → LIF → dense → LIF → dense readout: dense on the pixels from the first layer."""
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 64), _leaky((64,)), torch.nn.Linear(64, 32), _leaky((32,)),
        torch.nn.Linear(32, 10))


def snntorch_conv():
    """conv → LIF → avg pool → flatten → dense → LIF → dense readout."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), _leaky((8, 8, 8)), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(128, 32), _leaky((32,)), torch.nn.Linear(32, 10))


class SnntorchResidual(torch.nn.Module):
    """conv → LIF → conv (+ the first LIF's spikes) → LIF → pool → flatten → dense readout."""

    def __init__(self):
        super().__init__()
        self.c1, self.l1 = torch.nn.Conv2d(1, 8, 3, padding=1), _leaky((8, 8, 8))
        self.c2, self.l2 = torch.nn.Conv2d(8, 8, 3, padding=1), _leaky((8, 8, 8))
        self.pool, self.flat, self.fc = torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 10)

    def forward(self, x):
        a = self.l1(self.c1(x))
        return self.fc(self.flat(self.pool(self.l2(self.c2(a) + a))))


def norse_dense():
    return nt.SequentialState(
        torch.nn.Flatten(), torch.nn.Linear(64, 64), _lifbox((64,)), torch.nn.Linear(64, 32), _lifbox((32,)),
        torch.nn.Linear(32, 10))


def norse_conv():
    return nt.SequentialState(
        torch.nn.Conv2d(1, 8, 3, padding=1), _lifbox((8, 8, 8)), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(128, 32), _lifbox((32,)), torch.nn.Linear(32, 10))


class NorseResidual(torch.nn.Module):
    """As SnntorchResidual, with Norse's cells and its (output, state) convention."""

    def __init__(self):
        super().__init__()
        self.c1, self.l1 = torch.nn.Conv2d(1, 8, 3, padding=1), _lifbox((8, 8, 8))
        self.c2, self.l2 = torch.nn.Conv2d(8, 8, 3, padding=1), _lifbox((8, 8, 8))
        self.pool, self.flat, self.fc = torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 10)

    def forward(self, x, state=None):
        s1, s2 = (None, None) if state is None else state
        a, s1 = self.l1(self.c1(x), s1)
        b, s2 = self.l2(self.c2(a) + a, s2)
        return self.fc(self.flat(self.pool(b))), (s1, s2)


def run_snntorch(net, x_tb: torch.Tensor) -> torch.Tensor:
    """snnTorch's own float run over T: logits [T, B, K]."""
    snntorch.utils.reset(net)
    out = torch.stack([net(x) for x in x_tb])
    snntorch.utils.reset(net)
    return out


def run_norse(net, x_tb: torch.Tensor) -> torch.Tensor:
    """Norse's own float run over T (state threaded through): logits [T, B, K]."""
    state, outs = None, []
    for x in x_tb:
        out, state = net(x, state)
        outs.append(out)
    return torch.stack(outs)


MODELS = {  # name: (builder, framework's run, writer, --dt)
    "snntorch_conv": (snntorch_conv, run_snntorch, third_party.snntorch_export, 1e-4),
    "snntorch_dense": (snntorch_dense, run_snntorch, third_party.snntorch_export, 1e-4),
    "snntorch_residual": (SnntorchResidual, run_snntorch, third_party.snntorch_export_traced, 1e-4),
    "norse_conv": (norse_conv, run_norse, third_party.norse_export, NORSE_DT_S),
    "norse_dense": (norse_dense, run_norse, third_party.norse_export, NORSE_DT_S),
    "norse_residual": (NorseResidual, run_norse, third_party.norse_export_traced, NORSE_DT_S),
}


def _train(net, run, train, epochs: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), 64):
            x, y = train.batch(order[start:start + 64])
            loss = torch.nn.functional.cross_entropy(run(net, encode(x, T, "direct")).mean(0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


EPOCHS = 8


def train_and_write(name: str, train, path, epochs: int = EPOCHS, seed: int = 0):
    """``MODELS[name]`` trained on ``train`` and written to ``path`` by the framework's exporter
    (``MODELS[name]``'s writer); the trained net. bench/third_party_agreement.py uses it too."""
    build, run, write, _ = MODELS[name]
    torch.manual_seed(seed)
    net = _train(build(), run, train, epochs=epochs, seed=seed)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nir.write(path, write(net, torch.zeros(2, 1, 8, 8)))
    return net


def _model(name, digits, tmp_path_factory):
    _, run, _, dt = MODELS[name]
    train, test = digits
    path = tmp_path_factory.mktemp("third_party") / f"{name}.nir"
    return train_and_write(name, train, path), run, path, dt, test


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """``trained(name)``: the model of ``MODELS[name]`` trained and written once per module."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = _model(name, digits, tmp_path_factory)
        return cache[name]
    return get


ALL = ["snntorch_conv", "norse_conv", "snntorch_dense", "norse_dense",
       pytest.param("snntorch_residual", marks=pytest.mark.slow), pytest.param("norse_residual", marks=pytest.mark.slow)]


def in_float64(name: str, net):
    """The trained ``net`` again, in float64: a fresh ``MODELS[name]`` model with its weights,
    ``.double()``. snnTorch's spike functions return float32 whatever their input; their outputs
    are cast back to float64 (exact: they are 0 or 1)."""
    twin = MODELS[name][0]()
    twin.load_state_dict(net.state_dict())
    twin = twin.double().eval()
    for m in twin.modules():
        if isinstance(m, snn.Leaky):
            m.register_forward_hook(lambda module, inputs, out: out.double())
    return twin


@pytest.mark.parametrize("name", ALL)
def test_export_is_read_exactly(name, trained):
    """Our float64 run of the framework's file = the framework's own run of the same weights in
    float64, to 1e-9 (measured: equal), so a mismatch in tau, r, reset or an edge shows at once.

    Against the framework's float32 run no tolerance holds: a membrane can sit closer to the
    threshold than float32's rounding reaches. Measured on snntorch_residual trained with 2 threads
    (OMP_NUM_THREADS=2): a layer-1 neuron at step 3 is 9.6e-8 above the threshold in float64 and
    exactly on it in float32, whose membranes differ from float64's by up to 3.3e-6 before that step
    (8·9 products in its conv's sums; float32's unit roundoff is 6e-8): one spike flips, two more
    follow, and the logits move by 0.32. With 1 thread the training ends with other weights whose
    smallest margin is 2.2e-6, and the float32 comparison passed by that luck. In float64 the
    rounding is ~1e-15 against margins of ~1e-7 or more: the spikes are the same by construction."""
    net, run, path, dt, test = trained(name)
    g = read_nir(path)
    if "residual" in name:  # the join is two edges into the second LIF
        lifs = [k for k, n in g.nodes.items() if isinstance(n, nir.LIF)]
        assert sum(1 for a, b in g.edges if b == lifs[1]) == 2, g.edges
    graph = from_nir(g, dt=dt)
    x, _ = test.batch(torch.arange(64))
    x_tb = encode(x, T, "direct").double()
    with torch.no_grad():
        want = run(in_float64(name, net), x_tb)
    assert want.dtype == torch.float64 and float(want.abs().max()) > 0.1
    torch.testing.assert_close(run_float(graph, x_tb), want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_export_deploys(name, trained, tmp_path, capsys):
    """``export --target nir lava (netx)``: Lava = emulator on every spike of 20 samples; the
    framework's float run vs our fixed point on all 360 digits test images."""
    net, run, path, dt, test = trained(name)
    out = tmp_path / "out"
    targets = ["nir", "lava"] + ([] if "residual" in name else ["netx"])  # netx: feed-forward chains only
    rc = main(["export", "--json", str(path), "--target", *targets, "--dt", str(dt), "--data", "digits",
               "--lava-check", "20", "--out", str(out)])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    check = report["lava"]["lava_check"]
    assert check["spike_agreement"]["all"] == 1.0 and check["readout_identical"], check
    assert report["warnings"] == netx_warnings(report)  # nothing else to warn about; netx's inexact layers are named
    plan = load_plan(out / "student.lava.npz")
    if "dense" in name:  # the first Linear, on the flattened pixels, is the off-chip input link
        assert plan.input_link.conv is None and plan.input_link.matrix.shape == (64, 64), plan.input_link.name
    x, y = test.batch(torch.arange(len(test)))
    x_tb = encode(x, T, "direct")
    with torch.no_grad():
        fw_pred = run(net, x_tb).mean(0).argmax(-1).numpy()
    emu_pred = emulate(plan, x_tb.double().numpy()).logits.mean(0).argmax(-1)
    agreement = float((fw_pred == emu_pred).mean())
    fw_acc, emu_acc = float((fw_pred == y.numpy()).mean()), float((emu_pred == y.numpy()).mean())
    with capsys.disabled():
        print(f"\n| {name} | {agreement:.4f} | {fw_acc:.4f} | {emu_acc:.4f} | "
              f"{check.get('samples', 20)} samples, {check['spike_agreement']['all']:.0%} |")
    assert fw_acc > 0.8  # it learnt something: not two constant guesses agreeing
    # the target is >= 99 % agreement; one training's value moves with the training run
    # (98.3-100 % measured for the same model when the test order changes the float summation
    # order; bench/third_party_agreement.py measures the spread over seeds): the test guards 98 %
    assert agreement >= 0.98 and abs(fw_acc - emu_acc) <= 0.01, (agreement, fw_acc, emu_acc)
    assert np.isfinite(report["nir"]["accuracy"]["decision_agreement"])


@pytest.mark.parametrize("name", ["snntorch_conv", pytest.param("norse_conv", marks=pytest.mark.slow)])
def test_run_from_nir_on_the_framework_file(name, trained, tmp_path, capsys):
    """``run --from-nir`` on the framework's file: export → simulate (emulator on all 360 test
    images, Lava fixed_pt on 20) → energy → map → report; the emulator's accuracy is the fixed
    point's of the export comparison, and Lava equals the emulator on every spike of its 20 images."""
    net, run, path, dt, test = trained(name)
    assert main(["run", "--json", "--from-nir", str(path), "--data", "digits", "--dt", str(dt),
                 "--backends", "emulator", "lava-fixed_pt", "--lava-samples", "20", "--lava-check", "0",
                 "--out-dir", str(tmp_path), "--run-name", name, "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    export = result["export_accuracy"]
    assert result["samples"] == {"emulator": len(test), "lava-fixed_pt": 20}
    assert result["accuracy"]["emulator"] == pytest.approx(export["int_acc"], abs=2 / len(test))
    lava = json.loads((tmp_path / name / "simulate" / "lava-fixed_pt" / "simulate.json").read_text())
    agree = lava["agreement"]
    assert agree["spike_agreement"]["all"] == 1.0 and agree["readout_identical"], agree
    assert result["energy_per_sample_uj"]["emulator"] > 0 and (tmp_path / name / "report.html").is_file()


def test_adapter_refuses_a_pool_nir_cannot_say():
    """The Norse adapter's own AvgPool2d mapping refuses what NIR's AvgPool2d cannot hold."""
    from htakl_deploy.export.third_party import _stock_pool_flatten

    assert _stock_pool_flatten(torch.nn.AvgPool2d(2)).kernel_size.tolist() == [2, 2]
    assert _stock_pool_flatten(torch.nn.Flatten()).start_dim == 0  # batch-less, as snnTorch writes it
    with pytest.raises(ValueError, match="ceil_mode"):
        _stock_pool_flatten(torch.nn.AvgPool2d(3, 2, ceil_mode=True))
