"""``export MODEL.nir --calibration SRC`` (export/calibration.py): 24-bit headroom per layer and
float-vs-integer decisions on calibration inputs; bad sources are one line, exit 2, nothing written."""

from __future__ import annotations

import json

import h5py
import nir
import numpy as np
import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.export.calibration import calibrate, load_calibration
from htakl_deploy.export.nir_in import load_nir_graph
from htakl_deploy.export.quantize import run_int


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from test_nir_in import _hand_graph  # conv → LIF → pool → flatten → affine on 1×8×8

    path = tmp_path_factory.mktemp("nir") / "hand.nir"
    nir.write(path, _hand_graph())
    return path


def test_calibration_report(model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--json", str(model), "--target", "nir", "--calibration", "digits", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    cal = report["calibration"]
    assert cal["source"] == "digits" and cal["samples"] == 256 and cal["timesteps"] == 4
    assert set(cal["layers"]) == {"lif", "output"} and 0 <= cal["decision_agreement"] <= 1
    # by hand: the LIF has no current memory (du = 4095), so its u each step is the conv's current << 6
    graph, q = load_nir_graph(model)
    x = load_calibration("digits", (1, 8, 8), 4).batch(0, 256)
    _, vals = run_int(q, torch.from_numpy(x), record=True)
    assert cal["layers"]["lif"]["max_abs_u"] == int(np.abs(vals["conv"]).max()) << 6 > 0
    assert 0 < cal["layers"]["lif"]["u_headroom"] < 1 and report["warnings"] == []
    # the same inputs as a file, [B, ...] (direct encoding) and [T, B, ...], give the same report
    np.save(tmp_path / "frames.npy", x[0])
    np.save(tmp_path / "seq.npy", x)
    for f in ("frames.npy", "seq.npy"):
        assert main(["export", "--json", str(model), "--target", "nir", "--calibration", str(tmp_path / f),
                     "--out", str(tmp_path / f"o-{f}")]) == 0
        got = json.loads(capsys.readouterr().out)["calibration"]
        assert {k: v for k, v in got.items() if k != "source"} == {k: v for k, v in cal.items() if k != "source"}


def test_past_24_bits_is_a_warning_naming_the_layer(model):
    graph, q = load_nir_graph(model)
    x = load_calibration("digits", (1, 8, 8), 4, max_samples=16)
    c = q.connection("conv", "lif")
    c.weight_exp = 7  # 2^(7 - old) times the current: far past 2^23 for bright pixels
    report, warnings = calibrate(graph, q, x)
    assert report["layers"]["lif"]["max_abs_u"] >= 1 << 23
    assert any("layer 'lif'" in w and "|u|" in w and "wraps" in w for w in warnings), warnings


def _h5(path, **sets):
    with h5py.File(path, "w") as f:
        for k, v in sets.items():
            f[k] = v
    return path


BAD = {
    "missing.npy": (None, "no such input file"),
    "nan.npy": (np.full((2, 1, 8, 8), np.nan), "NaN"),
    "range.npy": (np.full((2, 1, 8, 8), 2.5), "expected analog values in [0, 1]"),
    "negative.npy": (np.full((2, 1, 8, 8), -0.5), "negative values"),
    "counts.npy": (np.full((2, 1, 8, 8), 300.0), "more than 255"),
    "labels.npz": ("labels", "labels have shape (3,), expected [2]"),
    "shape.npy": (np.zeros((2, 1, 7, 8)), "the network's input is (1, 8, 8)"),
    "ndim.npy": (np.zeros((8, 8)), "expected [T, B, 1, 8, 8]"),
    "text.npy": (np.array([["a"] * 8] * 8), "expected real numbers"),
    "objects.npy": (np.array([{"a": 1}], dtype=object), "not a readable input array"),
    "two.h5": ("h5", "expected one array of inputs"),
    "junk.h5": ("junk", "not a readable input array"),
}


@pytest.mark.parametrize("name", list(BAD) + ["no-such-dataset"])
def test_bad_calibration_is_one_line_exit_2_and_writes_nothing(name, model, tmp_path, capsys):
    src = tmp_path / name
    if name == "no-such-dataset":
        src, message = "no-such-dataset", "no-such-dataset"
    else:
        value, message = BAD[name]
        if isinstance(value, np.ndarray):
            np.save(src, value, allow_pickle=True)
        elif value == "h5":
            _h5(src, a=np.zeros((2, 1, 8, 8)), b=np.zeros((2, 1, 8, 8)))
        elif value == "junk":
            src.write_bytes(b"not hdf5")
        elif value == "labels":
            np.savez(src, inputs=np.zeros((2, 1, 8, 8)), labels=np.zeros(3))
    out = tmp_path / "out"
    assert main(["export", str(model), "--target", "nir", "lava", "--calibration", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("htakl-deploy: error:") and message in err[0], err
    assert not out.exists()


def test_h5_named_inputs_and_run_from_nir(model, tmp_path, capsys):
    x = load_calibration("digits", (1, 8, 8), 4, max_samples=8).batch(0, 8)
    src = _h5(tmp_path / "cal.h5", inputs=x, labels=np.zeros(8))
    assert main(["run", "--json", "--from-nir", str(model), "--data", "digits", "--dt", "1e-4", "--calibration",
                 str(src), "--limit-test", "20", "--backends", "emulator", "--lava-check", "0", "--map-target", "none",
                 "--out-dir", str(tmp_path), "--run-name", "r", "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "r" / "export" / "export_report.json").read_text())
    assert report["calibration"]["samples"] == 8 and report["calibration"]["source"] == str(src)
    assert main(["run", "--from-nir", str(model), "--data", "digits", "--dt", "1e-4", "--calibration",
                 str(tmp_path / "nope.npy"), "--out-dir", str(tmp_path), "--run-name", "r2"]) == 2
    assert not (tmp_path / "r2").exists()
