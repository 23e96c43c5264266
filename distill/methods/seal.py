"""SeAl-KD (K. Sun et al., arXiv:2605.14252): ``L_CLS + α·L_ELA + β·L_STA`` on per-timestep logits ``zs`` ``[T, B, K]``.

With ``p(z) = softmax(z/τ)`` (τ = ``seal_temperature``):
- ``L_CLS = 1/T Σ_t CE(zs_t, y)`` (Eq. 1).
- **ELA** (Eq. 4–6): where ``c_t = argmax zs_t ≠ y``, both the student's and the teacher's logits
  of ``y`` and ``c_t`` are set to the minimum of the two (per side); other classes unchanged.
  ``L_ELA = 1/T Σ_t KL(p(z̃A_t) ‖ p(z̃S_t))``.
- **STA** (Eq. 7–11): ``Conf_t = 1 − H(p(zs_t))/log K``; ``Sim(t,t')`` = cosine of ``zs_t, zs_t'``;
  ``s = Conf_t'·Sim(t,t')``, ``w_t,· = softmax over t' ≠ t`` (``w_tt = 0``);
  ``L_STA = 1/T Σ_t Σ_t'≠t w_tt'·KL(p(zs_t') ‖ p(zs_t))``; 0 when T = 1.
All terms are averaged over the batch; no τ² factor (the seed has none). With
``seal_sta_detach`` (default) the weights and the source distributions ``p(zs_t')`` are constants
(each target step learns from its sources — our reading; the seed does not say).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from htakl_deploy.distill.losses import LossConfig, LossInputs, _teacher, forward_kl


def equalize_pair(z_tbk: torch.Tensor, labels: torch.Tensor, pred_tb: torch.Tensor) -> torch.Tensor:
    """Set the logits of ``labels`` ``[B]`` and ``pred_tb`` ``[T, B]`` to their minimum where
    they differ (Eq. 4/5); ``z_tbk`` is ``[T, B, K]``. Returns a new tensor."""
    y = labels.expand_as(pred_tb)[..., None]
    c = pred_tb[..., None]
    m = torch.minimum(z_tbk.gather(-1, y), z_tbk.gather(-1, c))
    wrong = (pred_tb != labels)[..., None]
    k = torch.arange(z_tbk.shape[-1], device=z_tbk.device)
    pair = wrong & ((k == y) | (k == c))
    return torch.where(pair, m, z_tbk)


def ela(zs_tbk: torch.Tensor, zt_bk: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """``1/T Σ_t KL(p(z̃A_t) ‖ p(z̃S_t))``, batch mean."""
    pred = zs_tbk.detach().argmax(-1)  # [T, B]
    zs_mod = equalize_pair(zs_tbk, labels, pred)
    zt_mod = equalize_pair(zt_bk.expand_as(zs_tbk), labels, pred)
    kl = forward_kl(F.log_softmax(zt_mod / tau, -1), F.log_softmax(zs_mod / tau, -1))  # [T, B]
    return kl.mean()


def sta_weights(zs_tbk: torch.Tensor, tau: float) -> torch.Tensor:
    """``w[t, t', b]`` ``[T, T, B]``: softmax over ``t' ≠ t`` of ``Conf_t'·Sim(t, t')``."""
    T, _, K = zs_tbk.shape
    logp = F.log_softmax(zs_tbk / tau, -1)
    conf = 1.0 + (logp.exp() * logp).sum(-1) / math.log(K)  # [T, B]
    zn = zs_tbk / zs_tbk.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = torch.einsum("tbk,ubk->tub", zn, zn)  # [T, T', B]
    s = conf[None, :, :] * sim
    eye = torch.eye(T, dtype=torch.bool, device=zs_tbk.device)[:, :, None]
    return torch.softmax(s.masked_fill(eye, float("-inf")), dim=1)


def sta(zs_tbk: torch.Tensor, tau: float, detach: bool = True) -> torch.Tensor:
    """``1/T Σ_t Σ_t'≠t w_tt'·KL(p(zs_t') ‖ p(zs_t))``, batch mean; 0 for T = 1."""
    T = zs_tbk.shape[0]
    if T == 1:
        return zs_tbk.sum() * 0.0
    w = sta_weights(zs_tbk.detach() if detach else zs_tbk, tau)
    logp = F.log_softmax(zs_tbk / tau, -1)  # [T, B, K]
    src = logp.detach() if detach else logp
    # kl[t, t', b] = KL(p_t' ‖ p_t)
    kl = (src.exp()[None] * (src[None] - logp[:, None])).sum(-1)
    return (w * kl).sum(1).mean(0).mean()


def loss_seal(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """``1/T Σ_t CE(zs_t, y) + α·ELA + β·STA``."""
    zs, y = inputs.student_tbc, inputs.labels
    zt = _teacher(inputs, "seal")
    T, B, K = zs.shape
    cls = F.cross_entropy(zs.reshape(T * B, K), y.repeat(T))
    tau = cfg.seal_temperature
    return cls + cfg.seal_alpha * ela(zs, zt, y, tau) + cfg.seal_beta * sta(zs, tau, cfg.seal_sta_detach)
