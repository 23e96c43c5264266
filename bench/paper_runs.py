"""Paper-scale benchmark runs: a ResNet student on generated CIFAR-10-shaped data.

``make_run(model, test_images, root, firing)`` writes ``cifar-10-batches-py/`` with random pixels
(five training batches, a test batch of ``test_images``), trains the teacher and the HTA-KL student
one epoch on 8 images (T=4) and exports NIR + the Lava artefact; reused when it exists. Such a
student hardly spikes (ResNet-20: 54 spikes over 2 images and all layers), so speed, spike-file
size, energy and agreement with Lava measured on it say little about a trained network; with
``firing`` (a mean rate, e.g. 0.1) its BatchNorm layers are set by ``set_firing`` before export so
that its layers fire at a trained network's rates (7-19 % per layer at 0.1; ResNet-19's ``act1``,
after fc1, which has no BN, stays silent; the run's ``firing.json`` lists them). The weights stay
random: accuracy means nothing here. ``add_firing_flag`` gives a benchmark its ``--firing``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _batch(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     b"labels": [int(v) for v in rng.integers(0, 10, n)], b"filenames": [b"f"] * n}, f)


def data_root(run_dir: str | Path) -> str:
    """The generated data folder of a run made by ``make_run`` (artefacts do not keep the path)."""
    return str(Path(run_dir).parent.parent / "data")


def set_firing(model, x_tb, rate: float, iters: int = 10) -> dict:
    """Give an untrained student a trained network's activity: every BatchNorm gets γ = 1 and one
    shared β, its statistics from ``x_tb`` (``[T, B, ...]``; a train-mode forward with cumulative
    averages, so that the eval-mode network normalises each layer's real input), β bisected until
    the mean firing rate over the spiking layers is ``rate``. Only the BN affine parameters and
    statistics change, so the exported network is an ordinary folded, quantised student whose spike
    traffic (per layer: the returned rates) is representative of a trained one, where a one-epoch
    student on noise hardly spikes (ResNet-20: 54 spikes over 2 images)."""
    import torch
    from spikingjelly.activation_based import functional, neuron

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    lifs = {n: m for n, m in model.named_modules() if isinstance(m, neuron.BaseNode)}
    counts: dict = {}

    def hook(name):
        def f(_m, _i, out):
            counts[name] = float(out.detach().float().mean())
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in lifs.items()]

    def rates_at(beta: float) -> dict:
        with torch.no_grad():
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the forward
                bn.weight.fill_(1.0)
                bn.bias.fill_(beta)
            model.train()
            functional.reset_net(model)
            model(x_tb)
            functional.reset_net(model)
            model.eval()
            model(x_tb)  # the rates of the network as exported (running statistics)
            functional.reset_net(model)
        return dict(counts)

    lo, hi = -3.0, 3.0
    for _ in range(iters):
        beta = (lo + hi) / 2
        r = rates_at(beta)
        lo, hi = (beta, hi) if sum(r.values()) / len(r) < rate else (lo, beta)
    r = rates_at((lo + hi) / 2)
    for h in handles:
        h.remove()
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return {"beta": (lo + hi) / 2, "mean_rate": sum(r.values()) / len(r), "rates": r}


def add_firing_flag(ap) -> None:
    """``--firing RATE`` (default 0.1) on a benchmark's parser; a negative rate gives None: the
    one-epoch student as trained, which hardly spikes."""
    ap.add_argument("--firing", type=lambda v: None if float(v) < 0 else float(v), default=0.1,
                    help="the student's mean firing rate (set_firing; default 0.1); --firing -1: the one-epoch "
                    "student as trained (hardly spikes)")


def _give_activity(run_dir: Path, data: Path, rate: float) -> None:
    """Rewrite the student's checkpoint with ``set_firing`` on the generated training images;
    the calibration is kept in ``RUN/firing.json``."""
    import torch

    from htakl_deploy.atomic import write_json
    from htakl_deploy.distill.checkpoint import save_checkpoint
    from htakl_deploy.distill.data import encode
    from htakl_deploy.distill.data.registry import load_dataset
    from htakl_deploy.export.pipeline import load_student

    model, ckpt, path = load_student(run_dir)
    train, _ = load_dataset("cifar10", str(data))
    x, _ = train.batch(torch.arange(len(train)))
    info = set_firing(model, encode(x, ckpt["config"]["timesteps"], "direct"), rate)
    save_checkpoint(path, {**ckpt, "model": model.state_dict()})
    write_json(run_dir / "firing.json", info)


def make_run(model: str, test_images: int, root: str | Path, firing: float | None = None) -> Path:
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.dist import DistEnv
    from htakl_deploy.export.pipeline import run_export

    root = Path(root) / (f"{model}-{test_images}" + (f"-fire{firing:g}" if firing is not None else ""))
    run_dir = root / "runs" / "r"
    if (run_dir / "export" / "student.lava.npz").is_file():
        return run_dir
    folder = root / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _batch(folder / f"data_batch_{i}", 8 if firing is not None else 2, i)  # 40 images set the BN statistics
    _batch(folder / "test_batch", test_images, 9)
    cfg = DistillConfig(data="cifar10", data_root=str(root / "data"), model=model, limit_train=8, limit_test=2,
                        batch_size=4, epochs=1, teacher_epochs=1, timesteps=4, out_dir=str(root / "runs"),
                        run_name="r", progress=False)
    run_dir = Path(recipe.run(cfg, DistEnv())["run_dir"])
    if firing is not None:
        _give_activity(run_dir, root / "data", firing)
    run_export(run_dir, ["nir", "lava"], lava_check=0, evaluate=False)
    return run_dir
