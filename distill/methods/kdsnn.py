"""KDSNN baseline: logit KD (exactly the ``kd`` method: ``(1−α)·CE + α·τ²·KL``) plus
``w·MSE(mean_t F_st, F_te)`` between the student's firing rates and the teacher's feature map at
one stage (``--kdsnn-stage``, default the last). Twins have equal shapes; a student/teacher
channel (or size) mismatch raises, since this baseline has no adapter layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from htakl_deploy.distill.losses import FeatureNeeds, LossConfig, LossInputs, loss_kd

NEEDS = FeatureNeeds(student_features=True, teacher_features=True, stage_field="kdsnn_stage")


def feature_mse(fs_tbchw: torch.Tensor, ft_1bchw: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``mean_t fs`` ``[B, C, H, W]`` and the teacher's ``[1, B, ...]``."""
    fs, ft = fs_tbchw.mean(0), ft_1bchw.mean(0)
    if fs.shape[1] != ft.shape[1]:
        raise ValueError(
            f"kdsnn: student has {fs.shape[1]} channels at this stage, teacher {ft.shape[1]}; "
            "pick a stage where they match (--kdsnn-stage) — this baseline has no adapter"
        )
    if fs.shape != ft.shape:
        raise ValueError(f"kdsnn: feature shapes differ: student {tuple(fs.shape)}, teacher {tuple(ft.shape)}")
    return F.mse_loss(fs, ft)


def loss_kdsnn(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """``kd`` loss + ``kdsnn_feature_weight · feature_mse`` at the one tapped stage."""
    if not inputs.student_features or not inputs.teacher_features:
        raise ValueError("method 'kdsnn' needs student_features and teacher_features")
    (fs,) = inputs.student_features.values()
    (ft,) = inputs.teacher_features.values()
    return loss_kd(inputs, cfg) + cfg.kdsnn_feature_weight * feature_mse(fs, ft)
