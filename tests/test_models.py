"""Students and ANN twins: shapes, spikes, shared keys, spec round trip, op counts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import layer, neuron

from htakl_deploy.distill.models import ARCHS, Classifier, build_model
from htakl_deploy.distill.models.ops import BasicBlock

CIFAR = ((3, 32, 32), 100)
CASES = [
    ("convnet", (1, 8, 8), 10),
    ("convnet", (1, 28, 28), 10),
    ("convnet", *CIFAR),
    ("resnet19", *CIFAR),
    ("resnet20", *CIFAR),
    ("vgg16", *CIFAR),
]
IDS = [f"{a}-{'x'.join(map(str, s))}" for a, s, _ in CASES]

# Leaf modules a deployable student may contain (docs/DESIGN.md "Deployable students").
ALLOWED_LEAVES = (layer.Conv2d, layer.BatchNorm2d, layer.Linear, layer.AvgPool2d, layer.Flatten,
                  neuron.LIFNode, nn.ReLU, nn.Identity)


def _x(t: int, b: int, shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((t, b, *shape), generator=g)


def _build(arch, shape, k, spiking, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, in_shape=shape, num_classes=k, spiking=spiking)


def test_archs_registry():
    assert set(ARCHS) == {"convnet", "resnet19", "resnet20", "vgg16"}
    with pytest.raises(ValueError, match="convnet"):
        build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, spiking=True)


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
@pytest.mark.parametrize("spiking", [True, False], ids=["snn", "ann"])
def test_forward_shapes(arch, shape, k, spiking):
    model = _build(arch, shape, k, spiking)
    assert isinstance(model, Classifier)
    assert (model.in_shape, model.num_classes, model.spiking) == (shape, k, spiking)
    b = 2 if arch == "convnet" else 1  # keep the big nets cheap on a 2-core CPU
    with torch.no_grad():
        for t in (1, 4):
            assert model(_x(t, b, shape)).shape == (t, b, k)


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
def test_only_deployable_layers(arch, shape, k):
    for spiking in (True, False):
        model = _build(arch, shape, k, spiking)
        inside_lif = {f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, neuron.LIFNode)
                      for c, _ in m.named_modules() if c}  # the surrogate function module
        for name, m in model.named_modules():
            if name not in inside_lif and not list(m.children()):
                assert isinstance(m, ALLOWED_LEAVES), f"{arch}: {name} is {type(m).__name__}"
                assert getattr(m, "step_mode", "m") == "m", name


def test_lif_configuration():
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True,
                        tau=3.0, v_threshold=0.5)
    lifs = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    assert len(lifs) == 2
    for m in lifs:
        assert (m.tau, m.v_threshold, m.v_reset) == (3.0, 0.5, 0.0)
        assert m.decay_input and m.detach_reset and m.step_mode == "m"
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    ann = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=False)
    assert not any(isinstance(m, neuron.LIFNode) for m in ann.modules())


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
def test_snn_taps_are_binary_ann_taps_are_not(arch, shape, k):
    snn = _build(arch, shape, k, True)
    ann = _build(arch, shape, k, False)
    t, b = (3, 2) if arch == "convnet" else (2, 1)
    x = _x(t, b, shape) * 4.0
    assert snn.tap_names == ann.tap_names and len(snn.tap_names) >= 2
    with torch.no_grad():
        logits, feats = snn.forward_features(x, snn.tap_names)
    assert logits.shape == (t, b, k) and list(feats) == list(snn.tap_names)
    for name, f in feats.items():
        assert f.dim() == 5 and f.shape[:2] == (t, b), name
        assert torch.all((f == 0) | (f == 1)), f"{arch}: {name} is not binary"
    assert feats[snn.tap_names[0]].sum() > 0, "the first stage never fires"
    with torch.no_grad():
        _, feats_ann = ann.forward_features(x[:1], ann.tap_names[:1])
    f = feats_ann[ann.tap_names[0]]
    assert f.min() >= 0 and not torch.all((f == 0) | (f == 1))


def test_taps_support_gradients_and_reject_unknown_names():
    model = _build("resnet20", *CIFAR, True)
    last = model.tap_names[-1]
    logits, feats = model.forward_features(_x(2, 1, CIFAR[0]), [last, "stage1.0.act2"])
    assert feats["stage1.0.act2"].shape == (2, 1, 64, 16, 16)
    (grad,) = torch.autograd.grad(logits.sum(), feats[last])
    assert grad.shape == feats[last].shape and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown taps"):
        model.forward_features(_x(1, 1, CIFAR[0]), ["stage9"])
    # hooks are removed afterwards
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
def test_ann_and_snn_share_state_dict_keys(arch, shape, k):
    snn_sd = _build(arch, shape, k, True).state_dict()
    ann_sd = _build(arch, shape, k, False, seed=1).state_dict()
    assert list(snn_sd) == list(ann_sd)
    assert all(snn_sd[n].shape == ann_sd[n].shape for n in snn_sd)
    snn = _build(arch, shape, k, True)
    snn.load_state_dict(ann_sd)  # an ANN can initialise its SNN twin
    assert torch.equal(snn.state_dict()[next(iter(ann_sd))], next(iter(ann_sd.values())))


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
def test_spec_round_trip(arch, shape, k):
    model = _build(arch, shape, k, True)
    with torch.no_grad():  # make BN statistics non-trivial so they must be copied
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    spec = json.loads(json.dumps(model.spec))
    assert spec["arch"] == arch
    other = build_model(**spec)
    assert other.spec == model.spec
    other.load_state_dict(model.state_dict())
    model.eval(), other.eval()
    x = _x(2, 2, shape)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
        fresh = _build(arch, shape, k, True, seed=5).eval()
        assert not torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("bad", [
    (2, 1, 8, 8),          # [B, C, H, W]: no time axis
    (2, 1, 1, 8, 9),       # wrong W
    (2, 1, 3, 8, 8),       # wrong C
    (2, 1, 8, 8, 1),       # channels last
    (2, 1, 1, 1, 8, 8),
    (0, 1, 1, 8, 8),       # empty T
])
def test_wrong_input_layout_raises(bad):
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    with pytest.raises(ValueError, match=r"expected input \[T, B, C, H, W\] with \(C,H,W\)=\(1, 8, 8\)"):
        model(torch.zeros(bad))
    with pytest.raises(ValueError):
        model.forward_features(torch.zeros(bad), ["stage1"])


@pytest.mark.parametrize("kwargs", [
    dict(in_shape=(1, 8), num_classes=10, spiking=True),
    dict(in_shape=(1, 0, 8), num_classes=10, spiking=True),
    dict(in_shape=(1, 8, 8), num_classes=0, spiking=True),
    dict(in_shape=(1, 8, 8), num_classes=10, spiking=True, tau=1.0),
    dict(in_shape=(1, 8, 8), num_classes=10, spiking=True, v_threshold=0.0),
    dict(in_shape=(1, 8, 8), num_classes=10, spiking="yes"),
])
def test_invalid_build_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        build_model("convnet", **kwargs)


@pytest.mark.parametrize("arch,shape", [("vgg16", (3, 16, 16)), ("resnet20", (3, 1, 1))])
def test_too_small_input_raises(arch, shape):
    with pytest.raises(ValueError, match="too small"):
        build_model(arch, in_shape=shape, num_classes=10, spiking=True)


@pytest.mark.parametrize("arch,shape,k", [CASES[0], CASES[4]], ids=[IDS[0], IDS[4]])
def test_state_is_reset_between_calls(arch, shape, k):
    model = _build(arch, shape, k, True)  # train mode: BN batch statistics make neurons fire
    x = _x(4, 2, shape) * 3.0
    with torch.no_grad():
        first = model(x)
        carried = x  # the same layers run again *without* a reset: leftover state shows
        for module in model.children():
            carried = module(carried)
        second = model(x)
    assert not torch.equal(carried, first), "leftover state has no effect: test proves nothing"
    assert torch.equal(first, second)


def test_ann_twin_is_time_independent():
    model = _build("resnet20", *CIFAR, False).eval()
    x1 = _x(1, 2, CIFAR[0])
    with torch.no_grad():
        y1 = model(x1)
        y4 = model(x1.expand(4, -1, -1, -1, -1))
    assert torch.allclose(y4, y1.expand(4, -1, -1), atol=1e-5)


@pytest.mark.parametrize("arch,shape,k", [CASES[1], CASES[3]], ids=[IDS[1], IDS[3]])
def test_surrogate_gradient_reaches_first_conv(arch, shape, k):
    model = _build(arch, shape, k, True)
    assert any(isinstance(m, neuron.LIFNode) for m in model.modules())
    t, b = (4, 4) if arch == "convnet" else (2, 2)
    x = _x(t, b, shape) * 3.0
    y = torch.arange(b) % k
    loss = nn.functional.cross_entropy(model(x).mean(0), y)
    loss.backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_basic_block_shortcut():
    relu = nn.ReLU
    assert isinstance(BasicBlock(64, 64, 1, relu).shortcut, nn.Identity)
    down = BasicBlock(64, 128, 2, relu)
    assert isinstance(down.shortcut.conv, layer.Conv2d) and down.shortcut.conv.stride == (2, 2)
    assert down(torch.rand(1, 2, 64, 8, 8)).shape == (1, 2, 128, 4, 4)
    # the add happens before the activation: zero the residual path, output = act(shortcut)
    same = BasicBlock(8, 8, 1, relu)
    with torch.no_grad():
        same.bn2.weight.zero_(), same.bn2.bias.zero_()
    x = torch.randn(1, 2, 8, 4, 4)
    same.eval()
    assert torch.allclose(same(x), torch.relu(x))


def test_dense_ops_convnet_8x8_by_hand():
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    model.train()
    bn = model.stage1.bn
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    ops = model.dense_ops_per_sample()
    # conv: Cout·Hout·Wout·Cin·k·k ; linear: out·in
    expected = {
        "stage1.conv": 32 * 8 * 8 * 1 * 9,
        "stage2.conv": 64 * 4 * 4 * 32 * 9,
        "fc": 10 * (64 * 4 * 4),
    }
    assert ops["per_layer"] == expected
    assert ops["total"] == 18432 + 294912 + 10240
    # the dummy forward leaves mode, BN statistics and hooks untouched
    assert model.training
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    assert all(not m._forward_hooks for m in model.modules())


def test_dense_ops_convnet_28x28_by_hand():
    ops = build_model("convnet", in_shape=(1, 28, 28), num_classes=10, spiking=False).dense_ops_per_sample()
    assert ops["per_layer"] == {
        "stage1.conv": 32 * 14 * 14 * 1 * 9,
        "stage2.conv": 128 * 7 * 7 * 32 * 9,
        "stage3.conv": 128 * 4 * 4 * 128 * 9,
        "fc": 10 * 128 * 4 * 4,
    }


def test_dense_ops_resnet_counts_shortcut_convs():
    ops = build_model("resnet19", in_shape=(3, 32, 32), num_classes=100, spiking=True).dense_ops_per_sample()
    assert ops["per_layer"]["stage2.0.shortcut.conv"] == 256 * 16 * 16 * 128 * 1
    assert ops["per_layer"]["stage3.1.conv2"] == 512 * 8 * 8 * 512 * 9
    assert ops["per_layer"]["fc1"] == 512 * 256 and ops["per_layer"]["fc2"] == 256 * 100
    assert ops["total"] == sum(ops["per_layer"].values())


@pytest.mark.parametrize("arch,shape,k", CASES, ids=IDS)
def test_num_params(arch, shape, k):
    model = _build(arch, shape, k, True)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.num_params() == _build(arch, shape, k, False).num_params()


def test_num_params_convnet_8x8_by_hand():
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    conv = 32 * 1 * 9 + 64 * 32 * 9
    bn = 2 * 32 + 2 * 64
    fc = 1024 * 10 + 10
    assert model.num_params() == conv + bn + fc


@pytest.mark.parametrize("arch", ["resnet20", "convnet"])
def test_activation_checkpointing_gives_the_same_loss_gradients_and_bn_stats(arch):
    """``--checkpoint-activations``: the recomputed backward equals the plain one (loss, every
    gradient, a feature tap's gradient path, BN running statistics updated once)."""
    import copy

    torch.manual_seed(0)
    shape = (3, 16, 16) if arch == "resnet20" else (1, 8, 8)
    plain = build_model(arch, in_shape=shape, num_classes=5, spiking=True).train()
    ckpt = copy.deepcopy(plain).set_activation_checkpointing(True)
    assert ckpt.checkpoint_activations and any("forward" in m.__dict__ for m in ckpt.modules())
    x = torch.rand(3, 4, *shape) * 2
    y = torch.tensor([0, 1, 2, 3])
    results = []
    for model in (plain, ckpt):
        tap = model.tap_names[-1]
        logits, feats = model.forward_features(x, [tap])
        loss = torch.nn.functional.cross_entropy(logits.mean(0), y) + feats[tap].float().mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()},
                        {n: b.clone() for n, b in model.named_buffers()}))
    (l0, g0, b0), (l1, g1, b1) = results
    assert torch.equal(l0, l1)
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)
    assert any(g.abs().sum() > 0 for g in g0.values())
    assert all(torch.equal(b0[k], b1[k]) for k in b0)  # running stats: one update, not two
    ckpt.set_activation_checkpointing(False)
    assert not any("forward" in m.__dict__ for m in ckpt.modules())
    assert list(ckpt.state_dict()) == list(plain.state_dict())
