"""CIFAR ResNets used as SNN students in the KD literature, without max-pooling.

``resnet19`` (Zheng et al. 2021, tdBN; BN here is plain BatchNorm2d, folded at export)::

    stem:   conv3x3(C→128) - BN - act
    stage1: 3 BasicBlocks, 128 ch, stride 1
    stage2: 3 BasicBlocks, 256 ch, stride 2 (first block)
    stage3: 2 BasicBlocks, 512 ch, stride 2 (first block)
    pool:   AvgPool2d(H/4 × W/4) — global average (8×8 at 32×32), written as a fixed-size
            AvgPool so it exports to NIR
    flatten
    fc1:    Linear(512 → 256) - act1 (no BN in the head)
    fc2:    Linear(256 → num_classes)

``resnet20`` (Sengupta et al. 2019 / Rathi et al. 2020 hybrid-conversion ResNet-20: 19 convs +
1 linear; their dropout is dropped and a BN added after every conv)::

    stem:   conv3x3(C→64) - BN - act, conv3x3(64→64) - BN - act, conv3x3(64→64) - BN - act
    pool:   AvgPool2d(2)                              (the original's own pooling is average)
    stage1: 2 BasicBlocks,  64 ch, stride 1
    stage2: 2 BasicBlocks, 128 ch, stride 2
    stage3: 2 BasicBlocks, 256 ch, stride 2
    stage4: 2 BasicBlocks, 512 ch, stride 2           (2×2 at 32×32)
    flatten
    fc:     Linear(512·2·2 → num_classes)             (no global pooling, as in the original)

BasicBlock (``ops.BasicBlock``): ``act(BN(conv3x3(act(BN(conv3x3(x))))) + shortcut(x))``,
shortcut = identity or conv1x1(stride) - BN; the add is of currents, before the neuron.
Block ``j`` of stage ``i`` is the module ``stage{i}.{j}``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from spikingjelly.activation_based import layer

from .classifier import Classifier, make_spec
from .ops import conv_bn_act, conv_out, make_act_factory, make_stage, require_spatial


def _stages(layers: OrderedDict, cin: int, hw: tuple[int, int], plan, act, arch: str):
    """Append ``stage1..N`` built from ``plan = [(channels, blocks, stride), ...]``."""
    h, w = hw
    for i, (cout, blocks, stride) in enumerate(plan, start=1):
        layers[f"stage{i}"] = make_stage(cin, cout, blocks, stride, act)
        cin = cout
        h, w = conv_out(h, stride=stride), conv_out(w, stride=stride)
        require_spatial(arch, (h, w), f"stage{i}")
    return cin, (h, w)


def resnet19(*, in_shape, num_classes: int, spiking: bool, tau: float = 2.0,
             v_threshold: float = 1.0) -> Classifier:
    spec = make_spec("resnet19", in_shape, num_classes, spiking, tau, v_threshold)
    c, h, w = spec["in_shape"]
    act = make_act_factory(spiking, tau, v_threshold)
    layers: OrderedDict = OrderedDict(stem=conv_bn_act(c, 128, act))
    plan = [(128, 3, 1), (256, 3, 2), (512, 2, 2)]
    c, (h, w) = _stages(layers, 128, (h, w), plan, act, "resnet19")
    taps = tuple(layers)
    layers["pool"] = layer.AvgPool2d((h, w), step_mode="m")
    layers["flatten"] = layer.Flatten(step_mode="m")
    layers["fc1"] = layer.Linear(c, 256, step_mode="m")
    layers["act1"] = act()
    layers["fc2"] = layer.Linear(256, spec["num_classes"], step_mode="m")
    return Classifier(layers, spec=spec, tap_names=taps)


def resnet20(*, in_shape, num_classes: int, spiking: bool, tau: float = 2.0,
             v_threshold: float = 1.0) -> Classifier:
    spec = make_spec("resnet20", in_shape, num_classes, spiking, tau, v_threshold)
    c, h, w = spec["in_shape"]
    act = make_act_factory(spiking, tau, v_threshold)
    stem = nn.Sequential(conv_bn_act(c, 64, act), conv_bn_act(64, 64, act), conv_bn_act(64, 64, act))
    layers: OrderedDict = OrderedDict(stem=stem, pool=layer.AvgPool2d(2, step_mode="m"))
    h, w = h // 2, w // 2
    require_spatial("resnet20", (h, w), "pool")
    plan = [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]
    c, (h, w) = _stages(layers, 64, (h, w), plan, act, "resnet20")
    taps = tuple(n for n in layers if n != "pool")
    layers["flatten"] = layer.Flatten(step_mode="m")
    layers["fc"] = layer.Linear(c * h * w, spec["num_classes"], step_mode="m")
    return Classifier(layers, spec=spec, tap_names=taps)
