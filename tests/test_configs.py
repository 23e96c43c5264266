"""configs/: the paper's Table I / III grids and our digits / Fashion-MNIST grids are valid `run`
configs (every cell builds, one shared teacher per data set and model); a grid axis given as a flag
is refused. (A grid running on Ray: tests/test_ray.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from htakl_deploy.cli import build_parser, main
from htakl_deploy.cmd_run import grid_plan
from htakl_deploy.distill.config import FIELD_NAMES, read_config_file
from htakl_deploy.runconfig import PIPELINE_FIELDS

ROOT = Path(__file__).resolve().parents[1] / "configs"
#: folders of configs/ that hold other data files than run configs (samples for --energy-model, map --target)
DATA_FOLDERS = {"energy-models": "energy model", "targets": "hardware target"}
RUN_CONFIGS = sorted(p for p in ROOT.rglob("*.toml") if p.relative_to(ROOT).parts[0] not in DATA_FOLDERS)
CONFIGS = [p for p in RUN_CONFIGS if "[grid]" in p.read_text(encoding="utf-8")]  # the grids
ACCEPTED = FIELD_NAMES | set(PIPELINE_FIELDS)


def cells_of(path, *flags):
    argv = ["run", "--config", str(path), *flags]
    args = build_parser(argv).parse_args(argv)
    return grid_plan(args, read_config_file(path, ACCEPTED | {"grid"}), ACCEPTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_every_cell(path):
    from htakl_deploy.grid import share_teachers

    cells = cells_of(path)
    names = [c.name for c in cells]
    assert len(set(names)) == len(names) and all(c.cfg.run_name.startswith(path.stem) for c in cells)
    assert all(Path(c.cfg.out_dir).is_absolute() for c in cells)  # workers do not share our working folder
    cells, teachers = share_teachers(cells, path.stem)
    assert len(teachers) == len({(c.cfg.data, c.cfg.model) for c in cells if c.teacher})
    assert all(c.cfg.teacher == str(next(t for t in teachers if t.name == c.teacher).checkpoint)
               for c in cells if c.teacher)


def test_paper_table1_cells_are_the_papers():
    cells = cells_of(next(p for p in CONFIGS if p.name == "cifar100-resnet19.toml"))
    got = {(c.cfg.method, c.cfg.timesteps) for c in cells}
    assert got == {(m, t) for m in ("kdsnn", "lasnn", "bkdsnn", "hta-kl") for t in (1, 2, 4)}
    cfg, settings = cells[0].cfg, cells[0].settings
    assert (cfg.data, cfg.model, cfg.epochs, cfg.lr, cfg.batch_size, cfg.momentum) == ("cifar100", "resnet19", 300, 0.01,
                                                                                        128, 0.9)
    assert settings.lava is False and settings.preset == "paper-45nm"


def test_a_grid_axis_given_as_a_flag_is_refused(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text('data = "digits"\nepochs = 1\n[grid]\nmethod = ["kd", "hta-kl"]\ntimesteps = [1]\n')
    assert main(["run", "--config", str(cfg), "--out-dir", str(tmp_path / "other"), "--method", "kd"]) == 2
    assert "--method is a [grid] axis" in capsys.readouterr().err and not (tmp_path / "other").exists()


@pytest.mark.parametrize("path", sorted(p for folder in DATA_FOLDERS for p in (ROOT / folder).glob("*.toml")),
                         ids=lambda p: p.name)
def test_sample_energy_models_and_targets_load(path):
    """configs/energy-models/*.toml load as energy models, configs/targets/*.toml as targets (strict:
    unknown or missing keys refused)."""
    from htakl_deploy.energy.models import load_energy_model
    from htakl_deploy.hw.target import load_target

    loaded = load_energy_model(path) if path.parent.name == "energy-models" else load_target(path)
    assert loaded.name == path.stem


@pytest.mark.parametrize("path", [p for p in RUN_CONFIGS if p not in CONFIGS], ids=lambda p: p.name)
def test_plain_run_configs_are_distill_configs(path):
    """A run config without a grid (configs/my.toml, the docs' sample) holds only DistillConfig keys,
    so that both `distill --config` and `run --config` take it."""
    from htakl_deploy.distill.config import build_config

    cfg = build_config(read_config_file(path), {})
    assert cfg.run_name and cfg.data
