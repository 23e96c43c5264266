"""The built wheel carries the whole package: every module and every data file (energy presets,
hardware targets), with no setuptools warning while it is built; installed into a fresh virtual
environment, its `htakl-deploy` exports a NIR graph and maps it onto a Loihi target read from the
wheel's own package data.

What this proves, and what it does not: the wheel is built by setuptools' PEP 517 backend from a
copy of the package's sources (not the editable install), installed with ``--no-deps --no-index``
into a new venv, and run from a folder outside the repository; the test asserts that the modules
and data it uses come from that venv. The wheel's *dependencies* are not reinstalled (torch alone
is ~1 GB): the fresh venv sees the project venv's site-packages through a ``.pth`` line, after its
own. So it checks the packaging (modules, package data, entry point), not that pip resolves the
dependencies from the registry — ``make install`` does that on every fresh machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nir
import pytest

REPO = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, Path]:
    """``[tool.setuptools.package-dir]``: package → source folder."""
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    return {pkg: REPO / folder for pkg, folder in cfg["package-dir"].items()}


def _sources() -> dict[str, Path]:
    """Every file the wheel must hold: wheel path → source file (modules and data, no caches)."""
    files = {}
    for pkg, folder in _package_dirs().items():
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix in (".py", ".toml"):
                # a sub-folder of a mapped folder belongs to the deepest mapped package
                files.setdefault(str(Path(*pkg.split(".")) / rel), path)
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources; (wheel path, the build's output)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for folder in {p.name for p in _package_dirs().values()}:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    # as pip builds it (byte-compiling on: PYTHONDONTWRITEBYTECODE only makes setuptools say it skips it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    got = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(dist)!r}))"],
                         cwd=src, capture_output=True, text=True, timeout=300, env=env)
    assert got.returncode == 0, got.stderr[-3000:]
    return dist / got.stdout.strip().splitlines()[-1], got.stdout + got.stderr


def test_wheel_holds_every_module_and_data_file_without_a_warning(wheel):
    path, log = wheel
    assert "warning" not in log.lower(), [line for line in log.splitlines() if "warn" in line.lower()]
    names = set(zipfile.ZipFile(path).namelist())
    missing = sorted(set(_sources()) - names)
    assert not missing, missing
    for data in ("htakl_deploy/hw/targets/loihi2.toml", "htakl_deploy/energy/presets/paper-45nm.toml"):
        assert data in names


def test_wheel_installs_and_maps_in_a_fresh_venv(wheel, tmp_path):
    from test_nodes import _graph

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    got = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "--quiet", str(wheel[0])], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, nir, numpy, ...) from the project's venv, after the fresh venv's own packages
    (fresh_site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()
    nir.write(work / "g.nir", _graph())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    cli = str(venv / "bin" / "htakl-deploy")

    def run(*argv):
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    # the modules and the package data come from the fresh venv (these modules import no torch)
    where = run(str(python), "-c", "import htakl_deploy.hw.target as t, htakl_deploy.energy.models as e; "
                                   "print(t.__file__); print(e.__file__); "
                                   "print([t.load_target(n).name for n in ('loihi1', 'loihi2')]); "
                                   "print([e.load_preset(n).name for n in e.preset_names()])").splitlines()
    assert all(line.startswith(str(fresh_site)) for line in where[:2]), where
    assert where[2] == "['loihi1', 'loihi2']"
    assert eval(where[3]) == sorted(p.stem for p in (REPO / "energy" / "presets").glob("*.toml"))  # noqa: S307
    # the wheel's console script, end to end: a hand-written NIR graph → Lava artefact → Loihi 1 cores
    run(cli, "export", "g.nir", "--target", "nir", "lava", "--lava-check", "0", "--out", "g-export")
    out = run(cli, "map", "g-export/student.lava.npz", "--target", "loihi1", "--no-spikes")
    assert "loihi1" in out and "cuba" in out and "binding limit" in out, out
