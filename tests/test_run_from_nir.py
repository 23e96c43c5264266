"""``htakl-deploy run --from-nir MODEL.nir``: a foreign NIR graph through export → simulate →
energy → map → report in one run directory, no training (issue 14)."""

from __future__ import annotations

import json

import nir
import pytest

from htakl_deploy.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from test_nir_in import _hand_graph  # a conv → LIF → pool → flatten → affine graph on 1×8×8

    path = tmp_path_factory.mktemp("nir") / "hand.nir"
    nir.write(path, _hand_graph())
    return path


def test_run_from_nir_fills_a_run_directory(model, tmp_path, capsys):
    rc = main(["run", "--json", "--from-nir", str(model), "--data", "digits", "--dt", "1e-4", "--limit-test", "40",
               "--backends", "torch-float", "emulator", "lava-fixed_pt", "--lava-samples", "8", "--lava-check", "4",
               "--out-dir", str(tmp_path), "--run-name", "nir-run", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    run = tmp_path / "nir-run"
    assert result["run_dir"] == str(run) and result["from_nir"] == str(model)
    assert result["samples"] == {"torch-float": 40, "emulator": 40, "lava-fixed_pt": 8}
    config = json.loads((run / "config.json").read_text())
    assert config["from_nir"] == str(model) and config["dt_s"] == 1e-4 and config["data"] == "digits"
    export = json.loads((run / "export" / "export_report.json").read_text())
    assert export["lava"]["lava_check"]["spike_agreement"]["all"] == 1.0
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "export_report.json", "quant_report.json", "student.lava.npz", "student_float.nir", "student_quant.nir"]
    for backend in ("torch-float", "emulator", "lava-fixed_pt"):
        sim = json.loads((run / "simulate" / backend / "simulate.json").read_text())
        energy = json.loads((run / "energy" / f"{backend}.json").read_text())
        assert sim["samples"] == result["samples"][backend] and energy["samples"] == sim["samples"]
    # the integer run's accuracy from export (run_int, timestep-aligned) and from the emulator agree
    # on the same 40 images: the same fixed-point network
    emu = json.loads((run / "simulate" / "emulator" / "simulate.json").read_text())
    assert emu["accuracy"] == pytest.approx(export["nir"]["accuracy"]["int_acc"], abs=1 / 40)
    report = json.loads((run / "report.json").read_text())
    assert report["run"]["model"] == "NIR graph hand.nir" and (run / "report.html").is_file()
    # no teacher here, so no "ANN teacher" energy: not in the summary, the report or its figures
    assert result["ann_teacher_energy_per_sample_uj"] is None and "ANN teacher" not in captured.err
    assert report["run"]["teacher"] is False
    assert all(e["per_sample"]["ann_teacher_pj"] is None for e in report["energy"].values())
    assert "ANN teacher" not in (run / "report.md").read_text() and "ANN MACs" not in (run / "report.md").read_text()
    assert (run / "map").is_dir()
    pipeline = json.loads((run / "pipeline.json").read_text())
    assert all(pipeline["stages"][s]["done"] for s in ("export", "simulate:emulator", "energy", "map", "report"))


@pytest.mark.parametrize("argv, message", [
    ([], "needs --dt"),
    (["--dt", "1e-4", "--data", "fashion-mnist", "--data-root", "{fashion}"], "images are (1, 28, 28)"),
    (["--dt", "1e-4", "--epochs", "3"], "--epochs is a training flag"),
    (["--dt", "-1"], "--dt"),
])
def test_refused_from_nir_is_one_line_and_leaves_no_run(model, tmp_path, capsys, argv, message):
    from test_data import make_fashion  # a valid Fashion-MNIST folder, installed on this machine or not

    (tmp_path / "fashion").mkdir()
    make_fashion(tmp_path / "fashion")
    argv = [a.replace("{fashion}", str(tmp_path / "fashion")) for a in argv]
    args = ["run", "--from-nir", str(model), "--out-dir", str(tmp_path), "--run-name", "x"]
    if "--data" not in argv:
        args += ["--data", "digits"]
    assert main(args + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("htakl-deploy: error:") and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_dt_without_from_nir_is_refused(capsys):
    assert main(["run", "--dt", "1e-4"]) == 2
    assert "--from-nir only" in capsys.readouterr().err
