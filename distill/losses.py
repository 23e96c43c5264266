"""Distillation losses as plain functions on logits, looked up by method name.

Layouts: student logits ``zs`` are per-timestep ``[T, B, C]``; teacher logits ``zt`` are ``[B, C]``
(an ANN teacher sees each image once); labels ``y`` are ``[B]`` int64.

Every method has the same signature ``fn(inputs: LossInputs, cfg: LossConfig) -> scalar``; the
logit methods are in ``LOGIT_LOSSES`` here, and ``distill.methods.LOSSES`` is the one table of all
methods that the config and the training loop use.

The student's output distribution over time (``LossConfig.student_average``):
- ``"logits"`` (default, docs/DESIGN.md): average the logits over T, then softmax —
  ``ps = softmax(mean_t(zs_t) / τ)``; this is the firing-rate readout of the last layer.
- ``"probs"``: average the per-step distributions, ``ps = mean_t softmax(zs_t / τ)`` (one reading
  of the paper's Eq. 3), computed in log space with logsumexp.

Distillation terms are multiplied by τ² when ``tau_squared`` is true (Hinton et al.), so their
gradient scale does not shrink with the temperature. The training loss is
``(1 − α)·CE(mean_t zs, y) + α·L_distill`` for every teacher-based method here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

# the loss hyper-parameters live in a module without torch (``--help`` builds its flags from them)
from htakl_deploy.distill.lossconfig import STUDENT_AVERAGES, LossConfig, LossConfigError  # noqa: F401


@dataclass
class LossInputs:
    """What a loss function sees for one batch.

    The optional fields are filled by the loop only for methods that declare them in
    ``FeatureNeeds`` (``methods.METHOD_NEEDS``):
    - ``student_features``: tap name → live student output ``[T, B, C, H, W]`` (spikes);
    - ``teacher_features``: tap name → teacher output ``[1, B, C, H, W]`` (no grad);
    - ``teacher_cam``: the teacher's Grad-CAM at its last stage, ``[B, H, W]`` (no grad);
    - ``generator``: the step's seeded generator, for methods that draw noise;
    - ``module``: the method's own trainable part (``FeatureNeeds.module``), trained with the
      student by the same optimiser.
    """

    student_tbc: torch.Tensor
    labels: torch.Tensor
    teacher_bc: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] | None = None
    teacher_features: dict[str, torch.Tensor] | None = None
    teacher_cam: torch.Tensor | None = None
    generator: torch.Generator | None = None
    module: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        zs = self.student_tbc
        if zs.dim() != 3:
            raise ValueError(f"student logits must be [T, B, C], got shape {tuple(zs.shape)}")
        if self.labels.shape != zs.shape[1:2]:
            raise ValueError(
                f"labels must be [B]={zs.shape[1]}, got shape {tuple(self.labels.shape)}"
            )
        if self.teacher_bc is not None and self.teacher_bc.shape != zs.shape[1:]:
            raise ValueError(
                f"teacher logits must be [B, C]={tuple(zs.shape[1:])}, "
                f"got shape {tuple(self.teacher_bc.shape)}"
            )


@dataclass(frozen=True)
class FeatureNeeds:
    """What a method needs beyond logits; the loop computes only what is declared.

    ``stage_field`` names the ``LossConfig`` field holding the tap (``"last"`` = the model's
    last feature stage); ``None`` means the last stage. ``all_stages``: every feature stage of
    ``tap_names`` (all but the stem) instead of one. ``module``: a method with trainable parts of
    its own gives their factory, ``module(channels, cfg) -> nn.Module`` (``channels``: the
    tapped stage's channel count); the loop builds it once per stage, trains it with the student,
    and saves it in the checkpoint.
    """

    student_features: bool = False
    teacher_features: bool = False
    teacher_cam: bool = False
    stage_field: str | None = None
    all_stages: bool = False
    module: Callable[[int, "LossConfig"], torch.nn.Module] | None = None


def as_tbc(zs: torch.Tensor) -> torch.Tensor:
    """Accept student logits as ``[T, B, C]`` or ``[B, C]`` (T = 1)."""
    return zs.unsqueeze(0) if zs.dim() == 2 else zs


def student_log_probs(zs_tbc: torch.Tensor, temperature: float, average: str) -> torch.Tensor:
    """log of the student's time-aggregated distribution, ``[B, C]``."""
    if average == "logits":
        return F.log_softmax(zs_tbc.mean(0) / temperature, dim=-1)
    if average == "probs":
        per_step = F.log_softmax(zs_tbc / temperature, dim=-1)
        return torch.logsumexp(per_step, dim=0) - math.log(zs_tbc.shape[0])
    raise ValueError(f"student_average must be one of {STUDENT_AVERAGES}, got {average!r}")


def forward_kl(log_pt: torch.Tensor, log_ps: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ pt (log pt − log ps)``, ``[B]``."""
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1)


def reverse_kl(log_pt: torch.Tensor, log_ps: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ ps (log ps − log pt)``, ``[B]``."""
    return (log_ps.exp() * (log_ps - log_pt)).sum(-1)


@torch.no_grad()
def head_tail_weights(
    pt: torch.Tensor, ps: torch.Tensor, delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """HTA-KL's per-sample ``(λ_head, λ_tail)``, each ``[B]``, without gradient.

    Ranks are ordered by the teacher's probability. Rank i is *head* iff the teacher mass strictly
    before it is below ``delta`` — so the teacher's top-1 class is always head. ``λ_head`` is the
    share of the total absolute gap ``|pt − ps|`` that lies in the head (0.5 when the gap is 0).
    """
    # stable: tied teacher probabilities keep class order, so the head is well defined
    pt_sorted, idx = pt.sort(dim=-1, descending=True, stable=True)
    ps_sorted = ps.gather(-1, idx)
    gap = (pt_sorted - ps_sorted).abs()
    mass_before = pt_sorted.cumsum(-1) - pt_sorted
    head = mass_before < delta
    d_head = (gap * head).sum(-1)
    d_tail = (gap * ~head).sum(-1)
    total = d_head + d_tail
    lam_head = torch.where(total > 0, d_head / torch.where(total > 0, total, 1.0), 0.5)
    return lam_head, 1.0 - lam_head


def _mixed_kl(
    zs_tbc: torch.Tensor,
    zt_bc: torch.Tensor,
    cfg: LossConfig,
    weights: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """``mean_b(w_f·FKL + w_r·RKL)`` (×τ² if configured); ``weights(log_pt, log_ps)`` gives w_f, w_r."""
    log_pt = F.log_softmax(zt_bc / cfg.temperature, dim=-1)
    log_ps = student_log_probs(zs_tbc, cfg.temperature, cfg.student_average)
    w_fkl, w_rkl = weights(log_pt, log_ps)
    loss = w_fkl * forward_kl(log_pt, log_ps) + w_rkl * reverse_kl(log_pt, log_ps)
    scale = cfg.temperature**2 if cfg.tau_squared else 1.0
    return scale * loss.mean()


def hta_kl_divergence(zs: torch.Tensor, zt_bc: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The HTA-KL term alone (no CE), as defined in docs/DESIGN.md; ``zs`` is ``[T,B,C]`` or ``[B,C]``."""
    return _mixed_kl(
        as_tbc(zs),
        zt_bc,
        cfg,
        # softmax (not exp of log_softmax) keeps tied teacher logits exactly tied for the sort
        lambda log_pt, log_ps: head_tail_weights(
            F.softmax(zt_bc / cfg.temperature, dim=-1), log_ps.exp(), cfg.delta
        ),
    )


def _constant_weights(w_fkl: float, w_rkl: float):
    return lambda log_pt, log_ps: (w_fkl, w_rkl)


def _ce(inputs: LossInputs) -> torch.Tensor:
    return F.cross_entropy(inputs.student_tbc.mean(0), inputs.labels)


def _with_ce(inputs: LossInputs, cfg: LossConfig, distill_term: torch.Tensor) -> torch.Tensor:
    return (1.0 - cfg.alpha) * _ce(inputs) + cfg.alpha * distill_term


def _teacher(inputs: LossInputs, method: str) -> torch.Tensor:
    if inputs.teacher_bc is None:
        raise ValueError(f"method {method!r} needs teacher logits")
    return inputs.teacher_bc


def loss_ce(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits; no teacher."""
    return _ce(inputs)


def loss_kd(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """Hinton KD: forward KL(pt || ps)."""
    zt = _teacher(inputs, "kd")
    return _with_ce(inputs, cfg, _mixed_kl(inputs.student_tbc, zt, cfg, _constant_weights(1.0, 0.0)))


def loss_rkl(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """Reverse KL(ps || pt)."""
    zt = _teacher(inputs, "rkl")
    return _with_ce(inputs, cfg, _mixed_kl(inputs.student_tbc, zt, cfg, _constant_weights(0.0, 1.0)))


def loss_fixed(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """Static head/tail ratio: ``head_weight·FKL + (1 − head_weight)·RKL`` (the paper's ablation)."""
    zt = _teacher(inputs, "fixed")
    weights = _constant_weights(cfg.head_weight, 1.0 - cfg.head_weight)
    return _with_ce(inputs, cfg, _mixed_kl(inputs.student_tbc, zt, cfg, weights))


def loss_hta_kl(inputs: LossInputs, cfg: LossConfig) -> torch.Tensor:
    """HTA-KL: per-sample adaptive mix of FKL and RKL from the head/tail gap (Zhang et al. 2025, arXiv:2504.20445)."""
    zt = _teacher(inputs, "hta-kl")
    return _with_ce(inputs, cfg, hta_kl_divergence(inputs.student_tbc, zt, cfg))


LossFn = Callable[[LossInputs, LossConfig], torch.Tensor]

#: The logit-only methods; ``methods.LOSSES`` adds the feature/timestep methods to them.
LOGIT_LOSSES: dict[str, LossFn] = {
    "ce": loss_ce,
    "kd": loss_kd,
    "rkl": loss_rkl,
    "fixed": loss_fixed,
    "hta-kl": loss_hta_kl,
}

#: Methods that train without a teacher.
TEACHERLESS = frozenset({"ce"})
