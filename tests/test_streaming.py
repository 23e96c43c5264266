"""Streaming spike files (issue 19): ``simulate`` writes batch by batch, ``energy`` and the
report read chunk by chunk, and the counts are exactly those of the in-memory path."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import tiny_digits_run
from htakl_deploy.cli import main
from htakl_deploy.energy.counter import count_ops
from htakl_deploy.energy.models import load_preset
from htakl_deploy.energy.report import report_for_files
from htakl_deploy.energy.rundata import activity_from_spikes
from htakl_deploy.energy.spikefile import SpikeRecording, SpikeWriter, open_spikes, read_spikes
from htakl_deploy.export.nir_io import from_nir, read_nir
from htakl_deploy.export.pipeline import run_export
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.simulate import load_samples, read_artefact, resolve_artefact, simulate

SAMPLES = 23


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=128, limit_test=SAMPLES, epochs=1,
                          teacher_epochs=1)
    run_export(run, ["nir", "lava"], lava_check=0, evaluate=False)
    return run


def _graph(run_dir):
    return from_nir(read_nir(run_dir / "export" / "student_quant.nir")).graph


def test_streamed_file_counts_equal_the_in_memory_path(run_dir, tmp_path):
    plan = read_artefact(resolve_artefact(run_dir))
    x_tb, labels = load_samples(plan, None, 4, None)
    emu = emulate(plan, x_tb)  # the in-memory path: every sample at once
    mem = SpikeRecording({k: v.astype(np.uint8) for k, v in emu.spikes.items()}, emu.input_int.astype(np.uint8),
                         labels, None, {"backend": "emulator"})
    want = count_ops(_graph(run_dir), mem)
    assert want["totals"]["acs"] > 0 and want["totals"]["spikes"] > 0

    sim = simulate(run_dir, backend="emulator", batch_size=5, out_dir=tmp_path / "s5", compare=False)
    assert sim["samples"] == SAMPLES and sim["batch_size"] == 5
    path = tmp_path / "s5" / "spikes.h5"
    streamed = read_spikes(path)
    for k, v in mem.layers.items():  # 5 batches of 5, 5, 5, 5, 3: the same spikes
        assert np.array_equal(streamed.layers[k], v), k
    assert np.array_equal(streamed.input, mem.input)
    with open_spikes(path, chunk=4) as f:  # read back 4 samples at a time
        got = count_ops(_graph(run_dir), f)
    assert got == want
    # the CLI's energy report (chunked reader) gives the same counts
    rep = report_for_files(path, run_dir / "export" / "student_quant.nir", load_preset("paper-45nm"))
    assert rep["totals"]["acs"] == want["totals"]["acs"] and rep["layers"][1]["acs_per_timestep"] == \
        want["layers"][1]["acs_per_timestep"]
    assert activity_from_spikes(path, "x", chunk=3)["layers"][0]["spikes_per_sample"] == \
        want["neurons"][0]["spikes"] / SAMPLES


def test_counts_only_and_layer_subset(run_dir, tmp_path):
    graph = _graph(run_dir)
    full = simulate(run_dir, backend="emulator", batch_size=8, out_dir=tmp_path / "full", compare=False)
    counts = simulate(run_dir, backend="emulator", batch_size=8, out_dir=tmp_path / "counts", compare=False,
                      record="counts")
    assert counts["accuracy"] == full["accuracy"] and counts["record"] == "counts"
    with open_spikes(tmp_path / "full" / "spikes.h5") as f:
        want = count_ops(graph, f)
        names = list(f.layer_order)
    with open_spikes(tmp_path / "counts" / "spikes.h5") as f:
        assert f.input is None and f.layers == {}
        got = count_ops(graph, f)
    # every exact count is the same; the NeuroBench counts need per-sample spikes: None here
    for a, b in zip(want["layers"], got["layers"]):
        assert {k: v for k, v in a.items() if not k.startswith("neurobench")} == \
               {k: v for k, v in b.items() if not k.startswith("neurobench")}
        assert b["neurobench_eff_acs"] is None
    assert want["neurons"] == got["neurons"]
    with pytest.raises(Exception, match="--record 'counts'"):
        read_spikes(tmp_path / "counts" / "spikes.h5")

    one = simulate(run_dir, backend="emulator", out_dir=tmp_path / "one", compare=False, record=names[-1])
    assert one["record"] == [names[-1]]
    with open_spikes(tmp_path / "one" / "spikes.h5") as f:
        assert list(f.layers) == [names[-1]] and f.input is not None
        assert np.array_equal(f.layers[names[-1]][:, :], read_spikes(tmp_path / "full" / "spikes.h5").layers[names[-1]])


def test_version_1_files_are_still_read(run_dir, tmp_path):
    """A file in the previous layout (unpacked uint8, no counts) counts exactly as before."""
    simulate(run_dir, backend="emulator", out_dir=tmp_path / "new", compare=False)
    rec = read_spikes(tmp_path / "new" / "spikes.h5")
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        attrs = {**rec.attrs, "format": "htakl-spikes/1"}
        f.attrs.update(format="htakl-spikes/1", backend="emulator", layer_order=json.dumps(list(rec.layers)),
                       timesteps=rec.timesteps, samples=rec.samples, attrs_json=json.dumps(attrs))
        f.create_dataset("input", data=rec.input, compression="gzip")
        for k, v in rec.layers.items():
            f.create_dataset(f"layers/{k}", data=v, compression="gzip")
    graph = _graph(run_dir)
    with open_spikes(old, chunk=5) as f:
        assert count_ops(graph, f) == count_ops(graph, rec)
    assert read_spikes(old).layers.keys() == rec.layers.keys()


def test_writer_leaves_nothing_on_error(tmp_path):
    x = np.zeros((2, 3, 4))
    with pytest.raises(RuntimeError):
        with SpikeWriter(tmp_path / "s.h5", layer_shapes={"a": (4,)}, timesteps=2, attrs={"backend": "t"}) as w:
            w.append(layers={"a": np.ones((2, 3, 4))}, input=x)
            raise RuntimeError("backend crashed")
    assert not list(tmp_path.iterdir())
    with SpikeWriter(tmp_path / "s.h5", layer_shapes={"a": (4,)}, timesteps=2, attrs={"backend": "t"}) as w:
        with pytest.raises(ValueError, match="expected \\[T, B, \\(4,\\)\\]"):
            w.append(layers={"a": np.ones((2, 3, 5))}, input=x)
        with pytest.raises(ValueError, match="0/1"):
            w.append(layers={"a": np.full((2, 3, 4), 2)}, input=x)
        w.append(layers={"a": np.ones((2, 3, 4))}, input=x + 1, labels=np.arange(3))
        with pytest.raises(ValueError, match="every batch or in none"):
            w.append(layers={"a": np.ones((2, 1, 4))}, input=x[:, :1])
    with open_spikes(tmp_path / "s.h5") as f:
        assert f.samples == 3 and f.input_events() and f.layer_counts("a").tolist() == [[3] * 4] * 2


def test_bad_record_is_refused_before_anything_is_written(run_dir, tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["simulate", str(run_dir), "--backend", "emulator", "--record", "nope", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--record" in err and "nope" in err and err.count("\n") == 1, err
    assert not out.exists()
    rc = main(["simulate", str(run_dir), "--backend", "emulator", "--batch-size", "0", "--out", str(out)])
    assert rc == 2 and "--batch-size" in capsys.readouterr().err and not out.exists()


def test_torch_float_backend_runs_in_float32_and_agrees_with_float64(run_dir, tmp_path):
    """The torch-float backend computes in float32 (the student's training dtype); its spikes are
    the float64 run's but for values within float32 rounding of a threshold (none here), its
    decisions the same."""
    import torch

    from htakl_deploy.export import graph as graph_mod
    from htakl_deploy.hw.simulate import float_student_spikes

    seen = []
    real = graph_mod.run_float

    def spy(*a, **k):
        seen.append(k.get("dtype"))
        return real(*a, **k)

    graph_mod.run_float = spy
    try:
        sim = simulate(run_dir, backend="torch-float", batch_size=8, out_dir=tmp_path / "tf", compare=False)
    finally:
        graph_mod.run_float = real
    assert seen and set(seen) == {torch.float32}
    path = resolve_artefact(run_dir)
    x_tb, _ = load_samples(read_artefact(path), None, 4, None)
    s32, l32 = float_student_spikes(path, x_tb)
    s64, l64 = float_student_spikes(path, x_tb, dtype=torch.float64)
    assert s32.keys() == s64.keys() and sum(int(v.sum()) for v in s64.values()) > 0
    for k in s64:
        np.testing.assert_array_equal(s32[k], s64[k], err_msg=k)
    np.testing.assert_allclose(l32, l64, rtol=0, atol=1e-4)
    assert sim["accuracy"] == float((l64.mean(0).argmax(-1) == load_samples(read_artefact(path), None, 4, None)[1]).mean())
    assert read_spikes(tmp_path / "tf" / "spikes.h5").layers.keys() == s32.keys()
