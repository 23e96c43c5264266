"""Losses against a plain, loop-based reference written from docs/DESIGN.md's definition."""

from __future__ import annotations

import math

import pytest
import torch

from htakl_deploy.distill.losses import (
    LOGIT_LOSSES,
    LossConfig,
    LossInputs,
    head_tail_weights,
    hta_kl_divergence,
)
from htakl_deploy.distill.methods import LOSSES, METHOD_NEEDS


# ---------------------------------------------------------------- reference (slow, obvious)
def ref_softmax(row: list[float], tau: float) -> list[float]:
    m = max(row)
    e = [math.exp((v - m) / tau) for v in row]
    s = sum(e)
    return [v / s for v in e]


def ref_student_dist(zs_tbc, b: int, tau: float, average: str) -> list[float]:
    T, _, C = zs_tbc.shape
    if average == "logits":
        mean = [sum(float(zs_tbc[t, b, c]) for t in range(T)) / T for c in range(C)]
        return ref_softmax(mean, tau)
    per_step = [ref_softmax([float(zs_tbc[t, b, c]) for c in range(C)], tau) for t in range(T)]
    return [sum(per_step[t][c] for t in range(T)) / T for c in range(C)]


def ref_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def ref_lambda(pt: list[float], ps: list[float], delta: float) -> float:
    order = sorted(range(len(pt)), key=lambda c: -pt[c])
    d_head = d_tail = 0.0
    mass_before = 0.0
    for c in order:
        gap = abs(pt[c] - ps[c])
        if mass_before < delta:
            d_head += gap
        else:
            d_tail += gap
        mass_before += pt[c]
    return 0.5 if d_head + d_tail == 0 else d_head / (d_head + d_tail)


def ref_loss(method, zs_tbc, zt_bc, y, cfg: LossConfig) -> float:
    T, B, C = zs_tbc.shape
    total = 0.0
    for b in range(B):
        mean_logits = [sum(float(zs_tbc[t, b, c]) for t in range(T)) / T for c in range(C)]
        p1 = ref_softmax(mean_logits, 1.0)
        ce = -math.log(p1[int(y[b])])
        if method == "ce":
            total += ce
            continue
        pt = ref_softmax([float(v) for v in zt_bc[b]], cfg.temperature)
        ps = ref_student_dist(zs_tbc, b, cfg.temperature, cfg.student_average)
        fkl, rkl = ref_kl(pt, ps), ref_kl(ps, pt)
        w = {
            "kd": 1.0,
            "rkl": 0.0,
            "fixed": cfg.head_weight,
            "hta-kl": ref_lambda(pt, ps, cfg.delta),
        }[method]
        div = w * fkl + (1 - w) * rkl
        if cfg.tau_squared:
            div *= cfg.temperature**2
        total += (1 - cfg.alpha) * ce + cfg.alpha * div
    return total / B


def make_batch(T=3, B=5, C=7, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(T, B, C, generator=g, dtype=torch.float64) * scale
    zt = torch.randn(B, C, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, C, (B,), generator=g)
    return zs, zt, y


# ---------------------------------------------------------------- value tests
#: The methods ``ref_loss`` covers; ckdsnn, seal and kdsnn have their references in test_methods.py.
LOGIT_METHODS = ("ce", "kd", "rkl", "fixed", "hta-kl")


def test_logit_methods_are_registered():
    assert set(LOGIT_METHODS) == set(LOGIT_LOSSES) and set(LOGIT_METHODS) <= set(LOSSES)


@pytest.mark.parametrize("method", LOGIT_METHODS)
@pytest.mark.parametrize("average", ["logits", "probs"])
@pytest.mark.parametrize(
    "cfg_kw",
    [
        {},
        {"temperature": 1.0, "alpha": 0.3, "delta": 0.3, "head_weight": 0.2},
        {"temperature": 7.5, "alpha": 1.0, "delta": 0.9, "tau_squared": False},
    ],
)
def test_matches_loop_reference(method, average, cfg_kw):
    cfg = LossConfig(student_average=average, **cfg_kw)
    for seed in range(3):
        zs, zt, y = make_batch(seed=seed)
        got = LOSSES[method](LossInputs(zs, y, zt), cfg).item()
        want = ref_loss(method, zs, zt, y, cfg)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (method, seed)


@pytest.mark.parametrize("C", [2, 1000])
def test_reference_at_class_count_extremes(C):
    cfg = LossConfig()
    zs, zt, y = make_batch(T=2, B=3, C=C, seed=C)
    for method in ("kd", "rkl", "fixed", "hta-kl"):
        got = LOSSES[method](LossInputs(zs, y, zt), cfg).item()
        assert got == pytest.approx(ref_loss(method, zs, zt, y, cfg), rel=1e-6)


def test_two_dim_student_is_one_timestep():
    zs, zt, _ = make_batch(T=1)
    cfg = LossConfig()
    assert hta_kl_divergence(zs[0], zt, cfg).item() == hta_kl_divergence(zs, zt, cfg).item()


# ---------------------------------------------------------------- edge cases
def test_identical_distributions_give_zero():
    zs, zt, _ = make_batch(T=4)
    same = zs.mean(0)
    cfg = LossConfig()
    assert hta_kl_divergence(same.unsqueeze(0).repeat(4, 1, 1), same, cfg).item() == pytest.approx(
        0.0, abs=1e-12
    )
    # λ falls back to 0.5/0.5 when there is no gap at all
    p = torch.softmax(same, -1)
    lam_head, lam_tail = head_tail_weights(p, p, 0.5)
    assert torch.all(lam_head == 0.5) and torch.all(lam_tail == 0.5)


def test_one_hot_teacher_head_is_top1_only():
    # A confident teacher: top-1 holds ~all mass, so only it is head. λ_head = |1-ps_top| / total gap.
    C = 5
    zt = torch.tensor([[50.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    zs = torch.tensor([[[1.0, 2.0, 0.0, -1.0, 0.5]]], dtype=torch.float64)
    cfg = LossConfig(temperature=1.0)
    pt = torch.softmax(zt, -1)
    ps = torch.softmax(zs[0], -1)
    lam_head, _ = head_tail_weights(pt, ps, 0.5)
    gap = (pt - ps).abs()[0]
    assert lam_head.item() == pytest.approx(gap[0].item() / gap.sum().item(), rel=1e-12)
    # and the loss is finite (no log of an underflowed softmax)
    val = hta_kl_divergence(zs, zt, cfg)
    assert torch.isfinite(val)
    assert val.item() == pytest.approx(
        ref_loss("hta-kl", zs, zt, torch.tensor([0]), LossConfig(temperature=1.0, alpha=1.0)),
        rel=1e-6,
    )
    assert C == zt.shape[1]


def test_top1_is_head_even_when_plain_cumsum_would_empty_it():
    # The plain `S_i < δ` rule empties the head for pt_top1 = 0.9 ≥ δ; ours keeps rank 0 as head.
    pt = torch.tensor([[0.9, 0.05, 0.05]], dtype=torch.float64)
    ps = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    lam_head, lam_tail = head_tail_weights(pt, ps, 0.5)
    assert lam_head.item() == pytest.approx(0.4 / 0.8)
    assert lam_tail.item() == pytest.approx(0.4 / 0.8)


def test_uniform_teacher():
    # Uniform teacher: every rank has equal mass; head = ranks whose mass before is < δ.
    C = 10
    zt = torch.zeros(2, C, dtype=torch.float64)
    zs, _, y = make_batch(T=2, B=2, C=C, seed=5)
    cfg = LossConfig(delta=0.5)
    got = LOSSES["hta-kl"](LossInputs(zs, y, zt), cfg).item()
    assert got == pytest.approx(ref_loss("hta-kl", zs, zt, y, cfg), rel=1e-6)


def test_extreme_logits_are_finite():
    zs = torch.tensor([[[1e4, -1e4, 0.0]]], dtype=torch.float32)
    zt = torch.tensor([[-1e4, 1e4, 0.0]], dtype=torch.float32)
    y = torch.tensor([2])
    for method in [m for m in LOSSES if m not in METHOD_NEEDS]:  # logits-only methods
        assert torch.isfinite(LOSSES[method](LossInputs(zs, y, zt), LossConfig())), method


# ---------------------------------------------------------------- gradients
def test_gradient_treats_lambda_as_constant():
    """d L_HTA / d zs equals the gradient of the same mix with λ frozen at its reference value."""
    zs, zt, y = make_batch(T=3, B=4, C=6, seed=11)
    cfg = LossConfig(alpha=1.0)
    zs1 = zs.clone().requires_grad_(True)
    hta_kl_divergence(zs1, zt, cfg).backward()

    pt = [ref_softmax([float(v) for v in zt[b]], cfg.temperature) for b in range(4)]
    ps = [ref_student_dist(zs, b, cfg.temperature, "logits") for b in range(4)]
    lam = torch.tensor([ref_lambda(pt[b], ps[b], cfg.delta) for b in range(4)], dtype=torch.float64)

    def frozen(z):
        log_pt = torch.log_softmax(zt / cfg.temperature, -1)
        log_ps = torch.log_softmax(z.mean(0) / cfg.temperature, -1)
        fkl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        rkl = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
        return cfg.temperature**2 * (lam * fkl + (1 - lam) * rkl).mean()

    zs2 = zs.clone().requires_grad_(True)
    frozen(zs2).backward()
    torch.testing.assert_close(zs1.grad, zs2.grad, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(frozen, (zs.clone().requires_grad_(True),))


@pytest.mark.parametrize("method", ["ce", "kd", "rkl", "fixed"])
def test_gradcheck_smooth_methods(method):
    zs, zt, y = make_batch(T=2, B=3, C=4, seed=3)
    cfg = LossConfig()
    assert torch.autograd.gradcheck(
        lambda z: LOSSES[method](LossInputs(z, y, zt), cfg), (zs.requires_grad_(True),)
    )


def test_no_gradient_to_teacher_via_lambda():
    zs, zt, _ = make_batch()
    pt, ps = torch.softmax(zt, -1), torch.softmax(zs.mean(0).requires_grad_(True), -1)
    lam_head, _ = head_tail_weights(pt, ps, 0.5)
    assert not lam_head.requires_grad


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"alpha": 1.5},
        {"delta": 0.0},
        {"head_weight": -0.1},
        {"student_average": "median"},
    ],
)
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        LossConfig(**kw)


def test_inputs_check_layout():
    zs, zt, y = make_batch()
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        LossInputs(zs[0], y, zt)
    with pytest.raises(ValueError, match="teacher"):
        LossInputs(zs, y, zt[:, :3])
    with pytest.raises(ValueError, match="needs teacher"):
        LOSSES["hta-kl"](LossInputs(zs, y, None), LossConfig())
