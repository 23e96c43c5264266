"""BKDSNN baseline: Z. Xu, K. You, Q. Guo, X. Wang, Z. He, "BKDSNN: Enhancing the Performance of
Learning-Based Spiking Neural Networks Training with Blurred Knowledge Distillation", ECCV 2024.

Blurred knowledge distillation: the student's feature is *blurred* — a random share λ of its
channels is zeroed — and a small trainable generator ``G`` must regenerate the teacher's feature
from what is left:

    L = kd + α · 1/B Σ_b ‖G(M_b ⊙ f_s,b) − f_t,b‖²,   M_b,c = 1[u_b,c ≥ λ],  u ~ U(0, 1)

As in the authors' public code for CNN students (SEW-ResNet): ``f`` is the tapped stage (default
the last) averaged over time and globally average-pooled, ``[B, C]`` (the student's firing rates,
the teacher's ReLU features); the mask is drawn per sample and channel; the sum is over channels,
divided by the batch size; α = ``bkdsnn_alpha`` (2e-3, the authors' CIFAR default; their ImageNet
runs use 7e-5) and λ = ``bkdsnn_mask_ratio`` (0.15). Their generator is Conv3×3–ReLU–Conv3×3 with
C channels applied to the pooled 1×1 map, where only the kernels' centre taps act: it is exactly
``Linear(C, C)–ReLU–Linear(C, C)``, which is what is built here (``generator``; twins have equal
channels, so no 1×1 alignment conv). ``G`` is trained with the student by the same optimiser and
saved in the checkpoint (``FeatureNeeds.module``); it is not part of the exported network.
The mask comes from the step's seeded generator, so a resumed run draws the same masks.
Their logit term is WSLD (weighted soft labels); here it is the project's ``kd``, as for ``kdsnn``
and ``lasnn``, so the feature baselines differ only in their feature term.
"""

from __future__ import annotations

import torch
from torch import nn

from htakl_deploy.distill.losses import FeatureNeeds, LossConfig, LossInputs, loss_kd


def generator(channels: int, cfg: LossConfig | None = None) -> nn.Module:
    """``G``: ``Linear(C, C) – ReLU – Linear(C, C)`` on pooled features ``[B, C]``."""
    return nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))


NEEDS = FeatureNeeds(student_features=True, teacher_features=True, stage_field="bkdsnn_stage",
                     module=generator)


def pooled(f_tbchw: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` → mean over T, H, W → ``[B, C]``."""
    return f_tbchw.mean(dim=(0, 3, 4))


def channel_mask(shape: tuple[int, int], ratio: float, g: torch.Generator | None,
                 like: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` of 0 (probability ``ratio``) and 1, drawn on the CPU from ``g``."""
    u = torch.rand(shape, generator=g, dtype=torch.float32)
    return (u >= ratio).to(dtype=like.dtype, device=like.device)


def blurred_distance(g_module: nn.Module, fs_tbchw: torch.Tensor, ft_1bchw: torch.Tensor,
                     mask_bc: torch.Tensor) -> torch.Tensor:
    """``1/B Σ_b ‖G(M_b ⊙ pool(fs)_b) − pool(ft)_b‖²``."""
    fs, ft = pooled(fs_tbchw), pooled(ft_1bchw)
    if fs.shape != ft.shape:
        raise ValueError(f"bkdsnn: student has {tuple(fs.shape)} pooled features, teacher {tuple(ft.shape)}; "
                         "pick a stage where the channels match (--bkdsnn-stage)")
    return (g_module(fs * mask_bc) - ft).pow(2).sum() / fs.shape[0]


def loss_bkdsnn(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """``kd`` loss + ``bkdsnn_alpha · blurred_distance`` at the one tapped stage."""
    if not inputs.student_features or not inputs.teacher_features or inputs.module is None:
        raise ValueError("method 'bkdsnn' needs student_features, teacher_features and its generator module")
    (fs,) = inputs.student_features.values()
    (ft,) = inputs.teacher_features.values()
    mask = channel_mask((fs.shape[1], fs.shape[2]), cfg.bkdsnn_mask_ratio, inputs.generator, fs)
    return loss_kd(inputs, cfg) + cfg.bkdsnn_alpha * blurred_distance(inputs.module, fs, ft, mask)
