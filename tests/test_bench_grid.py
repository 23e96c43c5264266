"""bench/method_grid.py: one tiny cell end to end on the grid runner (a local Ray cluster), the
per-cell skip, the Markdown page beside the results (never over docs/RESULTS.md), and the tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # method_grid imports results_md by name
    spec.loader.exec_module(module)
    return module


TINY = ["--data", "digits", "--methods", "kd", "--timesteps", "1", "--seeds", "0", "--epochs", "1",
        "--teacher-epochs", "1", "--limit-train", "256", "--limit-test", "32", "--batch-size", "64"]


def test_grid_cell_resume_and_markdown(tmp_path):
    grid = load("method_grid")
    out, md = tmp_path / "grid", tmp_path / "RESULTS.md"
    docs = BENCH.parent / "docs" / "RESULTS.md"
    tracked = (docs.read_bytes(), docs.stat().st_mtime_ns)
    argv = [*TINY, "--out", str(out)]
    first = grid.main(argv, say=lambda s: None)
    assert first["ran"] == ["kd-T1-s0"] and not first["failed"]
    # a trial grid writes its page beside its results, never over the tracked one
    assert first["markdown"] == out / "RESULTS.md" and "| kd | 1 | 1 |" in (out / "RESULTS.md").read_text()
    assert (docs.read_bytes(), docs.stat().st_mtime_ns) == tracked

    cell_path = out / "cells" / "kd-T1-s0.json"
    cell = json.loads(cell_path.read_text())
    assert cell["format"] == "htakl-bench-cell/1"
    assert (cell["method"], cell["timesteps"], cell["seed"], cell["epochs"]) == ("kd", 1, 0, 1)
    assert cell["test_samples"] == 32
    for key in ("float_acc", "emulator_acc", "firing_rate"):
        assert 0.0 <= cell[key] <= 1.0
    assert cell["macs_per_sample"] > 0 and cell["energy_uj_per_sample"] > 0  # the encoding layer's MACs
    assert cell["acs_per_sample"] >= 0
    assert set(cell["wall_s"]) == {"distill", "export", "emulator", "energy", "report", "total"}
    run = out / "runs" / "kd-T1-s0"
    assert (run / "export" / "student_quant.nir").exists() and (run / "report.html").exists()
    assert not (run / "export" / "student.lava.npz").exists()  # large files deleted (--keep-artefacts keeps them)
    assert json.loads((run / "config.json").read_text())["teacher"] == str(out / "teacher" / "teacher" / "last.pt")
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("cell,")
    results = json.loads((out / "results.json").read_text())
    assert results["cells"][0]["cell"] == "kd-T1-s0" and results["teacher"]["epochs"] == 1

    # second call: the cell's JSON exists, so nothing is retrained or rewritten (and Ray is not started)
    ckpt = out / "runs" / "kd-T1-s0" / "student" / "last.pt"
    stamps = (cell_path.stat().st_mtime_ns, ckpt.stat().st_mtime_ns)
    second = grid.main([*argv, "--results-md", str(md)], say=lambda s: None)
    assert second["ran"] == [] and second["skipped"] == ["kd-T1-s0"]
    assert (cell_path.stat().st_mtime_ns, ckpt.stat().st_mtime_ns) == stamps

    text = md.read_text()
    assert "## digits" in text and "| kd | 1 | 1 |" in text
    assert "--epochs 1" in text  # the command that produced the table
    assert "## fashion-mnist" in text  # run or not, every data set has its section
    assert "cores" in text and "torch" in text and "Git HEAD" in text

    # another budget into the same --out is refused rather than mixed into the tables
    from htakl_deploy.errors import UserError

    with pytest.raises(UserError, match="another budget"):
        grid.main([*TINY[:-4], "--epochs", "2", "--limit-test", "32", "--batch-size", "64", "--out", str(out),
                   "--results-md", str(md)], say=lambda s: None)


def test_aggregate_paired_difference():
    md = load("results_md")

    def cell(method, seed, acc):
        return {"method": method, "timesteps": 2, "seed": seed, "overrides": {}, "delta": 0.5, "head_weight": 0.5,
                "float_acc": acc, "emulator_acc": acc, "firing_rate": 0.1, "acs_per_sample": 1.0,
                "energy_uj_per_sample": 1.0}

    cells = [cell("kd", s, a) for s, a in enumerate((0.90, 0.92, 0.94))]
    cells += [cell("hta-kl", s, a) for s, a in enumerate((0.91, 0.93, 0.95))]
    agg = md.aggregate(cells)
    kd = next(r for r in agg["main"] if r["method"] == "kd")
    assert kd["float_acc"]["mean"] == pytest.approx(0.92) and kd["float_acc"]["std"] == pytest.approx(0.02)
    diff = agg["hta_minus_kd"][0]["float_acc"]
    assert diff["mean"] == pytest.approx(0.01) and diff["n"] == 3
    assert diff["significant_95"]  # the same +1 pt on every seed


def test_reading_names_methods_that_lose_accuracy_to_fixed_point():
    md = load("results_md")

    def cell(method, seed, float_acc, emulator_acc):
        return {"cell": f"{method}-T2-s{seed}", "method": method, "timesteps": 2, "seed": seed, "overrides": {},
                "delta": 0.5, "head_weight": 0.5, "float_acc": float_acc, "emulator_acc": emulator_acc,
                "firing_rate": 0.1, "acs_per_sample": 1.0, "macs_per_sample": 0.0, "energy_pj_per_sample": 1.0,
                "energy_uj_per_sample": 1e-6}

    cells = [cell("kd", s, 0.80, 0.795) for s in range(3)]  # 0.5 pt: fine
    cells += [cell("ckdsnn", s, 0.70, a) for s, a in enumerate((0.20, 0.30, 0.40))]  # 50, 40, 30 pt
    lines = [line for line in md._reading(md.aggregate(cells), cells, 100) if "Methods whose" in line]
    assert len(lines) == 1
    assert "ckdsnn +40.00 ± 10.00 pt over 3 cells" in lines[0] and "kd " not in lines[0]
    cells = [c for c in cells if c["method"] == "kd"]
    assert not [line for line in md._reading(md.aggregate(cells), cells, 100) if "Methods whose" in line]
