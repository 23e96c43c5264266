"""Bad input: one line naming the problem, exit code 2, no traceback, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.distill.checkpoint import save_checkpoint
from htakl_deploy.distill.config import build_config, read_config_file
from htakl_deploy.distill.models import build_model
from htakl_deploy.errors import UserError


def teacher_ckpt(path: Path, in_shape=(1, 8, 8), num_classes=10) -> Path:
    model = build_model("convnet", in_shape=in_shape, num_classes=num_classes, spiking=False)
    save_checkpoint(path, {"role": "teacher", "model_spec": model.spec, "model": model.state_dict()})
    return path


def run_main(capsys, *args) -> tuple[int, str]:
    rc = main(["distill", "--no-progress", *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--method", "hinton"], "--method: got 'hinton', expected one of"),
        (["--data", "mnist"], "--data: got 'mnist', expected one of"),
        (["--timesteps", "0"], "--timesteps: got 0, expected an integer >= 1"),
        (["--lr", "-0.1"], "--lr: got -0.1, expected a positive number"),
        (["--epochs", "0"], "--epochs: got 0, expected an integer >= 1"),
        (["--alpha", "2"], "--alpha: got 2.0, expected a number in [0, 1]"),
        (["--delta", "0"], "--delta: got 0.0, expected a head threshold in (0, 1]"),
        (["--student-average", "median"], "--student-average: got 'median', expected one of logits, probs"),
        (["--encoding", "latency"], "--encoding: got 'latency'"),
        (["--teacher", "missing.pt"], "--teacher: file not found: missing.pt"),
        (["--model", "vgg16"], "--model vgg16 cannot take --data digits images of shape (1, 8, 8)"),
        (["--data", "cifar10"], "cifar10"),
        (["--batch-size", "5000"], "--batch-size 5000 is larger than the training set"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    rc, err = run_main(capsys, "--out-dir", "runs", *args)
    assert rc == 2
    assert expected in err, err
    assert err.count("\n") == 1 and err.startswith("htakl-deploy: error: ")
    assert not (tmp_path / "runs").exists(), "a rejected command must not create a run directory"


def test_corrupt_and_truncated_teacher(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    good = teacher_ckpt(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    for path, expected in (
        (garbage, "is not a readable checkpoint"),
        (truncated, "is not a readable checkpoint"),
        (plain, "is not an htakl-deploy checkpoint"),
    ):
        rc, err = run_main(capsys, "--out-dir", "runs", "--teacher", str(path))
        assert rc == 2 and expected in err and str(path) in err, err
    assert not (tmp_path / "runs").exists()


def test_teacher_for_other_images_or_architecture(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = teacher_ckpt(tmp_path / "fmnist.pt", in_shape=(1, 28, 28))
    rc, err = run_main(capsys, "--teacher", str(other))
    assert rc == 2 and "was trained on images (1, 28, 28)" in err, err
    # right shapes, wrong weights: a state dict from another architecture under a convnet spec
    model = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=False)
    state = {k + "_x": v for k, v in model.state_dict().items()}
    bad = tmp_path / "mismatch.pt"
    save_checkpoint(bad, {"role": "teacher", "model_spec": model.spec, "model": state})
    rc, err = run_main(capsys, "--teacher", str(bad))
    assert rc == 2 and "does not match its architecture" in err, err
    # a student checkpoint where a teacher is expected
    student = build_model("convnet", in_shape=(1, 8, 8), num_classes=10, spiking=True)
    wrong_role = tmp_path / "student.pt"
    save_checkpoint(wrong_role, {"role": "student", "model_spec": student.spec, "model": student.state_dict()})
    rc, err = run_main(capsys, "--teacher", str(wrong_role))
    assert rc == 2 and "holds a student model, expected a teacher" in err, err


def test_resume_rejects_non_run_and_extra_flags(capsys, tmp_path):
    rc, err = run_main(capsys, "--resume", str(tmp_path))
    assert rc == 2 and "is not a run directory" in err
    rc, err = run_main(capsys, "--resume", str(tmp_path), "--epochs", "3")
    assert rc == 2 and "drop --epochs" in err


def test_argparse_type_errors_exit_2(capsys):
    assert main(["distill", "--timesteps", "four"]) == 2  # argparse's exit, returned by main
    err = capsys.readouterr().err
    assert "--timesteps: invalid int value" in err and err.count("\n") == 1 and err.startswith("htakl-deploy: error: ")


def test_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "htakl_deploy", "distill", "--lr", "-1"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--lr" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ config files
def test_toml_and_yaml_config_with_flag_override(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('method = "kd"\ntimesteps = 2\nlr = 0.05\nrun-name = "x"\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("method: rkl\ntimesteps: 6\nhead_weight: 0.3\n")
    cfg = build_config(read_config_file(toml), {"lr": 0.2, "epochs": None})
    assert (cfg.method, cfg.timesteps, cfg.lr, cfg.run_name) == ("kd", 2, 0.2, "x")
    cfg = build_config(read_config_file(yaml), {})
    assert (cfg.method, cfg.timesteps, cfg.head_weight) == ("rkl", 6, 0.3)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("a.toml", "learning_rate = 0.1\n", "unknown key 'learning_rate'"),
        ("b.toml", "method = \n", "not valid TOML"),
        ("c.yaml", "- 1\n- 2\n", "expected a table of keys"),
        ("d.json", "{}", "expected a .toml, .yaml or .yml file"),
        ("e.toml", "timesteps = -1\n", "key 'timesteps': got -1"),
        ("f.toml", "timesteps = 2.5\n", "key 'timesteps': got 2.5"),
    ],
)
def test_bad_config_files(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match=None) as info:
        build_config(read_config_file(path), {})
    assert expected in str(info.value)
    assert name in str(info.value) or "timesteps" in expected


def test_missing_config_file(capsys, tmp_path):
    rc, err = run_main(capsys, "--config", str(tmp_path / "none.toml"))
    assert rc == 2 and "--config: file not found" in err


def test_every_loss_setting_is_a_config_field_and_flag(capsys):
    from dataclasses import fields

    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.losses import LossConfig

    config_fields = {f.name for f in fields(DistillConfig)}
    assert {f.name for f in fields(LossConfig)} <= config_fields
    assert main(["distill", "--help"]) == 0
    help_text = capsys.readouterr().out
    for name in config_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_train_teacher_epochs_is_the_teachers_and_the_summary_counts_the_images(capsys, tmp_path):
    """`train-teacher --epochs 1` trains one epoch (it trained the 10-epoch default); the summary
    names how many training and test images the numbers are over."""
    import json

    from htakl_deploy.cmd_distill import summary_lines

    rc = main(["train-teacher", "--epochs", "1", "--limit-train", "128", "--limit-test", "32", "--batch-size", "64",
               "--out-dir", str(tmp_path), "--run-name", "t", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["teacher"]["epoch"] == 1 and "student" not in summary
    assert (summary["train_samples"], summary["test_samples"], summary["batch_size"]) == (128, 32, 64)
    lines = summary_lines(summary)
    assert lines[1] == "data: 128 training images (batch 64), 32 test images"
    assert lines[2].startswith("teacher (ANN): test accuracy ") and "(of 32 images)" in lines[2]
