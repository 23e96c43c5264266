"""What a method's loss sees for one batch: the student's forward plus what the method declares.

Logit methods (``needs is None``) get the student's per-step logits and the teacher's logits.
Feature methods get, per their ``FeatureNeeds``, the student's tapped stage(s), the teacher's
tapped stage(s), or the teacher's Grad-CAM of that stage (one extra teacher backward, to the tap
only), and their own trainable module (``method_module``) if they have one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from htakl_deploy.distill.losses import FeatureNeeds, LossConfig, LossInputs
from htakl_deploy.distill.methods import METHOD_NEEDS
from htakl_deploy.distill.methods.ckdsnn import grad_cam
from htakl_deploy.distill.models import Classifier
from htakl_deploy.errors import UserError


def teacher_logits(teacher: Classifier | None, x_bchw: torch.Tensor) -> torch.Tensor | None:
    """The ANN teacher sees each image once: input ``[1, B, C, H, W]``, logits ``[B, K]``."""
    if teacher is None:
        return None
    with torch.no_grad():
        return teacher(x_bchw.unsqueeze(0))[0]


def resolve_stage(model: Classifier, stage_name: str, flag: str) -> str:
    """``"last"`` → the model's last feature stage; otherwise a name of ``model.tap_names``."""
    if stage_name == "last":
        return model.tap_names[-1]
    if stage_name not in model.tap_names:
        raise UserError(f"--{flag.replace('_', '-')}: got {stage_name!r}, expected last or one of "
                        f"{', '.join(model.tap_names)}")
    return stage_name


def feature_stages(model: Classifier) -> tuple[str, ...]:
    """Every feature stage of ``model.tap_names`` but the stem."""
    return tuple(t for t in model.tap_names if t != "stem")


def method_tap(model: Classifier, method: str, loss_cfg: LossConfig) -> str | tuple[str, ...] | None:
    """The tap a feature method reads — a tuple of taps for ``all_stages`` methods, ``None`` for
    logits-only methods; UserError if invalid."""
    needs = METHOD_NEEDS.get(method)
    if needs is None:
        return None
    if needs.all_stages:
        return feature_stages(model)
    field = needs.stage_field
    return resolve_stage(model, getattr(loss_cfg, field) if field else "last", field or "method")


def method_module(model: Classifier, method: str, loss_cfg: LossConfig, tap: str | Sequence[str] | None,
                  seed: int) -> torch.nn.Module | None:
    """The method's own trainable module (``FeatureNeeds.module``), or ``None``.

    Sized from the tapped stage's channel count (one forward of ``model`` on a zero image, on its
    device — shapes only on ``meta``), built on the CPU with its initial weights drawn from a
    generator seeded by ``seed`` (the global RNG is left as it was), then moved to the model's
    device. The same seed gives the same module, so a resumed run rebuilds it before loading it.
    """
    needs = METHOD_NEEDS.get(method)
    if needs is None or needs.module is None:
        return None
    if not isinstance(tap, str):
        raise ValueError(f"method {method!r}: a trainable module needs exactly one tap, got {tap!r}")
    param = next(model.parameters())
    x = torch.zeros((1, 1, *model.in_shape), dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.tapped([tap]) as feats:
            model(x)
    finally:
        model.train(was_training)
    channels = int(feats[tap].shape[2])
    torch_seed = int(np.random.SeedSequence([int(seed), 7]).generate_state(1, dtype=np.uint64)[0] >> 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        module = needs.module(channels, loss_cfg)
    return module.to(device=param.device, dtype=param.dtype)


def loss_inputs(
    net: torch.nn.Module,
    student: Classifier,
    teacher: Classifier | None,
    needs: FeatureNeeds | None,
    tap: str | Sequence[str] | None,
    x_tbchw: torch.Tensor,
    x_bchw: torch.Tensor,
    y: torch.Tensor,
    g: torch.Generator,
    cam_class: str,
    module: torch.nn.Module | None = None,
) -> LossInputs:
    """Run the student (``net``: the model or its DDP wrapper) on ``x_tbchw`` and collect what
    the method needs; ``x_bchw`` is the same batch as the teacher sees it. ``module``: the
    method's trainable module (``method_module``, or its DDP wrapper), handed to the loss."""
    if needs is None:
        return LossInputs(net(x_tbchw), y, teacher_logits(teacher, x_bchw), generator=g)
    taps = [tap] if isinstance(tap, str) else list(tap)
    with student.tapped(taps) as feats:
        out = net(x_tbchw)
    teacher_features = cam = None
    if needs.teacher_cam:
        classes = y if cam_class == "label" else None
        zt, cam = grad_cam(teacher, x_bchw.unsqueeze(0), classes, taps[0])
    elif needs.teacher_features:
        with torch.no_grad(), teacher.tapped(taps) as t_feats:
            zt = teacher(x_bchw.unsqueeze(0))[0]
        teacher_features = dict(t_feats)
    else:
        zt = teacher_logits(teacher, x_bchw)
    return LossInputs(out, y, zt, student_features=dict(feats),
                      teacher_features=teacher_features, teacher_cam=cam, generator=g, module=module)
