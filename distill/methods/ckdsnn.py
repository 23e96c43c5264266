"""CKDSNN (X. Liu et al., AAAI 2026, arXiv:2511.06902): ``CE + β·SAMD + γ·NLD``.

- **NLD** (noise-smoothed logits): on the student's output logits ``z = mean_t zs`` ``[B, K]``,
  ``ε ~ N(μ, σ²)`` with ``μ, σ`` the mean and std of each sample's logits over classes,
  ``z_soft = z + λ·ε``, ``L_NLD = τ²·KL(softmax(zt/τ) ‖ softmax(z_soft/τ))`` (batch mean).
  ``ε = μ + σ·n`` with ``n ~ N(0, 1)`` from the step's generator (reparameterised, so the
  gradient flows through μ and σ too).
- **SAMD** (saliency-scaled activation maps): teacher Grad-CAM ``M_te`` ``[B, H, W]`` at the last
  stage vs the student's spike activation map ``M_st = Σ_t Σ_c F_st`` ``[B, H, W]``; each map is
  min–max normalised per sample (as in the authors' code; the seed only says the magnitudes
  differ), turned into a distribution over the ``H·W`` positions by ``softmax(M/𝒯)``, and
  ``L_SAMD = 𝒯²·KL(P_te ‖ P_st)`` (batch mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from htakl_deploy.distill.losses import FeatureNeeds, LossConfig, LossInputs, forward_kl

NEEDS = FeatureNeeds(student_features=True, teacher_cam=True)
_EPS = 1e-6


def grad_cam(
    teacher: torch.nn.Module, x_1bchw: torch.Tensor, classes: torch.Tensor | None, tap: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits ``[B, K]`` and Grad-CAM ``[B, H, W]`` of ``tap`` for ``classes`` ``[B]``
    (``None``: the teacher's own prediction); both without grad.

    ``CAM = ReLU(Σ_c w_c·A_c)``, ``w_c = mean_hw ∂score/∂A_c``, where ``score`` is the sum over
    the batch of the chosen class logits. The tapped map is a grad-requiring leaf, so this is one
    teacher forward plus one backward through the layers after the tap, never to parameters.
    """
    with teacher.tapped([tap], as_leaf=True) as feats, torch.enable_grad():
        logits = teacher(x_1bchw)[0]
    target = logits.argmax(-1) if classes is None else classes
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), feats[tap])
    a, g = feats[tap][0], g[0]  # [B, C, H, W]
    cam = torch.relu((g.mean(dim=(-2, -1), keepdim=True) * a).sum(1))
    return logits.detach(), cam.detach()


def _minmax(m_bhw: torch.Tensor, min_range: float = 0.0) -> torch.Tensor:
    """Per-sample min–max normalisation to [0, 1], ``[B, H·W]``; the range ``hi − lo`` is taken as
    at least ``min_range`` (see ``samd``)."""
    flat = m_bhw.flatten(1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    return (flat - lo) / ((hi - lo).clamp(min=min_range) + _EPS)


def samd(sam_tbchw: torch.Tensor, cam_bhw: torch.Tensor, temperature: float) -> torch.Tensor:
    """``𝒯²·KL(P_te ‖ P_st)`` between the teacher CAM ``[B, H, W]`` and the student's spikes
    ``[T, B, C, H, W]`` summed over T and C.

    The student map holds spike counts, so a map that is not constant has ``hi − lo ≥ 1``; its
    range is floored at 1. That changes nothing for such maps and keeps a constant map (e.g. a
    sample with no spikes at the last stage) from dividing by ``_EPS``: its normalised map is 0
    either way, but the gradient through it was ``1/_EPS`` = 10⁶× too large, which blew up the
    students' weights (Fashion-MNIST: conv weight norms of 340–2,300 instead of ~0.7)."""
    m_st = sam_tbchw.sum(dim=(0, 2))
    if m_st.shape != cam_bhw.shape:
        raise ValueError(
            f"SAMD needs student and teacher maps of the same size, got {tuple(m_st.shape)} "
            f"and {tuple(cam_bhw.shape)}"
        )
    log_pt = F.log_softmax(_minmax(cam_bhw) / temperature, dim=-1)
    log_ps = F.log_softmax(_minmax(m_st, min_range=1.0) / temperature, dim=-1)
    return temperature**2 * forward_kl(log_pt, log_ps).mean()


def nld(
    z_bk: torch.Tensor, zt_bk: torch.Tensor, lam: float, temperature: float, noise_bk: torch.Tensor
) -> torch.Tensor:
    """``τ²·KL(softmax(zt/τ) ‖ softmax((z + λ·(μ + σ·n))/τ))``; ``noise_bk`` is ``n ~ N(0, 1)``."""
    mu = z_bk.mean(-1, keepdim=True)
    sigma = z_bk.std(-1, keepdim=True)
    z_soft = z_bk + lam * (mu + sigma * noise_bk)
    log_pt = F.log_softmax(zt_bk / temperature, dim=-1)
    log_ps = F.log_softmax(z_soft / temperature, dim=-1)
    return temperature**2 * forward_kl(log_pt, log_ps).mean()


def loss_ckdsnn(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """``CE(mean_t zs, y) + β·SAMD + γ·NLD``; needs teacher logits, the teacher CAM and the
    student's last-stage spikes (one entry in ``student_features``)."""
    if inputs.teacher_bc is None or inputs.teacher_cam is None or not inputs.student_features:
        raise ValueError("method 'ckdsnn' needs teacher logits, teacher_cam and student_features")
    (spikes,) = inputs.student_features.values()
    z = inputs.student_tbc.mean(0)
    noise = torch.randn(z.shape, generator=inputs.generator, dtype=z.dtype).to(z.device)
    return (
        F.cross_entropy(z, inputs.labels)
        + cfg.ckdsnn_beta * samd(spikes, inputs.teacher_cam, cfg.samd_temperature)
        + cfg.ckdsnn_gamma * nld(z, inputs.teacher_bc, cfg.nld_lambda, cfg.nld_temperature, noise)
    )
