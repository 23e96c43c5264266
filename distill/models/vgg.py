"""``vgg16``: the CIFAR VGG-16 with BatchNorm, max-pooling replaced by ``AvgPool2d(2)``.

Layers (act = LIF for the SNN, ReLU for the ANN twin; every conv is 3×3, pad 1, no bias,
followed by BN and act)::

    stage1: 64, 64            pool1: AvgPool2d(2)
    stage2: 128, 128          pool2: AvgPool2d(2)
    stage3: 256, 256, 256     pool3: AvgPool2d(2)
    stage4: 512, 512, 512     pool4: AvgPool2d(2)
    stage5: 512, 512, 512     pool5: AvgPool2d(2)
    flatten
    fc: Linear(512·H/32·W/32 → num_classes)   (512 → K at 32×32)

Head choice: the single Linear(512 → K) common in CIFAR SNN work, not the 4096-4096 head.
Inputs need H, W ≥ 32. Convs inside a stage are named ``stageN.0``, ``stageN.1``, … with
children ``conv``, ``bn``, ``act``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from spikingjelly.activation_based import layer

from .classifier import Classifier, make_spec
from .ops import conv_bn_act, make_act_factory, require_spatial

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16(*, in_shape, num_classes: int, spiking: bool, tau: float = 2.0,
          v_threshold: float = 1.0) -> Classifier:
    spec = make_spec("vgg16", in_shape, num_classes, spiking, tau, v_threshold)
    c, h, w = spec["in_shape"]
    act = make_act_factory(spiking, tau, v_threshold)
    layers: OrderedDict = OrderedDict()
    taps = []
    for i, widths in enumerate(STAGES, start=1):
        convs = []
        for cout in widths:
            convs.append(conv_bn_act(c, cout, act))
            c = cout
        layers[f"stage{i}"] = nn.Sequential(*convs)
        taps.append(f"stage{i}")
        layers[f"pool{i}"] = layer.AvgPool2d(2, step_mode="m")
        h, w = h // 2, w // 2
        require_spatial("vgg16", (h, w), f"pool{i}")
    layers["flatten"] = layer.Flatten(step_mode="m")
    layers["fc"] = layer.Linear(c * h * w, spec["num_classes"], step_mode="m")
    return Classifier(layers, spec=spec, tap_names=taps)
