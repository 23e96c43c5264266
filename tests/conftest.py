"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

#: data sets a test may need that `make install` does not bring (``@pytest.mark.needs_data(NAME)``):
#: NAME → (a file that is there once it is installed, how to install it). Such a test is skipped,
#: with that line as the reason, where the data are missing; `pytest -m needs_data --collect-only -q`
#: lists them (docs/TESTING.md cites this table).
NEEDS_DATA = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
                      "apt-get install dataset-fashion-mnist (Debian's package, 30 MB, 3 s)"),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(name): needs a data set `make install` does not install "
                                       "(tests/conftest.py NEEDS_DATA: where it is read, how to install it); "
                                       "skipped without it")


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("needs_data")
        if marker is not None:
            path, how = NEEDS_DATA[marker.args[0]]
            if not path.exists():
                item.add_marker(pytest.mark.skip(reason=f"needs the {marker.args[0]} data set ({path.parent}): {how}"))


def tiny_digits_run(out: Path, **changes) -> Path:
    """Train a small real digits run (teacher + KD student) into ``out/r``; ``changes`` override
    the config (sizes, epochs). Returns the run directory."""
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.dist import DistEnv

    settings = {"data": "digits", "method": "kd", "batch_size": 64, "out_dir": str(out), "run_name": "r",
                "progress": False, **changes}
    recipe.run(DistillConfig(**settings), DistEnv())
    return out / "r"


def netx_warnings(report: dict) -> list[str]:
    """The warnings an export report gives for the layers netx holds but does not run bit-exactly
    (``report["netx"]["inexact_layers"]``; none without a netx target)."""
    return [f"netx: layer {layer['nodes']} is not bit-exact in lava-dl's netx: {layer['why']}"
            for layer in report.get("netx", {}).get("inexact_layers", [])]


def digit_pngs(root: Path, classes=(0, 1, 2), per_class: int | None = None) -> Path:
    """A class-sorted image folder ``root/class<k>/<i>.png`` of scikit-learn's 8×8 digits (greyscale
    PNGs, 0..255): a real, learnable bring-your-own-data set. ``per_class`` caps each class (the
    first images of that digit); returns ``root``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for k in classes:
        images = digits.images[digits.target == k][:per_class]
        (root / f"class{k}").mkdir(parents=True)
        for i, im in enumerate(images):
            Image.fromarray(np.round(im * 255 / 16).astype(np.uint8), "L").save(root / f"class{k}" / f"{i:03d}.png")
    return root


def load_bench(name: str):
    """A ``bench/NAME.py`` script imported as a module (``bench_NAME``), for tests that run a benchmark
    on a small budget or check a docs section against its JSON."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parent.parent
                                                  / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
