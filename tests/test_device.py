"""``--device``: how a spec resolves for a given machine, and what a CPU-only machine does with it.

There is no GPU here. ``resolve_device`` takes the machine (visible CUDA devices, torchrun's
LOCAL_RANK) as arguments, so every case is checked without a GPU and without a test double.
Every method's forward/loss/backward is run on the ``meta`` device, which catches tensors created
on the CPU; the training loop itself runs on the CPU only (no CUDA run on this machine).
"""

from __future__ import annotations

import json

import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.distill.config import DistillConfig
from htakl_deploy.distill.device import resolve_device
from htakl_deploy.errors import UserError


@pytest.mark.parametrize(
    "spec, cuda_count, local_rank, expected",
    [
        ("cpu", 0, None, "cpu"),
        ("cpu", 4, 1, "cpu"),
        ("auto", 0, None, "cpu"),
        ("auto", 2, None, "cuda:0"),
        ("cuda", 1, None, "cuda:0"),
        ("cuda:1", 2, None, "cuda:1"),
        ("cuda", 4, 3, "cuda:3"),  # torchrun: one GPU per process
        ("auto", 2, 1, "cuda:1"),
    ],
)
def test_resolve_device(spec, cuda_count, local_rank, expected):
    assert resolve_device(spec, cuda_count=cuda_count, local_rank=local_rank) == torch.device(expected)


@pytest.mark.parametrize(
    "spec, cuda_count, local_rank, message",
    [
        ("gpu", 1, None, "--device: got 'gpu', expected cpu, cuda, cuda:N or auto"),
        ("cuda:", 1, None, "expected cpu, cuda, cuda:N or auto"),
        ("cuda", 0, None, "--device cuda: torch"),
        ("cuda:0", 0, None, "sees no CUDA device here"),
        ("cuda:2", 2, None, "--device cuda:2: device 2 does not exist; 2 CUDA device(s) are visible"),
        ("cuda", 2, 2, "LOCAL_RANK 2 does not exist"),
        ("cuda:0", 2, 1, "under torchrun each process takes cuda:LOCAL_RANK"),
    ],
)
def test_resolve_device_refuses(spec, cuda_count, local_rank, message):
    with pytest.raises(UserError, match="--device") as info:
        resolve_device(spec, cuda_count=cuda_count, local_rank=local_rank)
    assert message in str(info.value)


def test_config_validates_device():
    assert DistillConfig(device="cuda:3").device == "cuda:3"
    with pytest.raises(UserError, match=r"--device: got 'tpu'"):
        DistillConfig(device="tpu")


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="a CUDA device is visible: --device cuda would train")
def test_cuda_on_a_cpu_machine_exits_2_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["distill", "--no-progress", "--device", "cuda", "--epochs", "1", "--teacher-epochs", "1",
               "--out-dir", "runs"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cuda: torch" in err and "sees no CUDA device" in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_auto_trains_on_what_is_there_and_resume_may_change_the_device(capsys, tmp_path):
    common = ["distill", "--no-progress", "--limit-train", "256", "--limit-test", "64", "--batch-size", "64",
              "--out-dir", str(tmp_path), "--run-name", "r", "--method", "ce", "--timesteps", "1"]
    assert main([*common, "--epochs", "1", "--device", "auto"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    want = "cuda:0" if torch.cuda.device_count() else "cpu"
    assert summary["device"].split(" ")[0] == want
    assert json.loads((tmp_path / "r" / "config.json").read_text())["device"] == "auto"
    capsys.readouterr()

    # --device is a runtime choice: --resume accepts it (other settings are still refused)
    assert main(["distill", "--no-progress", "--resume", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["device"] == "cpu"
    assert main(["distill", "--resume", str(tmp_path / "r"), "--device", "cpu", "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err


@pytest.mark.parametrize("arch, in_shape", [("convnet", (1, 8, 8)), ("resnet20", (3, 32, 32)),
                                            ("resnet19", (3, 32, 32)), ("vgg16", (3, 32, 32))])
def test_every_method_keeps_to_the_models_device(arch, in_shape):
    """Forward, loss and backward of every method with the models on PyTorch's ``meta`` device.

    ``meta`` tensors have shapes but no data, and mixing one with a CPU tensor raises ("Tensor on
    device cpu is not on the expected device meta"), so a CPU tensor created inside a model or a
    loss fails here as it would on a GPU — the closest check of the CUDA path this machine allows.
    """
    from htakl_deploy.distill.methods import LOSSES, METHOD_NEEDS
    from htakl_deploy.distill.methods.inputs import loss_inputs, method_module, method_tap
    from htakl_deploy.distill.models import build_model
    from htakl_deploy.distill.train import make_inputs, seeded_generator

    meta = torch.device("meta")
    with pytest.raises(RuntimeError, match="device"):  # the premise: meta and CPU do not mix
        torch.zeros(3, device=meta) + torch.zeros(3)
    for method, loss_fn in LOSSES.items():
        loss_cfg = DistillConfig(method=method).loss_config()
        student = build_model(arch, in_shape=in_shape, num_classes=10, spiking=True).to(meta)
        teacher = build_model(arch, in_shape=in_shape, num_classes=10, spiking=False).to(meta).eval()
        g = seeded_generator(0, 2, 0, 0)
        x = torch.rand(2, *in_shape)
        x_tbchw = make_inputs(x, 2, "direct", g).to(meta)
        y = torch.tensor([1, 7]).to(meta)
        tap = method_tap(student, method, loss_cfg)
        module = method_module(student, method, loss_cfg, tap, seed=0)  # BKDSNN's generator, on meta
        inputs = loss_inputs(student, student, teacher, METHOD_NEEDS.get(method), tap,
                             x_tbchw, x.to(meta), y, g, "label", module=module)
        loss = loss_fn(inputs, loss_cfg)
        loss.backward()
        assert loss.device == meta and loss.dim() == 0, method
        assert all(p.grad is None or p.grad.device == meta for p in student.parameters()), method
        if module is not None:
            assert all(p.device == meta and p.grad is not None and p.grad.device == meta
                       for p in module.parameters()), method
