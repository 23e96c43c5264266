"""What a method's loss sees for one batch: the student's forward plus what the method declares.

Logit methods (``needs is None``) get the student's per-step logits and the teacher's logits.
Feature methods get, per their ``FeatureNeeds``, the student's tapped stage, the teacher's tapped
stage, or the teacher's Grad-CAM of that stage (one extra teacher backward, to the tap only).
"""

from __future__ import annotations

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


def method_tap(model: Classifier, method: str, loss_cfg: LossConfig) -> str | None:
    """The tap a feature method reads (``None`` for logits-only methods); UserError if invalid."""
    needs = METHOD_NEEDS.get(method)
    if needs is None:
        return None
    field = needs.stage_field
    return resolve_stage(model, getattr(loss_cfg, field) if field else "last", field or "method")


def loss_inputs(
    net: torch.nn.Module,
    student: Classifier,
    teacher: Classifier | None,
    needs: FeatureNeeds | None,
    tap: str | None,
    x_tbchw: torch.Tensor,
    x_bchw: torch.Tensor,
    y: torch.Tensor,
    g: torch.Generator,
    cam_class: str,
) -> LossInputs:
    """Run the student (``net``: the model or its DDP wrapper) on ``x_tbchw`` and collect what
    the method needs; ``x_bchw`` is the same batch as the teacher sees it."""
    if needs is None:
        return LossInputs(net(x_tbchw), y, teacher_logits(teacher, x_bchw), generator=g)
    with student.tapped([tap]) as feats:
        out = net(x_tbchw)
    teacher_features = cam = None
    if needs.teacher_cam:
        classes = y if cam_class == "label" else None
        zt, cam = grad_cam(teacher, x_bchw.unsqueeze(0), classes, tap)
    elif needs.teacher_features:
        with torch.no_grad(), teacher.tapped([tap]) as t_feats:
            zt = teacher(x_bchw.unsqueeze(0))[0]
        teacher_features = dict(t_feats)
    else:
        zt = teacher_logits(teacher, x_bchw)
    return LossInputs(out, y, zt, student_features=dict(feats),
                      teacher_features=teacher_features, teacher_cam=cam, generator=g)
