"""LaSNN baseline: D. Hong, J. Shen, Y. Qi, Y. Wang, "LaSNN: Layer-wise ANN-to-SNN Distillation for
Effective and Efficient Training in Deep Spiking Neural Networks", arXiv:2304.09101 (2023).

Layer-wise distillation through attention maps: at every feature stage ``j`` (``tap_names`` but the
stem), each sample's feature map is compressed to a spatial attention map
``A(F) = mean_c |F_c|^p`` ``[H·W]`` (p = ``lasnn_p``, 2), normalised to unit L2 norm, and

    L = kd + β/2 · Σ_j mean_{b, hw} (Q_s^j − Q_t^j)²,   Q = A / ‖A‖₂

with ``F_s = mean_t`` of the student's spikes (firing rates) and ``F_t`` the teacher's ReLU map of
the same stage (β = ``lasnn_beta``, 100). The attention form is that of attention transfer
(Zagoruyko & Komodakis, ICLR 2017), which the LaSNN abstract's "attention scheme" that "compresses"
the ANN's knowledge names; channel counts may differ (the map sums them away), so no projection
and no trainable parameter. β: attention transfer uses 1000 with maps of 32×32 … 8×8; on this
project's small maps (digits 8×8 and 4×4) β = 1000 made the term ~5× the KD loss at the start and
kept the sparse SNN stage silent — a map with a few spikes is farther from the teacher's unit map
than an all-zero one — (digits convnet, T = 1: stage-2 firing 0.5 % vs 3.9 % with ``kd``, test
accuracy 20 % after the grid's 30 epochs), so the default is 100 (6 epochs: 60.3 % vs ``kd``'s
59.2 %); ``--lasnn-beta 1000`` gives the attention-transfer value. All stages are distilled jointly in one stage of training, and the
logit term is the project's ``kd`` (same as ``kdsnn``), so the two baselines differ only in the
feature term.
"""

from __future__ import annotations

import torch

from htakl_deploy.distill.losses import FeatureNeeds, LossConfig, LossInputs, loss_kd

NEEDS = FeatureNeeds(student_features=True, teacher_features=True, all_stages=True)
_EPS = 1e-12  # as F.normalize: a map that is all zero stays zero


def attention(f_bchw: torch.Tensor, p: float) -> torch.Tensor:
    """Unit-L2 spatial attention ``[B, H·W]`` of ``[B, C, H, W]``: ``mean_c |F|^p``, normalised."""
    a = f_bchw.abs().pow(p).mean(1).flatten(1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(_EPS)


def attention_distance(fs_tbchw: torch.Tensor, ft_1bchw: torch.Tensor, p: float) -> torch.Tensor:
    """``mean_{b,hw} (Q_s − Q_t)²`` between ``mean_t fs`` and the teacher's map at one stage."""
    fs, ft = fs_tbchw.mean(0), ft_1bchw.mean(0)
    if fs.shape[0] != ft.shape[0] or fs.shape[2:] != ft.shape[2:]:
        raise ValueError(f"lasnn: student map {tuple(fs.shape)} and teacher map {tuple(ft.shape)} "
                         "differ in batch or spatial size")
    return (attention(fs, p) - attention(ft, p)).pow(2).mean()


def loss_lasnn(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """``kd`` loss + ``lasnn_beta / 2 · Σ_stages attention_distance``."""
    if not inputs.student_features or not inputs.teacher_features:
        raise ValueError("method 'lasnn' needs student_features and teacher_features")
    if set(inputs.student_features) != set(inputs.teacher_features):
        raise ValueError("lasnn: student and teacher were tapped at different stages")
    at = sum(attention_distance(fs, inputs.teacher_features[name], cfg.lasnn_p)
             for name, fs in inputs.student_features.items())
    return loss_kd(inputs, cfg) + cfg.lasnn_beta / 2 * at
