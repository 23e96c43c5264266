"""Paper-scale benchmark runs: a ResNet student on generated CIFAR-10-shaped data.

``make_run(model, test_images, root)`` writes ``cifar-10-batches-py/`` with random pixels (five
training batches of 2 images, a test batch of ``test_images``), trains the teacher and the HTA-KL
student one epoch on 8 images (T=4; enough to give spikes, the weights are what matters for
speed and memory, not accuracy) and exports NIR + the Lava artefact; reused when it exists.
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


def make_run(model: str, test_images: int, root: str | Path) -> Path:
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.dist import DistEnv
    from htakl_deploy.export.pipeline import run_export

    root = Path(root) / f"{model}-{test_images}"
    run_dir = root / "runs" / "r"
    if (run_dir / "export" / "student.lava.npz").is_file():
        return run_dir
    folder = root / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _batch(folder / f"data_batch_{i}", 2, i)
    _batch(folder / "test_batch", test_images, 9)
    cfg = DistillConfig(data="cifar10", data_root=str(root / "data"), model=model, limit_train=8, limit_test=2,
                        batch_size=4, epochs=1, teacher_epochs=1, timesteps=4, out_dir=str(root / "runs"),
                        run_name="r", progress=False)
    run_dir = Path(recipe.run(cfg, DistEnv())["run_dir"])
    run_export(run_dir, ["nir", "lava"], lava_check=0, evaluate=False)
    return run_dir
