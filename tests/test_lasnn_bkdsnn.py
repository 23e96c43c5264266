"""lasnn and bkdsnn against plain loop-based references (float64); gradients reach the student
(and BKDSNN's generator) but never the teacher; real runs from the CLI; exact resume with the
generator's state."""

from __future__ import annotations

import json
import math

import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.distill import methods, recipe
from htakl_deploy.distill.checkpoint import load_checkpoint
from htakl_deploy.distill.config import DistillConfig
from htakl_deploy.distill.dist import DistEnv
from htakl_deploy.distill.losses import LossConfig, LossInputs
from htakl_deploy.distill.methods import LOSSES, METHOD_NEEDS, bkdsnn, lasnn
from htakl_deploy.distill.methods.inputs import loss_inputs, method_module, method_tap
from htakl_deploy.distill.models import build_model
from htakl_deploy.distill.train import seeded_generator
from htakl_deploy.errors import UserError

TOL = dict(rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- references (slow, obvious)
def r_log_softmax(row, tau):
    m = max(float(v.detach()) for v in row)
    lse = m / tau + torch.log(sum(torch.exp(v / tau - m / tau) for v in row))
    return [v / tau - lse for v in row]


def ref_kd(zs, zt, y, tau, alpha):
    """(1 − α)·CE(z̄, y) + α·τ²·KL(pt ‖ ps), z̄ = mean_t zs, batch mean."""
    T, B, K = zs.shape
    total = 0.0
    for b in range(B):
        zbar = [sum(zs[t, b, c] for t in range(T)) / T for c in range(K)]
        lpt = r_log_softmax([zt[b, c] for c in range(K)], tau)
        lps = r_log_softmax(zbar, tau)
        kl = sum(torch.exp(a) * (a - s) for a, s in zip(lpt, lps))
        ce = -r_log_softmax(zbar, 1.0)[int(y[b])]
        total = total + ((1 - alpha) * ce + alpha * tau**2 * kl) / B
    return total


def ref_attention_distance(fs, ft, p):
    """Per sample: a[hw] = 1/C Σ_c |mean_t fs|^p, q = a / ‖a‖; mean over b, hw of (q_s − q_t)²."""
    T, B, C, H, W = fs.shape
    total = 0.0
    for b in range(B):
        def q(get):
            a = [sum(abs(get(c, h, w)) ** p for c in range(C)) / C for h in range(H) for w in range(W)]
            norm = torch.sqrt(sum(v * v for v in a))
            return [v / norm for v in a]
        qs = q(lambda c, h, w: sum(fs[t, b, c, h, w] for t in range(T)) / T)
        qt = q(lambda c, h, w: ft[0, b, c, h, w])
        total = total + sum((u - v) ** 2 for u, v in zip(qs, qt))
    return total / (B * H * W)


def ref_blurred(fs, ft, mask, w1, b1, w2, b2):
    """1/B Σ_b Σ_j (W2·relu(W1·(m ⊙ f̄s) + b1) + b2 − f̄t)_j², f̄ = mean over t, h, w."""
    T, B, C, H, W = fs.shape
    total = 0.0
    for b in range(B):
        fbar = [sum(fs[t, b, c, h, w] for t in range(T) for h in range(H) for w in range(W)) / (T * H * W)
                for c in range(C)]
        tbar = [sum(ft[0, b, c, h, w] for h in range(H) for w in range(W)) / (H * W) for c in range(C)]
        x = [fbar[c] * mask[b, c] for c in range(C)]
        hid = [torch.relu(sum(w1[i, c] * x[c] for c in range(C)) + b1[i]) for i in range(C)]
        out = [sum(w2[j, i] * hid[i] for i in range(C)) + b2[j] for j in range(C)]
        total = total + sum((out[j] - tbar[j]) ** 2 for j in range(C))
    return total / B


def check(value, ref, leaves):
    torch.testing.assert_close(value, torch.as_tensor(ref, dtype=value.dtype), **TOL)
    g1 = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(ref, leaves, allow_unused=True)
    for a, b, leaf in zip(g1, g2, leaves):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **TOL)
        assert b.abs().sum() > 0, "the reference should depend on every leaf checked"


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    T, B, K = 3, 4, 5
    zs = (2 * torch.randn(T, B, K, generator=g, dtype=torch.float64)).requires_grad_()
    zt = 2 * torch.randn(B, K, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (B,), generator=g)
    # spikes of two stages (different channels and sizes) and the teacher's ReLU maps
    s1 = (torch.rand(T, B, 3, 4, 4, generator=g) < 0.3).double().requires_grad_()
    s2 = (torch.rand(T, B, 6, 2, 2, generator=g) < 0.3).double().requires_grad_()
    t1 = torch.relu(torch.randn(1, B, 3, 4, 4, generator=g, dtype=torch.float64))
    t2 = torch.relu(torch.randn(1, B, 6, 2, 2, generator=g, dtype=torch.float64))
    return zs, zt, y, {"stage1": s1, "stage2": s2}, {"stage1": t1, "stage2": t2}


# ---------------------------------------------------------------- lasnn
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_attention_distance_matches_reference(batch, p):
    _, _, _, fs, ft = batch
    for name in fs:
        check(lasnn.attention_distance(fs[name], ft[name], p), ref_attention_distance(fs[name], ft[name], p),
              [fs[name]])


def test_loss_lasnn_matches_reference(batch):
    zs, zt, y, fs, ft = batch
    cfg = LossConfig(temperature=3.0, alpha=0.8, lasnn_beta=250.0, lasnn_p=2.0)
    got = LOSSES["lasnn"](LossInputs(zs, y, zt, student_features=fs, teacher_features=ft), cfg)
    ref = ref_kd(zs, zt, y, 3.0, 0.8) + 250.0 / 2 * sum(ref_attention_distance(fs[n], ft[n], 2.0) for n in fs)
    check(got, ref, [zs, fs["stage1"], fs["stage2"]])


def test_lasnn_silent_stage_has_finite_gradient(batch):
    """A sample without spikes at a stage has a zero attention map: its gradient stays finite."""
    zs, zt, y, fs, ft = batch
    silent = {n: f.detach().clone() for n, f in fs.items()}
    silent["stage1"][:, 0] = 0.0
    for f in silent.values():
        f.requires_grad_()
    loss = LOSSES["lasnn"](LossInputs(zs, y, zt, student_features=silent, teacher_features=ft), LossConfig())
    grads = torch.autograd.grad(loss, list(silent.values()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_lasnn_rejects_mismatched_stages(batch):
    zs, zt, y, fs, ft = batch
    with pytest.raises(ValueError, match="different stages"):
        LOSSES["lasnn"](LossInputs(zs, y, zt, student_features=fs, teacher_features={"stage1": ft["stage1"]}),
                        LossConfig())


# ---------------------------------------------------------------- bkdsnn
def test_channel_mask_ratio_and_seed():
    like = torch.zeros(1)
    m = bkdsnn.channel_mask((400, 250), 0.15, torch.Generator().manual_seed(1), like)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert abs(float((m == 0).double().mean()) - 0.15) < 0.01
    again = bkdsnn.channel_mask((400, 250), 0.15, torch.Generator().manual_seed(1), like)
    assert torch.equal(m, again)
    assert bool((bkdsnn.channel_mask((8, 8), 0.0, None, like) == 1).all())


def test_blurred_distance_matches_reference(batch):
    _, _, _, fs, ft = batch
    torch.manual_seed(0)
    gen = bkdsnn.generator(6).double()
    mask = bkdsnn.channel_mask((4, 6), 0.3, torch.Generator().manual_seed(2), fs["stage2"])
    assert (mask == 0).any() and (mask == 1).any()
    w1, b1, w2, b2 = gen[0].weight, gen[0].bias, gen[2].weight, gen[2].bias
    check(bkdsnn.blurred_distance(gen, fs["stage2"], ft["stage2"], mask),
          ref_blurred(fs["stage2"], ft["stage2"], mask, w1, b1, w2, b2),
          [fs["stage2"], w1, b1, w2, b2])


def test_loss_bkdsnn_matches_reference(batch):
    zs, zt, y, fs, ft = batch
    torch.manual_seed(0)
    gen = bkdsnn.generator(6).double()
    cfg = LossConfig(temperature=2.0, alpha=0.7, bkdsnn_alpha=0.05, bkdsnn_mask_ratio=0.4)
    inputs = LossInputs(zs, y, zt, student_features={"stage2": fs["stage2"]},
                        teacher_features={"stage2": ft["stage2"]}, generator=torch.Generator().manual_seed(9),
                        module=gen)
    got = LOSSES["bkdsnn"](inputs, cfg)
    u = torch.rand((4, 6), generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    mask = (u >= 0.4).double()  # the same draw from the same seeded generator
    params = [gen[0].weight, gen[0].bias, gen[2].weight, gen[2].bias]
    ref = ref_kd(zs, zt, y, 2.0, 0.7) + 0.05 * ref_blurred(fs["stage2"], ft["stage2"], mask, *params)
    check(got, ref, [zs, fs["stage2"], *params])


def test_bkdsnn_needs_its_module(batch):
    zs, zt, y, fs, ft = batch
    with pytest.raises(ValueError, match="generator module"):
        LOSSES["bkdsnn"](LossInputs(zs, y, zt, student_features={"s": fs["stage2"]},
                                    teacher_features={"s": ft["stage2"]}), LossConfig())


# ---------------------------------------------------------------- with the models
@pytest.mark.parametrize("method", ["lasnn", "bkdsnn"])
def test_gradients_reach_student_and_module_never_teacher(method):
    torch.manual_seed(0)
    student = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    teacher = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=False).eval()
    assert all(p.requires_grad for p in teacher.parameters())  # nothing hides a leak
    cfg = DistillConfig(method=method).loss_config()
    tap = method_tap(student, method, cfg)
    module = method_module(student, method, cfg, tap, seed=0)
    assert (module is None) == (method == "lasnn")
    x = torch.rand(6, 1, 8, 8)
    g = seeded_generator(0, 2, 0, 0)
    inputs = loss_inputs(student, student, teacher, METHOD_NEEDS[method], tap, x[None].repeat(2, 1, 1, 1, 1),
                         x, torch.arange(6), g, "label", module=module)
    if method == "lasnn":
        assert list(inputs.student_features) == ["stage1", "stage2"]
    LOSSES[method](inputs, cfg).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    if module is not None:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_module_is_seeded_and_leaves_global_rng_alone():
    student = build_model("resnet20", in_shape=(3, 32, 32), num_classes=10, spiking=True)
    cfg = LossConfig()
    tap = method_tap(student, "bkdsnn", cfg)
    before = torch.random.get_rng_state()
    a = method_module(student, "bkdsnn", cfg, tap, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    b = method_module(student, "bkdsnn", cfg, tap, seed=3)
    c = method_module(student, "bkdsnn", cfg, tap, seed=4)
    assert a[0].in_features == 512  # resnet20's last stage
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("field, value, flag",
                         [("lasnn_beta", -1.0, "--lasnn-beta"), ("lasnn_p", 0.5, "--lasnn-p"),
                          ("bkdsnn_alpha", float("nan"), "--bkdsnn-alpha"),
                          ("bkdsnn_mask_ratio", 1.0, "--bkdsnn-mask-ratio"), ("bkdsnn_stage", "", "--bkdsnn-stage")])
def test_bad_settings_name_the_flag(field, value, flag):
    with pytest.raises(UserError, match=flag):
        DistillConfig(**{field: value})


def test_cli_runs_each_method_and_saves_the_generator(tmp_path, capsys):
    common = ["--data", "digits", "--limit-train", "256", "--limit-test", "64", "--batch-size", "64",
              "--epochs", "1", "--no-progress", "--out-dir", str(tmp_path)]
    assert main(["train-teacher", *common, "--run-name", "t"]) == 0  # its --epochs is the teacher's
    common += ["--teacher-epochs", "1", "--timesteps", "2"]
    out = capsys.readouterr().out  # a human summary by default (--json: the summary.json object)
    assert out.startswith(f"run: {tmp_path / 't'} (digits") and "\nteacher (ANN): test accuracy " in out, out
    for method in ("lasnn", "bkdsnn"):
        assert main(["distill", *common, "--method", method, "--run-name", method,
                     "--teacher", str(tmp_path / "t")]) == 0, capsys.readouterr().err
        summary = json.loads((tmp_path / method / "summary.json").read_text())
        out = capsys.readouterr().out
        assert f"teacher: {tmp_path / 't'} (given)" in out and f"student (method {method}, T=2): test accuracy " in out, out
        assert summary["student"]["method"] == method and summary["student"]["global_step"] == 4
        assert math.isfinite(summary["student"]["train_loss"])
        ckpt = load_checkpoint(tmp_path / method / "student" / "last.pt")
        assert ("method_module" in ckpt) == (method == "bkdsnn")
    assert main(["distill", *common, "--method", "bkdsnn", "--bkdsnn-stage", "stage9"]) == 2
    assert "--bkdsnn-stage: got 'stage9'" in capsys.readouterr().err


def test_bkdsnn_resume_restores_generator_exactly(tmp_path, monkeypatch):
    base = dict(data="digits", limit_train=256, limit_test=64, batch_size=64, epochs=2, teacher_epochs=1,
                timesteps=2, method="bkdsnn", out_dir=str(tmp_path), progress=False, checkpoint_every=3)
    recipe.run(DistillConfig(**base, run_name="t"), DistEnv(), teacher_only=True)
    base["teacher"] = str(tmp_path / "t")
    recipe.run(DistillConfig(**base, run_name="straight"), DistEnv())

    real, calls = LOSSES["bkdsnn"], {"n": 0}

    def stop_at_step_7(inputs, cfg):  # an interruption after the mid-epoch checkpoint at step 6
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(inputs, cfg)

    monkeypatch.setitem(methods.LOSSES, "bkdsnn", stop_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        recipe.run(DistillConfig(**base, run_name="cut"), DistEnv())
    monkeypatch.setitem(methods.LOSSES, "bkdsnn", real)
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "student" / "last.pt")["global_step"] == 6
    saved, teacher_only = recipe.read_run(cut)
    recipe.run(saved, DistEnv(), teacher_only=teacher_only, resume_dir=cut)
    a = load_checkpoint(tmp_path / "straight" / "student" / "last.pt")
    b = load_checkpoint(cut / "student" / "last.pt")
    for part in ("model", "method_module"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    ma, mb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert ma.keys() == mb.keys() and all(torch.equal(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"]) for i in ma)
    n_student = len(list(build_model(**a["model_spec"]).parameters()))
    assert len(ma) == n_student + 4  # the generator's two weights and two biases are optimised too


@pytest.mark.slow
def test_bkdsnn_under_torchrun_two_processes(tmp_path):
    """The generator is wrapped in DDP like the student, so both ranks step it with averaged grads."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "htakl_deploy", "distill",
         "--method", "bkdsnn", "--data", "digits", "--limit-train", "256", "--limit-test", "64",
         "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1", "--timesteps", "2", "--no-progress",
         "--out-dir", str(tmp_path), "--run-name", "ddp"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "student" / "last.pt")
    assert ckpt["global_step"] == 4 and set(ckpt["method_module"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
