"""Our NIR read by other frameworks' importers (issue 5): snnTorch and Norse, opt-in.

Both install next to the project's pins with ``--no-deps`` (snntorch 1.0.0 declares no
dependencies; nirtorch 2.6 needs only torch and nir; norse 1.1.0 declares torchvision but
imports without it) — see the Makefile, which installs them.

What the importers need from a file (measured, and why ``nir_io`` writes what it writes):

- Flatten: NIR 1.0.8's type inference reads ``Flatten.start_dim`` on batch-less shapes
  (``start_dim=1`` fails it); both importers apply ``start_dim`` to batched ``[B, C, H, W]``
  tensors (``start_dim=0`` flattens the batch and the next Linear fails: ``mat1 and mat2 shapes
  cannot be multiplied (1x262144 and 1024x10)``). ``start_dim=-3`` means "all but batch" to
  both, so the files load with plain ``nir.read(path)`` (the first test).
- LIF: ``tau = τ·dt``, ``r = 1`` (``decay_input``), ``v_leak = v_reset = 0``, ``dt = 1e-4``.
  snnTorch (dt fixed at 1e-4) builds ``Leaky(beta = 1 − dt/tau, threshold = v_th/(r·dt/tau),
  reset_mechanism='zero')``, i.e. SpikingJelly's LIF in units scaled by τ; also right for
  ``decay_input=False`` (``r = τ``). Norse (``from_nir(g, dt=1e-4)``; its default dt is 1e-3)
  builds ``LIFBoxCell``: ``v += dt/tau·(x − v)``, exactly SJ's ``decay_input=True`` update; it
  ignores ``r`` (warns), so ``decay_input=False`` students run wrongly there (23 % of
  spikes differ), and it has no AvgPool2d (the node is dropped: a ResNet's output comes out
  as the pre-pool feature map). snnTorch covers both, including residual joins (nirtorch sums
  a node's incoming edges).
- Measured on these students: 0 spike mismatches against our float64 runner, logits within
  1e-6 (the importers run float32).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import nir
import pytest
import torch
from torch import nn

from htakl_deploy.distill.models import build_model
from htakl_deploy.export.fold import fold_batchnorm
from htakl_deploy.export.graph import LIFNode, graph_from_classifier, run_float
from htakl_deploy.export.nir_io import write_nir

INSTALL = "pip install --no-deps snntorch==1.0.0 nirtorch==2.6 norse==1.1.0"


def _student(arch: str):
    """A BN-calibrated (so that it fires) float student and its input [T, B, C, H, W]."""
    if arch == "convnet":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data[:64] / 16.0, dtype=torch.float64).reshape(64, 1, 8, 8)
        x = x.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    else:
        x = torch.rand(4, 4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    m = build_model(arch, in_shape=tuple(x.shape[2:]), num_classes=10, spiking=True)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 1.0
            nn.init.constant_(mod.weight, 2.0)
            nn.init.constant_(mod.bias, 0.5)
    m.train()
    with torch.no_grad():
        m(x.float())
    return graph_from_classifier(fold_batchnorm(m).eval().double()), x


@pytest.fixture(scope="module", params=["convnet", "resnet20"])
def written(request, tmp_path_factory):
    g, x = _student(request.param)
    path = write_nir(g, tmp_path_factory.mktemp("nir") / f"{request.param}.nir")
    out, rec = run_float(g, x, record=True)
    spikes = {n: rec[n] for n, v in g.nodes.items() if isinstance(v, LIFNode)}
    assert max(float(s.mean()) for s in spikes.values()) > 0.05  # the comparison is not vacuous
    return request.param, path, x, out, spikes


def _run_imported(net: nn.Module, x: torch.Tensor, lif_names: list[str]):
    """Step the imported module over T (state carried by the module or returned by it);
    returns logits [T, B, K] and each LIF layer's spikes [T, B, ...] (found by nirtorch's
    sanitised name: dots become underscores)."""
    mods = dict(net.named_modules())
    spikes = {n: [] for n in lif_names}
    hooks = [mods[n.replace(".", "_")].register_forward_hook(
        lambda m, i, o, n=n: spikes[n].append((o[0] if isinstance(o, tuple) else o).detach()))
        for n in lif_names]
    outs, state = [], None
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                r = net(x[t].float()) if state is None else net(x[t].float(), state)
                out, state = r if isinstance(r, tuple) else (r, None)
                outs.append(out)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outs).double(), {n: torch.stack(v).double() for n, v in spikes.items()}


def _check(out, spikes, ref_out, ref_spikes):
    for n, s in ref_spikes.items():
        assert s.shape == spikes[n].shape and int((s != spikes[n]).sum()) == 0, n
    assert out.shape == ref_out.shape
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=0)


def test_plain_nir_read_type_checks_our_files(written):
    """``nir.read(path)`` with NIR's default type check, as a NIR user's first call (issue 14)."""
    arch, path, *_ = written
    g = nir.read(path)
    assert all(int(n.start_dim) == -3 for n in g.nodes.values() if isinstance(n, nir.Flatten))
    from htakl_deploy.export.nir_io import from_nir
    from htakl_deploy.export.quantize import quantize

    graph = from_nir(g)
    quant = write_nir(graph, path.with_name(f"{arch}_quant.nir"), quantized=quantize(graph))
    assert int(nir.read(quant).metadata["quantized"]) == 1


def test_snntorch_reproduces_the_float_student(written):
    pytest.importorskip("nirtorch", reason=f"nirtorch not installed (opt-in: {INSTALL})")
    import_nir = pytest.importorskip("snntorch.import_nir", reason=f"snntorch not installed (opt-in: {INSTALL})")
    arch, path, x, ref_out, ref_spikes = written
    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints its weight-scaling notes
        net = import_nir.import_from_nir(nir.read(path))
    out, spikes = _run_imported(net, x, list(ref_spikes))
    _check(out, spikes, ref_out, ref_spikes)


def test_norse_reproduces_the_float_convnet(written):
    pytest.importorskip("nirtorch", reason=f"nirtorch not installed (opt-in: {INSTALL})")
    norse = pytest.importorskip("norse.torch", reason=f"norse not installed (opt-in: {INSTALL})")
    arch, path, x, ref_out, ref_spikes = written
    if arch != "convnet":
        pytest.skip("norse 1.1.0 has no AvgPool2d and drops the node (ResNets end in an average pool)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch.load deprecation
        net = norse.from_nir(nir.read(path), dt=1e-4)
    out, spikes = _run_imported(net, x, list(ref_spikes))
    _check(out, spikes, ref_out, ref_spikes)

