"""ckdsnn, seal and kdsnn against plain loop-based references of their own formulas (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from htakl_deploy.distill import recipe
from htakl_deploy.distill.config import DistillConfig
from htakl_deploy.distill.dist import DistEnv
from htakl_deploy.distill.losses import LossConfig, LossInputs
from htakl_deploy.distill.methods import LOSSES
from htakl_deploy.distill.methods import METHOD_NEEDS, ckdsnn, kdsnn, seal
from htakl_deploy.distill.models import build_model
from htakl_deploy.errors import UserError

TOL = dict(rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- reference (slow, obvious)
def r_log_softmax(row: list, tau: float) -> list:
    m = max(float(torch.as_tensor(v).detach()) for v in row)
    lse = m / tau + torch.log(sum(torch.exp(v / tau - m / tau) for v in row))
    return [v / tau - lse for v in row]


def r_kl(log_p: list, log_q: list) -> torch.Tensor:
    """KL(p ‖ q) from log-probabilities."""
    return sum(torch.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))


def ref_ela(zs, zt, y, tau):
    T, B, K = zs.shape
    total = 0.0
    for t in range(T):
        for b in range(B):
            s = [zs[t, b, c] for c in range(K)]
            a = [zt[b, c] for c in range(K)]
            pred = max(range(K), key=lambda c: float(s[c].detach()))
            true = int(y[b])
            if pred != true:
                ms, ma = torch.minimum(s[true], s[pred]), torch.minimum(a[true], a[pred])
                s[true] = s[pred] = ms
                a[true] = a[pred] = ma
            total = total + r_kl(r_log_softmax(a, tau), r_log_softmax(s, tau))
    return total / (T * B)


def ref_sta(zs, tau, detach):
    T, B, K = zs.shape
    total = 0.0
    for b in range(B):
        rows = [[zs[t, b, c] for c in range(K)] for t in range(T)]
        fixed = [[v.detach() for v in r] for r in rows] if detach else rows
        logp = [r_log_softmax(r, tau) for r in rows]
        logp_src = [r_log_softmax(r, tau) for r in fixed]
        conf = [1 + sum(torch.exp(l) * l for l in r_log_softmax(r, tau)) / math.log(K) for r in fixed]
        for t in range(T):
            scores = {}
            for u in range(T):
                if u == t:
                    continue
                dot = sum(fixed[t][c] * fixed[u][c] for c in range(K))
                norm_t = torch.sqrt(sum(v * v for v in fixed[t]))
                norm_u = torch.sqrt(sum(v * v for v in fixed[u]))
                scores[u] = conf[u] * dot / (norm_t * norm_u)
            denom = sum(torch.exp(v) for v in scores.values())
            for u, sc in scores.items():
                total = total + torch.exp(sc) / denom * r_kl(logp_src[u], logp[t])
    return total / (T * B)


def ref_nld(z, zt, lam, tau, noise):
    B, K = z.shape
    total = 0.0
    for b in range(B):
        mu = sum(z[b, c] for c in range(K)) / K
        sd = torch.sqrt(sum((z[b, c] - mu) ** 2 for c in range(K)) / (K - 1))
        soft = [z[b, c] + lam * (mu + sd * noise[b, c]) for c in range(K)]
        total = total + r_kl(r_log_softmax([zt[b, c] for c in range(K)], tau), r_log_softmax(soft, tau))
    return tau**2 * total / B


def ref_samd(spikes, cam, tau):
    T, B, C, H, W = spikes.shape
    total = 0.0
    for b in range(B):
        st = [sum(spikes[t, b, c, h, w] for t in range(T) for c in range(C))
              for h in range(H) for w in range(W)]
        te = [cam[b, h, w] for h in range(H) for w in range(W)]

        def norm(v, min_range):
            lo, hi = min(v, key=lambda x: float(x.detach())), max(v, key=lambda x: float(x.detach()))
            span = hi - lo if float((hi - lo).detach()) >= min_range else min_range
            return [(x - lo) / (span + 1e-6) for x in v]

        total = total + r_kl(r_log_softmax(norm(te, 0.0), tau), r_log_softmax(norm(st, 1.0), tau))
    return tau**2 * total / B


def ref_ce(row, label):
    return -r_log_softmax(row, 1.0)[label]


def check(fn_value, ref_value, leaves):
    """Equal values and equal gradients w.r.t. each of ``leaves``."""
    torch.testing.assert_close(fn_value, torch.as_tensor(ref_value, dtype=fn_value.dtype), **TOL)
    g1 = torch.autograd.grad(fn_value, leaves, allow_unused=True)
    g2 = torch.autograd.grad(ref_value, leaves, allow_unused=True)
    for a, b in zip(g1, g2):
        a = torch.zeros_like(leaves[0]) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, **TOL)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    T, B, K = 3, 4, 5
    zs = (2 * torch.randn(T, B, K, generator=g, dtype=torch.float64)).requires_grad_()
    zt = (2 * torch.randn(B, K, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, K, (B,), generator=g)
    return zs, zt, y


# ---------------------------------------------------------------- seal
@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_ela_matches_reference(logits, tau):
    zs, zt, y = logits
    pred = zs.argmax(-1)
    assert (pred != y).any() and (pred == y).any(), "the fixture should mix right and wrong steps"
    check(seal.ela(zs, zt, y, tau), ref_ela(zs, zt, y, tau), [zs, zt])


def test_ela_all_correct_is_plain_per_timestep_kl(logits):
    zs, zt, y = logits
    zs = (zs.detach() + 50 * torch.nn.functional.one_hot(y, 5)).requires_grad_()
    assert (zs.argmax(-1) == y).all()
    lp_t = torch.log_softmax(zt / 2, -1)
    plain = (lp_t.exp() * (lp_t - torch.log_softmax(zs / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(seal.ela(zs, zt, y, 2.0), plain, rtol=0, atol=0)


def test_equalize_pair_only_touches_wrong_steps():
    z = torch.tensor([[[1.0, 3.0, 2.0]], [[5.0, 3.0, 2.0]]])  # [T=2, B=1, K=3]
    y = torch.tensor([0])
    out = seal.equalize_pair(z, y, z.argmax(-1))
    assert out.tolist() == [[[1.0, 1.0, 2.0]], [[5.0, 3.0, 2.0]]]


@pytest.mark.parametrize("detach", [True, False])
def test_sta_matches_reference(logits, detach):
    zs, _, _ = logits
    check(seal.sta(zs, 2.0, detach), ref_sta(zs, 2.0, detach), [zs])


def test_sta_weights_are_normalised_over_other_steps(logits):
    w = seal.sta_weights(logits[0].detach(), 1.0)
    assert torch.all(w.diagonal(dim1=0, dim2=1) == 0)
    torch.testing.assert_close(w.sum(1), torch.ones(3, 4, dtype=w.dtype))


def test_sta_is_zero_for_one_timestep(logits):
    zs = logits[0][:1]
    out = seal.sta(zs, 1.0)
    assert out.item() == 0.0
    (g,) = torch.autograd.grad(out, logits[0])
    assert torch.all(g == 0)


def test_loss_seal_total(logits):
    zs, zt, y = logits
    cfg = LossConfig(seal_alpha=0.6, seal_beta=0.15, seal_temperature=2.0)
    T, B, K = zs.shape
    cls = sum(ref_ce([zs[t, b, c] for c in range(K)], int(y[b])) for t in range(T) for b in range(B)) / (T * B)
    ref = cls + 0.6 * ref_ela(zs, zt, y, 2.0) + 0.15 * ref_sta(zs, 2.0, True)
    check(LOSSES["seal"](LossInputs(zs, y, zt), cfg), ref, [zs])


# ---------------------------------------------------------------- ckdsnn
def test_nld_matches_reference(logits):
    zs, zt, _ = logits
    z = zs.mean(0)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=z.dtype)
    check(ckdsnn.nld(z, zt, 0.1, 2.0, noise), ref_nld(z, zt, 0.1, 2.0, noise), [zs])


def spikes_and_cam(T=3, B=2, C=4, H=3, W=3):
    g = torch.Generator().manual_seed(2)
    spikes = (torch.rand(T, B, C, H, W, generator=g) < 0.4).double().requires_grad_()
    cam = torch.relu(torch.randn(B, H, W, generator=g, dtype=torch.float64))
    return spikes, cam


def test_samd_matches_reference():
    spikes, cam = spikes_and_cam()
    check(ckdsnn.samd(spikes, cam, 2.0), ref_samd(spikes, cam, 2.0), [spikes])


def test_samd_gradient_stays_finite_for_a_sample_without_spikes():
    """A student map that is constant (no spikes at the tapped stage) normalises to 0; its
    gradient must stay of the order of a spiking sample's, not 1/eps (it was ~2e4 here)."""
    spikes, cam = spikes_and_cam()
    silent = spikes.detach().clone()
    silent[:, 0] = 0.0  # sample 0: no spikes at all
    silent.requires_grad_()
    loss = ckdsnn.samd(silent, cam, 2.0)
    check(loss, ref_samd(silent, cam, 2.0), [silent])
    (grad,) = torch.autograd.grad(ckdsnn.samd(silent, cam, 2.0), silent)
    assert torch.isfinite(grad).all() and grad.abs().max() < 1.0, grad.abs().max()


def test_samd_rejects_mismatched_maps():
    spikes, cam = spikes_and_cam()
    with pytest.raises(ValueError, match="same size"):
        ckdsnn.samd(spikes, cam[:, :2], 2.0)


def test_loss_ckdsnn_total(logits):
    zs, zt, y = logits
    spikes, cam = spikes_and_cam(T=3, B=4)
    cfg = LossConfig(nld_lambda=0.1, nld_temperature=2.0, samd_temperature=2.0,
                     ckdsnn_beta=0.7, ckdsnn_gamma=1.3)
    inputs = LossInputs(zs, y, zt.detach(), student_features={"stage2": spikes}, teacher_cam=cam,
                        generator=torch.Generator().manual_seed(5))
    got = LOSSES["ckdsnn"](inputs, cfg)
    z = zs.mean(0)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=z.dtype)
    ce = sum(ref_ce([z[b, c] for c in range(5)], int(y[b])) for b in range(4)) / 4
    ref = ce + 0.7 * ref_samd(spikes, cam, 2.0) + 1.3 * ref_nld(z, zt.detach(), 0.1, 2.0, noise)
    check(got, ref, [zs, spikes])


def test_grad_cam_matches_direct_autograd():
    torch.manual_seed(0)
    teacher = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=False).double().eval()
    x = torch.rand(1, 3, 1, 8, 8, dtype=torch.float64)
    classes = torch.tensor([1, 4, 7])
    tap = teacher.tap_names[-1]
    logits, cam = ckdsnn.grad_cam(teacher, x, classes, tap)

    out, feats = teacher.forward_features(x, [tap])  # direct: live feature, parameters require grad
    (g,) = torch.autograd.grad(out[0, torch.arange(3), classes].sum(), feats[tap])
    a, g = feats[tap][0], g[0]
    B, C, H, W = a.shape
    ref = torch.zeros(B, H, W, dtype=a.dtype)
    for c in range(C):
        ref += g[:, c].mean(dim=(-2, -1))[:, None, None] * a[:, c]
    torch.testing.assert_close(cam, torch.relu(ref).detach(), **TOL)
    torch.testing.assert_close(logits, out[0].detach(), **TOL)
    assert not cam.requires_grad and not logits.requires_grad
    assert all(p.grad is None for p in teacher.parameters()), "Grad-CAM must not touch parameters"
    _, cam_pred = ckdsnn.grad_cam(teacher, x, None, tap)
    _, cam_arg = ckdsnn.grad_cam(teacher, x, out[0].argmax(-1), tap)
    torch.testing.assert_close(cam_pred, cam_arg)


# ---------------------------------------------------------------- kdsnn
def test_loss_kdsnn_matches_reference(logits):
    zs, zt, y = logits
    g = torch.Generator().manual_seed(3)
    fs = torch.rand(3, 4, 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    ft = torch.rand(1, 4, 2, 2, 2, generator=g, dtype=torch.float64)
    cfg = LossConfig(temperature=3.0, alpha=0.8, kdsnn_feature_weight=0.5)
    got = LOSSES["kdsnn"](LossInputs(zs, y, zt.detach(), student_features={"s": fs},
                                     teacher_features={"s": ft}), cfg)
    T, B, K = zs.shape
    ref = 0.0
    for b in range(B):
        zbar = [sum(zs[t, b, c] for t in range(T)) / T for c in range(K)]
        kl = r_kl(r_log_softmax([zt.detach()[b, c] for c in range(K)], 3.0), r_log_softmax(zbar, 3.0))
        ref = ref + (0.2 * ref_ce(zbar, int(y[b])) + 0.8 * 9.0 * kl) / B
    n = fs[0].numel()
    mse = sum((sum(fs[t].flatten()[i] for t in range(T)) / T - ft[0].flatten()[i]) ** 2 for i in range(n)) / n
    check(got, ref + 0.5 * mse, [zs, fs])


def test_kdsnn_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="channels"):
        kdsnn.feature_mse(torch.zeros(2, 1, 3, 4, 4), torch.zeros(1, 1, 5, 4, 4))


# ---------------------------------------------------------------- config and the loop
@pytest.mark.parametrize(
    "field, value, flag",
    [("nld_lambda", -1.0, "--nld-lambda"), ("samd_temperature", 0.0, "--samd-temperature"),
     ("seal_alpha", float("nan"), "--seal-alpha"), ("seal_temperature", -2.0, "--seal-temperature"),
     ("kdsnn_feature_weight", -0.1, "--kdsnn-feature-weight"), ("samd_cam_class", "x", "--samd-cam-class"),
     ("kdsnn_stage", "", "--kdsnn-stage")],
)
def test_bad_method_settings_name_the_flag(field, value, flag):
    with pytest.raises(UserError, match=flag):
        DistillConfig(**{field: value})


def test_loss_config_validates():
    with pytest.raises(ValueError, match="seal_beta"):
        LossConfig(seal_beta=-1.0)


def test_only_feature_methods_declare_needs():
    assert set(METHOD_NEEDS) == {"ckdsnn", "kdsnn", "lasnn", "bkdsnn"}
    assert {"ckdsnn", "seal", "kdsnn", "lasnn", "bkdsnn"} <= set(LOSSES)


def small_cfg(tmp_path, **kw) -> DistillConfig:
    base = dict(data="digits", limit_train=256, limit_test=64, batch_size=64, epochs=1,
                teacher_epochs=1, out_dir=str(tmp_path), run_name="r", progress=False)
    return DistillConfig(**{**base, **kw})


@pytest.mark.parametrize("method, extra", [("ckdsnn", {}), ("seal", {}),
                                           ("kdsnn", {"kdsnn_stage": "stage1"})])
def test_recipe_runs_each_new_method(tmp_path, method, extra):
    summary = recipe.run(small_cfg(tmp_path, method=method, **extra), DistEnv())
    student = summary["student"]
    assert student["method"] == method and student["global_step"] == 4
    assert math.isfinite(student["train_loss"])


def test_bad_kdsnn_stage_fails_before_training(tmp_path):
    with pytest.raises(UserError, match="--kdsnn-stage: got 'stage9'"):
        recipe.run(small_cfg(tmp_path, method="kdsnn", kdsnn_stage="stage9"), DistEnv())
    assert not (tmp_path / "r").exists()
