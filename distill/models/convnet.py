"""``convnet``: the small default student, sized for 8×8 digits and 28×28 Fashion-MNIST.

Layers (any ``(C, H, W)``; act = LIF for the SNN, ReLU for the ANN twin)::

    stage1: conv3x3(C→32, stride s, p1) - BN - act
    stage2: conv3x3(32→W, s2, p1) - BN - act
    stage3: conv3x3(W→W, s2, p1) - BN - act       only for "large" inputs
    flatten
    fc:     Linear(W·H'·W' → num_classes)

The rule depends on ``in_shape`` only: an input is *small* if min(H, W) ≤ 8 (8×8 digits):
s = 1, W = 64 and no stage3 (8→8→4, fc 1024→K). Otherwise it is *large* (28×28
Fashion-MNIST): s = 2, W = 128 and stage3 present (28→14→7→4, fc 2048→K). W = 128 rather than
64 for large inputs because with 64 both the student and its ANN twin underfit Fashion-MNIST
(train accuracy under crop+flip below test, student 89.3 %, twin 90.2 %).

Why stride 2 in the first conv of large inputs: CPU training time. SpikingJelly's CPU LIF is
a Python loop over T, and a full-resolution 32-channel LIF layer (28·28·32 neurons) alone
costs ~240 ms per forward+backward at B=128, T=4 on 2 cores; with s = 1 a training step
took ~0.55–0.75 s (≈ 5 min per Fashion-MNIST epoch), with s = 2 ~0.12 s (≈ 1 min).
No pooling at all: the strided convs downsample, so every layer boundary carries spikes
except the logits.
"""

from __future__ import annotations

from collections import OrderedDict

from spikingjelly.activation_based import layer

from .classifier import Classifier, make_spec
from .ops import conv_bn_act, conv_out, make_act_factory


def convnet(*, in_shape, num_classes: int, spiking: bool, tau: float = 2.0,
            v_threshold: float = 1.0) -> Classifier:
    spec = make_spec("convnet", in_shape, num_classes, spiking, tau, v_threshold)
    c, h, w = spec["in_shape"]
    act = make_act_factory(spiking, tau, v_threshold)
    layers: OrderedDict = OrderedDict()
    large = min(h, w) > 8
    stride1 = 2 if large else 1
    layers["stage1"] = conv_bn_act(c, 32, act, stride=stride1)
    h, w = conv_out(h, stride=stride1), conv_out(w, stride=stride1)
    width = 128 if large else 64
    layers["stage2"] = conv_bn_act(32, width, act, stride=2)
    h, w = conv_out(h, stride=2), conv_out(w, stride=2)
    if large:
        layers["stage3"] = conv_bn_act(width, width, act, stride=2)
        h, w = conv_out(h, stride=2), conv_out(w, stride=2)
    taps = tuple(layers)
    layers["flatten"] = layer.Flatten(step_mode="m")
    layers["fc"] = layer.Linear(width * h * w, spec["num_classes"], step_mode="m")
    return Classifier(layers, spec=spec, tap_names=taps)
