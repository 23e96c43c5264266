"""`htakl-deploy export` end to end on a trained (tiny) run, and its bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import netx_warnings, tiny_digits_run
from htakl_deploy.cli import main
from htakl_deploy.export.nir_io import from_nir, read_nir
from htakl_deploy.export.quantize import QuantizedGraph


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=512, limit_test=64, epochs=3,
                           teacher_epochs=2)


def test_export_nir_and_onnx(run_dir, capsys):
    rc = main(["export", "--json", str(run_dir), "--target", "nir", "onnx"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((run_dir / "export" / "export_report.json").read_text())
    acc = report["nir"]["accuracy"]
    assert acc["samples"] == 64 and acc["timesteps"] == 4  # the run's own --limit-test, not the whole split
    # the integer network really ran: its decisions track the float student's closely
    assert acc["decision_agreement"] >= 0.9, acc
    assert abs(acc["float_acc"] - acc["int_acc"]) <= 0.1, acc
    quant = from_nir(read_nir(report["nir"]["quant_nir"]))
    assert isinstance(quant, QuantizedGraph)
    rows = json.loads(Path(report["nir"]["quant_report"]).read_text())
    assert rows and all(r["weight_exp"] is not None for r in rows)
    assert report["onnx"]["student_max_abs_err"] < 1e-4
    assert report["onnx"]["teacher_max_abs_err"] < 1e-4
    assert report["warnings"] == []  # a normally trained student fits the 8-bit mantissas
    assert (run_dir / "export" / "student_T4.onnx").exists() and (run_dir / "export" / "teacher.onnx").exists()
    assert not list((run_dir / "export").glob("*.tmp"))


def test_export_warns_when_weights_are_lost_to_8_bits(run_dir, tmp_path, capsys):
    """A student with one outlier weight (×1000) in stage2: export still succeeds, but says on
    stderr, in export_report.json and in the run report which connection lost its small weights."""
    import torch

    from htakl_deploy.distill.checkpoint import save_checkpoint
    from htakl_deploy.energy.document import write_report

    ckpt = torch.load(run_dir / "student" / "last.pt", map_location="cpu", weights_only=True)
    w = ckpt["model"]["stage2.conv.weight"]
    w.view(-1)[0] = 1000.0 * w.abs().max()
    bad = tmp_path / "r"
    (bad / "student").mkdir(parents=True)
    save_checkpoint(bad / "student" / "last.pt", ckpt)
    (bad / "config.json").write_text((run_dir / "config.json").read_text())
    assert main(["export", "--json", str(bad), "--target", "nir", "--no-eval"]) == 0
    out = capsys.readouterr()
    warned = [line for line in out.err.splitlines() if line.startswith("htakl-deploy: warning: stage2.conv")]
    assert len(warned) == 1 and "weights round to 0" in warned[0], out.err
    report = json.loads((bad / "export" / "export_report.json").read_text())
    assert report["warnings"] == [warned[0].removeprefix("htakl-deploy: warning: ")]
    assert json.loads(out.out)["warnings"] == report["warnings"]
    write_report(bad)
    assert "**Quantisation warning**: stage2.conv" in (bad / "report.md").read_text()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["missing_dir/none.pt"], "CHECKPOINT: file not found"),
        (["{run}", "--target", "lava2"], "--target: got 'lava2', expected one of nir, onnx"),
        (["{run}/teacher/last.pt"], "holds a teacher model, expected a student"),
        (["{run}", "--samples", "0"], "--samples: got 0"),
    ],
)
def test_export_bad_input(run_dir, capsys, args, expected):
    rc = main(["export", *[a.format(run=run_dir) for a in args], "--no-eval"])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err


def test_export_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "student.pt"
    bad.write_bytes(b"\x00" * 100)
    rc = main(["export", str(bad)])
    assert rc == 2 and "not a readable checkpoint" in capsys.readouterr().err
    assert not (tmp_path.parent / "export").exists()


def test_export_lava_then_simulate_lava_and_emulator(run_dir, capsys):
    from htakl_deploy.energy.spikefile import open_spikes, read_spikes

    rc = main(["export", "--json", str(run_dir), "--target", "lava", "--lava-check", "3", "--no-eval"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)["lava"]
    check = report["lava_check"]
    assert check["samples"] == 3 and check["spike_agreement"]["all"] == 1.0 and check["readout_identical"]
    assert {k["kind"] for k in report["links"]} == {"input", "conv", "dense"}
    assert (run_dir / "export" / "student.lava.npz").exists()

    assert main(["simulate", "--json", str(run_dir), "--backend", "emulator"]) == 0
    emu = json.loads(capsys.readouterr().out)
    assert emu["samples"] == 64 and emu["timesteps"] == 4
    assert emu["float_student"]["decision_agreement"] >= 0.9  # the float student is reported, need not be 100 %
    # a what-if (another --samples) writes beside the recording there, never over it
    own = (run_dir / "simulate" / "emulator" / "spikes.h5").read_bytes()
    assert main(["simulate", "--json", str(run_dir), "--backend", "emulator", "--samples", "7", "--no-compare"]) == 0
    what_if = json.loads(capsys.readouterr().out)
    assert what_if["out_dir"] == str(run_dir / "simulate" / "what-if" / "emulator-7samples-T4")
    assert read_spikes(Path(what_if["out_dir"]) / "spikes.h5").samples == 7
    assert (run_dir / "simulate" / "emulator" / "spikes.h5").read_bytes() == own
    assert main(["simulate", "--json", str(run_dir), "--backend", "lava", "--samples", "5"]) == 0
    lava = json.loads(capsys.readouterr().out)
    assert lava["agreement"]["spike_agreement"]["all"] == 1.0 and lava["agreement"]["readout_identical"]
    rec = read_spikes(run_dir / "simulate" / "lava-fixed_pt" / "spikes.h5")
    emu_rec = read_spikes(run_dir / "simulate" / "emulator" / "spikes.h5")
    assert rec.samples == 5 and rec.timesteps == 4 and set(rec.layers) == set(emu_rec.layers)
    for name, s in rec.layers.items():  # the Lava spikes are the emulator's, sample for sample
        assert s.shape[:2] == (4, 5) and (s == emu_rec.layers[name][:, :5]).all(), name
    assert (rec.predictions == emu_rec.predictions[:5]).all()
    # in batches of 2 (a Lava network per batch) through the same SpikeWriter, keeping only the
    # counts (--record counts): the emulator's counts over those 5 samples
    assert main(["simulate", "--json", str(run_dir), "--backend", "lava", "--samples", "5", "--batch-size", "2",
                 "--record", "counts", "--out", str(run_dir / "lava_counts")]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["batch_size"] == 2 and counts["agreement"]["spike_agreement"]["all"] == 1.0
    with open_spikes(run_dir / "lava_counts" / "spikes.h5") as got:
        assert got.samples == 5 and not got.layers and got.record == "counts"
        assert sum(int(got.layer_counts(n).sum()) for n in emu_rec.layers) > 0
        for name, s in emu_rec.layers.items():
            np.testing.assert_array_equal(got.layer_counts(name), s[:, :5].sum(axis=1, dtype=np.int64), err_msg=name)

    # AC counts from the Lava spikes and from the emulator's are identical, layer by layer
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import report_for_files

    assert main(["simulate", str(run_dir), "--backend", "emulator", "--samples", "5",
                 "--out", str(run_dir / "emu5"), "--no-compare"]) == 0
    out = capsys.readouterr().out  # without --json: a short human summary
    assert out.startswith("emulator: accuracy ") and "(of 5 images), T=4" in out, out
    assert f"spikes: {run_dir / 'emu5'}/spikes.h5" in out and "vs emulator" not in out, out
    graph, model = run_dir / "export" / "student_quant.nir", load_preset("paper-45nm")
    e_lava = report_for_files(run_dir / "simulate" / "lava-fixed_pt" / "spikes.h5", graph, model)
    e_emu = report_for_files(run_dir / "emu5" / "spikes.h5", graph, model)
    assert e_lava["totals"]["acs"] > 0
    assert [r["acs_per_timestep"] for r in e_lava["layers"]] == [r["acs_per_timestep"] for r in e_emu["layers"]]
    assert e_lava["totals"] == e_emu["totals"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["missing_dir"], "ARTEFACT missing_dir: no student.lava.npz there"),
        (["{run}", "--backend", "loihi3"], "--backend: got 'loihi3', expected one of lava-fixed_pt"),
        (["{run}", "--samples", "0"], "--samples: got 0"),
        (["{bad}"], "not a readable Lava artefact"),
    ],
)
def test_simulate_bad_input(run_dir, tmp_path, capsys, args, expected):
    bad = tmp_path / "student.lava.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    rc = main(["simulate", *[a.format(run=run_dir, bad=bad) for a in args]])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err


def test_export_netx_target(run_dir, capsys):
    """`--target netx` from the CLI on a trained run: lava-dl netx HDF5 next to the NIR files."""
    from htakl_deploy.export.netx_hdf5 import read_netx_summary

    assert main(["export", "--json", str(run_dir), "--target", "netx", "--no-eval"]) == 0
    report = json.loads(capsys.readouterr().out)
    layers = read_netx_summary(report["netx"]["netx"])["layers"]
    assert [layer["type"] for layer in layers] == report["netx"]["layers"]
    assert layers[0]["type"] == "input" and layers[-1]["type"] == "dense"
    inexact = report["netx"]["inexact_layers"]  # the first conv at least: weight_exp < 0 (pixel scale)
    assert inexact and all(layer["why"] for layer in inexact)
    said = netx_warnings(report)
    assert len(said) == len(inexact) and report["warnings"] == said  # in warnings[], as every other export warning
    capsys.readouterr()
    assert main(["export", str(run_dir), "--target", "netx", "--no-eval"]) == 0  # without --json: a summary
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"exported {report['checkpoint']}",
        f"netx: {report['netx']['netx']} ({len(layers)} layers; {len(inexact)} not bit-exact in netx: see the warnings)"]
    assert captured.err.splitlines() == [f"htakl-deploy: warning: {line}" for line in said]  # and on stderr


def test_simulate_tells_the_progress_bar_its_sample_count(run_dir, tmp_path):
    """A progress callback with ``set_total`` learns the number of samples before the first batch
    (the CLI's bar then shows an ETA even without ``--samples``); ``done`` climbs to it."""
    from htakl_deploy.export.pipeline import run_export
    from htakl_deploy.hw.simulate import simulate

    if not (run_dir / "export" / "student.lava.npz").exists():
        run_export(run_dir, ["lava"], lava_check=0, evaluate=False)
    calls: list = []

    def progress(done: int) -> None:
        calls.append(done)

    progress.set_total = lambda n: calls.append(("total", n))
    simulate(run_dir, backend="emulator", samples=5, batch_size=2, out_dir=tmp_path / "emu", progress=progress)
    assert calls[0] == ("total", 5) and calls[1:] and calls[-1] == 5 and calls[1:] == sorted(calls[1:])
