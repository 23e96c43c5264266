"""``--input FILE`` (distill/data/inputfile.py): the user's own inputs for ``simulate``, ``export`` and
``run --from-nir`` — ``.npy``/``.npz``/``.h5`` of ``[T, B, ...]`` sequences (T from the data) or
``[B, ...]`` static inputs, labels optional, event counts above 1 handled exactly, and folders of
N-MNIST-format recordings read with tonic's own reader. Bad files: tests/bad_inputs/cases.py."""

from __future__ import annotations

import json

import h5py
import nir
import numpy as np
import pytest

from htakl_deploy.cli import main
from htakl_deploy.distill.data.inputfile import open_inputs
from htakl_deploy.export.nir_in import load_nir_graph
from htakl_deploy.export.quantize import quantize_input
from htakl_deploy.hw.emulator import input_currents
from htakl_deploy.hw.plan import plan_from_quantized


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    from test_nir_in import _hand_graph  # conv → LIF → pool → flatten → affine on 1×8×8

    d = tmp_path_factory.mktemp("inputs")
    nir.write(d / "hand.nir", _hand_graph())
    rng = np.random.default_rng(1)
    counts = (rng.random((12, 6, 1, 8, 8)) < 0.4) * rng.integers(1, 3, (12, 6, 1, 8, 8))  # 0, 1 or 2 events
    assert counts.max() == 2
    np.savez(d / "ev.npz", inputs=counts.astype(np.uint8), labels=np.arange(6) % 10)
    return d, counts


def _predictions(sim_dir):
    with h5py.File(sim_dir / "spikes.h5", "r") as f:
        return f["predictions"][()], f["input"][()]


def test_own_inputs_through_export_simulate_and_run(hand, tmp_path, capsys):
    d, counts = hand
    out = tmp_path / "exp"
    assert main(["export", "--json", str(d / "hand.nir"), "--target", "nir", "lava", "--input", str(d / "ev.npz"),
                 "--lava-check", "2", "--out", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    acc = rep["nir"]["accuracy"]
    assert acc["samples"] == 6 and acc["timesteps"] == 12 and acc["inputs"] == str(d / "ev.npz")  # T from the data
    assert rep["lava"]["lava_check"]["spike_agreement"]["all"] == 1.0 and rep["timesteps"] == 12
    # the same samples as .npz (labels), .npy (none) and .h5: the same decisions; accuracy only with labels
    np.save(tmp_path / "ev.npy", counts)
    with h5py.File(tmp_path / "ev.h5", "w") as f:
        f["inputs"], f["labels"] = counts.astype(np.float32), np.arange(6) % 10
    got = {}
    for src in (d / "ev.npz", tmp_path / "ev.npy", tmp_path / "ev.h5"):
        sim = tmp_path / f"sim-{src.suffix[1:]}"
        assert main(["simulate", "--json", str(out), "--backend", "emulator", "--input", str(src),
                     "--out", str(sim)]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["samples"] == 6 and rep["timesteps"] == 12 and rep["input_kind"] == "events"
        assert (rep["accuracy"] is None) == (src.suffix == ".npy")
        got[src.suffix], x_rec = _predictions(sim)
        assert np.array_equal(x_rec, counts * 255) and x_rec.dtype == np.uint16  # 2 events = 510: not clipped
    assert np.array_equal(got[".npz"], got[".npy"]) and np.array_equal(got[".npz"], got[".h5"])
    assert rep["accuracy"] == float(np.mean(got[".h5"] == np.arange(6) % 10))
    # run --from-nir --input: no data set needed, the run directory named after the input
    assert main(["run", "--json", "--from-nir", str(d / "hand.nir"), "--input", str(tmp_path / "ev.npy"), "--dt",
                 "1e-4", "--backends", "emulator", "--lava-check", "0", "--map-target", "none", "--out-dir",
                 str(tmp_path), "--run-name", "r", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == {"emulator": 6} and res["accuracy"] == {"emulator": None}
    assert np.array_equal(_predictions(tmp_path / "r" / "simulate" / "emulator")[0], got[".npy"])


def test_static_inputs_are_shown_every_step(hand, tmp_path, capsys):
    """A ``[B, ...]`` file is direct encoding: the same as its frame repeated ``--timesteps`` times."""
    d, _ = hand
    frames = np.random.default_rng(2).random((4, 1, 8, 8))
    np.save(tmp_path / "static.npy", frames)
    np.save(tmp_path / "seq.npy", np.repeat(frames[None], 3, axis=0))
    out = tmp_path / "exp"
    assert main(["export", str(d / "hand.nir"), "--target", "lava", "--lava-check", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    runs = {}
    for name, extra in (("static.npy", ["--timesteps", "3"]), ("seq.npy", [])):
        sim = tmp_path / f"sim-{name}"
        assert main(["simulate", "--json", str(out), "--backend", "emulator", "--input", str(tmp_path / name),
                     "--out", str(sim), *extra]) == 0
        assert json.loads(capsys.readouterr().out)["input_kind"] == "analog"
        with h5py.File(sim / "spikes.h5", "r") as f:
            runs[name] = {k: f["layers"][k][()] for k in f["layers"]}, f["input"][()]
    assert all(np.array_equal(runs["static.npy"][0][k], runs["seq.npy"][0][k]) for k in runs["seq.npy"][0])
    assert np.array_equal(runs["static.npy"][1], runs["seq.npy"][1])


def test_an_event_count_of_c_is_c_times_one_event(hand):
    """Counts above 1 per bin enter the off-chip first layer exactly (255·c, not clipped to 8 bits)."""
    d, counts = hand
    _, q = load_nir_graph(d / "hand.nir")
    plan = plan_from_quantized(q)
    ones = (counts > 0).astype(np.float64)
    assert np.array_equal(quantize_input(3 * ones, plan.input_scale), 765 * ones)
    link = plan.input_link
    exp, link.weight_exp = link.weight_exp, 0
    raw = input_currents(plan, quantize_input(ones, plan.input_scale))  # the integer sums before the shift
    link.weight_exp = exp
    assert np.abs(raw).max() > 0
    want = (3 * raw) << exp if exp >= 0 else (3 * raw) >> -exp  # Lava's shift of the summed input
    assert np.array_equal(input_currents(plan, quantize_input(3 * ones, plan.input_scale)), want)


def _nmnist_bin(path, events) -> None:
    """Write events (x, y, t µs, p) in the N-MNIST binary format (5 bytes each: x, y, then the
    polarity bit and a 23-bit timestamp, big-endian), as the data set's files are."""
    raw = bytearray()
    for x, y, t, p in events:
        raw += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(raw))


def test_event_recordings_read_with_tonic(tmp_path):
    rng = np.random.default_rng(3)
    recs = {}
    for label, name, n, t_max in ((3, "a", 40, 4500), (7, "b", 25, 2200)):
        ev = [(int(rng.integers(34)), int(rng.integers(34)), int(rng.integers(t_max)), int(rng.integers(2)))
              for _ in range(n)] + [(5, 6, 100, 1), (5, 6, 900, 1)]  # two events in one 1 ms bin
        _nmnist_bin(tmp_path / "Test" / str(label) / f"{name}.bin", ev)
        recs[(label, name)] = ev
    inputs = open_inputs(tmp_path / "Test", (2, 34, 34))
    assert len(inputs) == 2 and list(inputs.labels) == [3, 7] and inputs.kind == "events"
    want_t = max(t for ev in recs.values() for _, _, t, _ in ev) // 1000 + 1
    assert inputs.timesteps == want_t
    got = inputs.batch(0, 2)
    for j, ev in enumerate(recs.values()):  # by hand: count per (1 ms bin, polarity, y, x)
        ref = np.zeros((want_t, 2, 34, 34))
        for x, y, t, p in ev:
            ref[t // 1000, p, y, x] += 1
        assert np.array_equal(got[:, j], ref)
    assert (got[0, :, 1, 6, 5] >= 2).all()  # counts above 1 kept
    cut = open_inputs(tmp_path / "Test", (2, 34, 34), timesteps=2)  # --timesteps: the first 2 ms
    assert cut.timesteps == 2 and np.array_equal(cut.batch(0, 2), got[:2])


def test_artefact_without_data_set_needs_input(hand, tmp_path, capsys):
    d, _ = hand
    out = tmp_path / "exp"
    assert main(["export", str(d / "hand.nir"), "--target", "lava", "--lava-check", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(out), "--backend", "emulator"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--input FILE" in err[0] and "re-export" not in err[0]
    # simulate MODEL.nir --input: exported on the fly, no data set needed
    assert main(["simulate", "--json", str(d / "hand.nir"), "--input", str(d / "ev.npz"), "--backend", "emulator",
                 "--out", str(tmp_path / "sim")]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 6
