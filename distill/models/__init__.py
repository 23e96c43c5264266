"""Deployable students and their ANN twins.

One builder per architecture returns a ``Classifier``; ``spiking=True`` gives the SNN student
(multi-step LIF, hard reset to 0), ``spiking=False`` the ANN twin with ReLU in the same places
(same ``state_dict`` keys, so one can initialise the other). Both take ``[T, B, C, H, W]`` and
return per-timestep logits ``[T, B, K]``; the teacher is the twin fed T=1.

>>> model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
>>> same = build_model(**model.spec)
"""

from __future__ import annotations

from typing import Callable

from . import convnet, resnet, vgg
from .classifier import Classifier

# Each builder takes the keyword arguments of build_model except ``arch``.
ARCHS: dict[str, Callable[..., Classifier]] = {
    "convnet": convnet.convnet,
    "resnet19": resnet.resnet19,
    "resnet20": resnet.resnet20,
    "vgg16": vgg.vgg16,
}


def build_model(arch: str, *, in_shape: tuple[int, int, int], num_classes: int, spiking: bool,
                tau: float = 2.0, v_threshold: float = 1.0) -> Classifier:
    """Build ``arch`` (a key of ``ARCHS``) for inputs ``in_shape = (C, H, W)``.

    Raises ValueError for an unknown arch or invalid arguments (input too small included).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](in_shape=in_shape, num_classes=num_classes, spiking=spiking,
                       tau=tau, v_threshold=v_threshold)


__all__ = ["ARCHS", "Classifier", "build_model"]
