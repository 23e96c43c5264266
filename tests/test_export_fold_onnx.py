"""BN folding (exact in float64, spikes identical) and ONNX export (onnxruntime == PyTorch).

Every model gets non-trivial BN statistics first (``_randomise_bn``: running stats from a
training-mode pass on random data, then random affine parameters), so folding changes the
weights, and SNN tests check that neurons actually spike, so equal outputs are not trivially
equal bias-only logits.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from spikingjelly.activation_based import layer, neuron

from htakl_deploy.distill.models import Classifier, build_model
from htakl_deploy.distill.models.classifier import make_spec
from htakl_deploy.export.fold import fold_batchnorm
from htakl_deploy.export.onnx_export import UnrolledLIF, export_onnx

CIFAR = (3, 32, 32)


def _randomise_bn(model: Classifier, gen: torch.Generator, *, batch: int = 2) -> Classifier:
    """Set every BN's running stats to the statistics of one random batch (momentum None =
    cumulative average, so after one pass they are that batch's), then randomise gamma/beta.
    One image is enough for the CIFAR nets (the stats pool over H·W too) and keeps them fast."""
    param = next(model.parameters())
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand((1, batch, *model.in_shape), generator=gen, dtype=param.dtype))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.3, generator=gen)
    return model.eval()


def _acts(model: Classifier) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (neuron.LIFNode, nn.ReLU))]


FOLD_CASES = [  # arch, in_shape, batch compared (and used for the BN statistics)
    ("convnet", (1, 8, 8), 4),
    ("convnet", (1, 28, 28), 4),
    ("resnet19", CIFAR, 1),
    ("resnet20", CIFAR, 1),
    ("vgg16", CIFAR, 2),
]


@pytest.mark.parametrize("spiking", [True, False], ids=["snn", "ann"])
@pytest.mark.parametrize("arch,in_shape,batch", FOLD_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_fold_matches_unfolded(arch, in_shape, batch, spiking):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    # float64 so that no membrane potential lands within rounding of the threshold: the
    # spikes of the folded model must then be identical, not merely close.
    model = _randomise_bn(build_model(arch, in_shape=in_shape, num_classes=10, spiking=spiking).double(), gen,
                          batch=batch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)

    # The input model is untouched and the copy has no BN left.
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, _BatchNorm) for m in model.modules())
    assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
    convs = [n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(folded.get_submodule(n).bias is not None for n in convs)
    assert not torch.equal(folded.get_submodule(convs[0]).weight, model.get_submodule(convs[0]).weight)

    steps = 2 if spiking else 1
    x = torch.rand((steps, batch, *in_shape), generator=gen, dtype=torch.float64)
    acts = _acts(model)
    with torch.no_grad(), model.tapped(acts) as ref_acts, folded.tapped(acts) as new_acts:
        ref = model(x)
        out = folded(x)
    err = float((out - ref).abs().max())
    assert err <= 1e-5, f"{arch} max |Δlogit| = {err:.3g}"
    if spiking:
        flips = {n: int((ref_acts[n] != new_acts[n]).sum()) for n in acts}
        assert not any(flips.values()), f"spikes differ after folding: {flips}"
        rate = float(torch.cat([ref_acts[n].flatten() for n in acts]).mean())
        assert 0.01 < rate < 0.9, f"degenerate test: mean spike rate {rate:.3f}"


def test_fold_float32_convnet_within_1e5():
    gen = torch.Generator().manual_seed(1)
    model = _randomise_bn(build_model("convnet", in_shape=(1, 28, 28), num_classes=10, spiking=False), gen)
    x = torch.rand((1, 8, 1, 28, 28), generator=gen)
    with torch.no_grad():
        err = float((fold_batchnorm(model)(x) - model(x)).abs().max())
    assert err <= 1e-5


def _tiny(layers: "OrderedDict[str, nn.Module]") -> Classifier:
    spec = make_spec("tiny", (1, 4, 4), 3, False, 2.0, 1.0)
    return Classifier(layers, spec=spec, tap_names=())


def test_fold_rejects_bn_after_activation_naming_it():
    model = _tiny(OrderedDict(
        conv=layer.Conv2d(1, 2, 3, padding=1, step_mode="m"),
        act=nn.ReLU(),
        bn=layer.BatchNorm2d(2, step_mode="m"),
        flatten=layer.Flatten(step_mode="m"),
        fc=layer.Linear(32, 3, step_mode="m"),
    ))
    with pytest.raises(ValueError, match=r"'bn'.*follows 'act'"):
        fold_batchnorm(model)


def test_fold_rejects_bn_on_input_and_folds_linear_bn1d():
    with pytest.raises(ValueError, match=r"'bn0'.*model input"):
        fold_batchnorm(_tiny(OrderedDict(
            bn0=layer.BatchNorm2d(1, step_mode="m"), flatten=layer.Flatten(step_mode="m"),
            fc=layer.Linear(16, 3, step_mode="m"))))
    gen = torch.Generator().manual_seed(0)
    model = _randomise_bn(_tiny(OrderedDict(
        flatten=layer.Flatten(step_mode="m"), fc=layer.Linear(16, 3, bias=False, step_mode="m"),
        bn=layer.BatchNorm1d(3, step_mode="m"))).double(), gen)
    x = torch.rand((2, 5, 1, 4, 4), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)(x), model(x), rtol=0, atol=1e-12)


def test_unrolled_lif_equals_spikingjelly():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((6, 3, 50), generator=gen, dtype=torch.float64) * 2
    for kwargs in ({"v_reset": 0.0}, {"v_reset": None}, {"v_reset": 0.0, "decay_input": False}):
        sj = neuron.LIFNode(tau=2.0, v_threshold=1.0, step_mode="m", **kwargs)
        ours = UnrolledLIF(tau=2.0, v_threshold=1.0, v_reset=kwargs["v_reset"],
                           decay_input=kwargs.get("decay_input", True))
        ref = sj(x)
        assert 0.05 < float(ref.mean()) < 0.9
        assert torch.equal(ours(x), ref), kwargs
    ref = neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="m")(x)
    assert torch.equal(UnrolledLIF(tau=None, v_threshold=1.0, v_reset=0.0)(x), ref)


ONNX_CASES = [
    ("convnet", (1, 8, 8), 4, 3, False),
    ("resnet20", CIFAR, 2, 2, True),
]


@pytest.mark.parametrize("spiking", [True, False], ids=["snn", "ann"])
@pytest.mark.parametrize("arch,in_shape,steps,batch,fold", ONNX_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_onnx_matches_pytorch(tmp_path, arch, in_shape, steps, batch, fold, spiking):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = _randomise_bn(build_model(arch, in_shape=in_shape, num_classes=10, spiking=spiking), gen)
    if fold:
        model = fold_batchnorm(model)
    steps = steps if spiking else 1
    path = export_onnx(model, tmp_path / "m.onnx", steps, batch_size=batch)
    assert path == tmp_path / "m.onnx" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("x", "logits")
    acts = _acts(model)
    for b in (batch, batch + 2):  # the export batch and another one: B is a dynamic axis
        x = torch.rand((steps, b, *in_shape), generator=gen) * 2
        with torch.no_grad(), model.tapped(acts) as seen:
            ref = model(x)
        feed = x
        if spiking:
            rate = float(torch.cat([seen[n].flatten() for n in acts]).mean())
            assert 0.01 < rate < 0.9, f"degenerate test: mean spike rate {rate:.3f}"
        else:
            feed, ref = x[0], ref[0]  # the teacher graph takes [B, C, H, W]
        got = session.run(None, {"x": feed.numpy()})[0]
        assert got.shape == tuple(ref.shape)
        # float32 sums in another order: the error scales with the logits (|logit| ≈ 40 for
        # the ANN ResNet-20 with these BN statistics), so 1e-4 is relative to max(1, |logit|).
        err = float(np.abs(got - ref.numpy()).max())
        scale = max(1.0, float(ref.abs().max()))
        assert err <= 1e-4 * scale, f"{arch} B={b}: max |onnxruntime − torch| = {err:.3g}, |logit| ≤ {scale:.3g}"
        assert float(ref.std(dim=-2).max()) > 1e-3  # logits depend on the input


def test_onnx_student_rejects_other_timesteps(tmp_path):
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    path = export_onnx(model, tmp_path / "s.onnx", 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros((3, 2, 1, 8, 8), np.float32)})
    with pytest.raises(Exception, match="(?i)dim|shape"):
        session.run(None, {"x": np.zeros((4, 2, 1, 8, 8), np.float32)})


def test_onnx_rejects_bad_arguments(tmp_path):
    ann = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=False)
    with pytest.raises(ValueError, match="timesteps must be 1"):
        export_onnx(ann, tmp_path / "a.onnx", 4)
    snn = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    with pytest.raises(ValueError, match="timesteps"):
        export_onnx(snn, tmp_path / "a.onnx", 0)
    snn.stage1.act = neuron.ParametricLIFNode(step_mode="m")
    with pytest.raises(ValueError, match=r"'stage1.act'.*ParametricLIFNode"):
        export_onnx(snn, tmp_path / "a.onnx", 2)
    assert list(tmp_path.iterdir()) == []
