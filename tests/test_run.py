"""`htakl-deploy run`: the whole pipeline end to end on a small digits run (real Lava included)."""

from __future__ import annotations

import json

import pytest

from htakl_deploy.cli import main


def test_run_produces_every_stage_and_the_report(tmp_path, capsys):
    rc = main(["run", "--out-dir", str(tmp_path), "--run-name", "r", "--limit-train", "256", "--limit-test", "24",
               "--batch-size", "64", "--epochs", "2", "--teacher-epochs", "1", "--lava-samples", "4",
               "--no-progress", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    run = tmp_path / "r"
    for backend in ("torch-float", "emulator", "lava-fixed_pt"):
        sim = json.loads((run / "simulate" / backend / "simulate.json").read_text())
        assert sim["samples"] == (4 if backend.startswith("lava") else 24)
        energy = json.loads((run / "energy" / f"{backend}.json").read_text())
        assert energy["backend"] == backend and energy["totals"]["acs"] > 0
    lava = json.loads((run / "simulate" / "lava-fixed_pt" / "simulate.json").read_text())
    assert lava["agreement"]["spike_agreement"]["all"] == 1.0
    report = json.loads((run / "report.json").read_text())
    assert {r["backend"] for r in report["accuracy"]} >= {"torch-float", "emulator", "lava-fixed_pt"}
    assert (run / "report.html").stat().st_size > 10_000 and (run / "report.md").exists()
    assert result["accuracy"]["lava-fixed_pt"] == lava["accuracy"]


def test_run_without_lava(tmp_path, capsys):
    rc = main(["run", "--out-dir", str(tmp_path), "--run-name", "r", "--limit-train", "128", "--limit-test", "8",
               "--batch-size", "64", "--epochs", "1", "--teacher-epochs", "1", "--no-lava", "--no-progress"])
    assert rc == 0
    run = tmp_path / "r"
    assert sorted(p.name for p in (run / "simulate").iterdir()) == ["emulator", "torch-float"]
    assert "lava_check" not in json.loads((run / "export" / "export_report.json").read_text())["lava"]
    assert (run / "export" / "student.lava.npz").exists() and (run / "report.html").exists()
    mapping = json.loads((run / "map" / "loihi2.json").read_text())  # `run` maps onto Loihi 2 by default
    assert mapping["totals"]["cores"] >= 1 and mapping["estimate"]["samples"] == 8
    assert "## Hardware mapping" in (run / "report.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize("args, expected", [
    (["--lava-samples", "0"], "--lava-samples: got 0"),
    (["--preset", "nope"], "--preset: got 'nope'"),
    (["--map-target", "nope"], "--map-target: got 'nope'"),
    (["--resume", "x", "--epochs", "3"], "--resume continues a run with its saved config; drop --epochs"),
])
def test_run_bad_input(tmp_path, capsys, args, expected):
    rc = main(["run", "--out-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # nothing was trained or written
