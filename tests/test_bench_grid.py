"""bench/method_grid.py: one tiny cell end to end, the per-cell resume skip, and the Markdown page."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


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
    argv = [*TINY, "--out", str(out), "--results-md", str(md)]
    first = grid.main(argv, say=lambda s: None)
    assert first["ran"] == ["kd-T1-s0"] and not first["failed"]

    cell_path = out / "cells" / "kd-T1-s0.json"
    cell = json.loads(cell_path.read_text())
    assert cell["format"] == "htakl-bench-cell/1"
    assert (cell["method"], cell["timesteps"], cell["seed"], cell["epochs"]) == ("kd", 1, 0, 1)
    assert cell["test_samples"] == 32
    for key in ("float_acc", "emulator_acc", "firing_rate"):
        assert 0.0 <= cell[key] <= 1.0
    assert cell["macs_per_sample"] > 0 and cell["energy_uj_per_sample"] > 0  # the encoding layer's MACs
    assert cell["acs_per_sample"] >= 0
    assert (out / "runs" / "kd-T1-s0" / "export" / "student_quant.nir").exists()
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("cell,")
    assert json.loads((out / "results.json").read_text())["cells"][0]["cell"] == "kd-T1-s0"

    # second call: the cell's JSON exists, so nothing is retrained or rewritten
    ckpt = out / "runs" / "kd-T1-s0" / "student" / "last.pt"
    stamps = (cell_path.stat().st_mtime_ns, ckpt.stat().st_mtime_ns)
    docs = (REPO / "docs" / "RESULTS.md").read_bytes()
    second = grid.main(argv[:-2], say=lambda s: None)  # no --results-md: the page goes beside the grid's JSON
    assert second["ran"] == [] and second["skipped"] == ["kd-T1-s0"]
    assert second["markdown"] == out / "RESULTS.md" and "## digits" in second["markdown"].read_text()
    assert (REPO / "docs" / "RESULTS.md").read_bytes() == docs  # a trial grid never rewrites the tracked page
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


def test_cell_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    import os
    import socket
    import subprocess

    grid = load("method_grid")
    cell = grid.Cell("kd", 1, 0)
    assert grid.claim_cell(tmp_path, cell)
    assert not grid.claim_cell(tmp_path, cell)  # held by a live process (this one)
    grid.release_cell(tmp_path, cell)
    assert grid.claim_cell(tmp_path, cell)

    claim = tmp_path / "claims" / f"{cell.name}.claim"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now free: a claim naming it is stale
    claim.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert grid.claim_cell(tmp_path, cell)
    assert json.loads(claim.read_text())["pid"] == os.getpid()

    claim.write_text(json.dumps({"pid": dead.pid, "host": "another-host"}))  # cannot tell if it is alive there
    assert not grid.claim_cell(tmp_path, cell)

    argv = ["--data", "digits", "--workers", "2", "--worker-tag", "w1", "--invocation-start=1.5", "--seeds", "0"]
    assert grid._without_workers(argv) == ["--data", "digits", "--seeds", "0"]


def test_two_workers_share_the_cells(tmp_path):
    grid = load("method_grid")
    out, md = tmp_path / "grid", tmp_path / "RESULTS.md"
    argv = [*TINY[:2], "--methods", "kd", "ce", *TINY[4:], "--out", str(out), "--results-md", str(md),
            "--workers", "2"]
    res = grid.main(argv, say=lambda s: None)
    assert not res["failed"] and not res["worker_failed"]
    cells = sorted(p.name for p in (out / "cells").glob("*.json"))
    assert cells == ["ce-T1-s0.json", "kd-T1-s0.json"]  # each once, whichever worker ran it
    assert sorted(res["ran"] + res["busy"] + res["skipped"]) == ["ce-T1-s0", "kd-T1-s0"]
    assert not list((out / "claims").iterdir())  # every claim released
    log = (out / "commands.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["workers"] == 2  # the spawned worker does not log itself
    assert json.loads((out / "results.json").read_text())["missing"] == []


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
