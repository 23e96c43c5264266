"""The spike file (round trip, bad files) and `htakl-deploy energy` end to end and on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict

import h5py
import numpy as np
import pytest

from htakl_deploy.cli import main
from htakl_deploy.energy.counter import count_ops
from htakl_deploy.energy.spikefile import FORMAT, read_spikes, record_float, write_spikes
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import (
    Conv2dNode, DenseNode, FlattenNode, InputNode, LIFNode, OutputNode, PoolNode, StudentGraph, run_float,
)
from htakl_deploy.export.nir_io import from_nir, read_nir, write_nir
from htakl_deploy.export.quantize import quantize, quantize_input, run_int


def small_graph(seed=0) -> StudentGraph:
    rng = np.random.default_rng(seed)
    nodes = OrderedDict(
        input=InputNode((1, 6, 6)),
        conv1=Conv2dNode(rng.normal(size=(4, 1, 3, 3)), np.zeros(4), 1, 1),
        act1=LIFNode(2.0, 0.5),
        pool=PoolNode("avg", 2, 2),
        conv2=Conv2dNode(rng.normal(size=(4, 4, 3, 3)) * 0.7, np.zeros(4), 1, 1),
        act2=LIFNode(2.0, 0.5),
        flat=FlattenNode(),
        fc=DenseNode(rng.normal(size=(3, 36)), np.zeros(3)),
        output=OutputNode(),
    )
    edges = [("input", "conv1"), ("conv1", "act1"), ("act1", "pool"), ("pool", "conv2"), ("conv2", "act2"),
             ("pool", "act2"), ("act2", "flat"), ("flat", "fc"), ("fc", "output")]
    return StudentGraph(nodes, edges)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A quantised student run by the integer emulator, its spikes and both NIR files."""
    d = tmp_path_factory.mktemp("energy")
    g = small_graph()
    q = quantize(g)
    rng = np.random.default_rng(1)
    x = np.repeat(rng.random((1, 5, 1, 6, 6)), 4, axis=0)
    out, vals = run_int(q, x, record=True)
    layers = {n: vals[n] for n, v in g.nodes.items() if isinstance(v, LIFNode)}
    assert all(v.any() for v in layers.values())
    write_spikes(d / "spikes.h5", layers=layers, input=quantize_input(x, q.input_scale),
                 labels=np.arange(5) % 3, predictions=out.sum(0).argmax(-1),
                 attrs={"backend": "emulator", "run": "test"})
    write_nir(g, d / "student_quant.nir", quantized=q)
    write_nir(small_graph(), d / "student_float.nir")
    return d


# -- spike file ----------------------------------------------------------------------------


def test_spike_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layers = {"stage1.act": rng.random((3, 2, 2, 4, 4)) < 0.3,
              "fc.act": (rng.random((3, 2, 5)) < 0.5).astype(np.float64)}
    x = rng.random((3, 2, 1, 4, 4))
    p = write_spikes(tmp_path / "s.h5", layers=layers, input=x, labels=np.array([1, 0]), predictions=None,
                     attrs={"backend": "torch-float", "layer_order": ["fc.act", "stage1.act"], "seed": 3})
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]  # no temporary file left
    r = read_spikes(p)
    assert (r.timesteps, r.samples) == (3, 2)
    assert list(r.layers) == ["fc.act", "stage1.act"]
    for k, v in layers.items():
        assert r.layers[k].dtype == np.uint8 and np.array_equal(r.layers[k], v.astype(np.uint8))
    assert r.input.dtype == np.float32 and np.array_equal(r.input, x.astype(np.float32))
    assert r.labels.tolist() == [1, 0] and r.predictions is None
    assert r.attrs == {"backend": "torch-float", "format": FORMAT, "layer_order": ["fc.act", "stage1.act"],
                       "seed": 3, "timesteps": 3, "samples": 2}
    with h5py.File(p) as f:  # readable without our code: bits packed along the flattened neurons
        assert f.attrs["format"] == FORMAT and f["layers/stage1.act"].shape == (3, 2, 32 // 8)
        assert json.loads(f["layers/stage1.act"].attrs["packed_shape"]) == [3, 2, 2, 4, 4]
        bits = np.unpackbits(f["layers/stage1.act"][()], axis=-1).reshape(3, 2, 2, 4, 4)
        assert np.array_equal(bits, layers["stage1.act"])
        assert np.array_equal(f["counts/stage1.act"][()], layers["stage1.act"].sum(1))


def test_integer_input_is_kept_integer(tmp_path):
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.int64)
    write_spikes(tmp_path / "s.h5", layers={"a": np.zeros((2, 3, 4), np.uint8)}, input=x, labels=None,
                 predictions=None, attrs={"backend": "emulator"})
    r = read_spikes(tmp_path / "s.h5")
    assert np.issubdtype(r.input.dtype, np.integer) and np.array_equal(r.input, x)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"layers": {"a": np.zeros((2, 3, 4))}}, "expected [T=3, samples=2"),
        ({"layers": {"a": np.full((3, 2, 4), 0.5)}}, "spikes must be 0/1"),
        ({"layers": {"a/b": np.zeros((3, 2, 4))}}, "without '/'"),
        ({"labels": np.zeros(3)}, "labels must have shape [samples=2]"),
        ({"attrs": {}}, "attrs['backend']"),
        ({"attrs": {"backend": "x", "layer_order": ["b"]}}, "layer_order"),
        ({"input": np.zeros((3, 2))}, "input must be [T, samples"),
    ],
)
def test_write_spikes_checks_the_layout(tmp_path, kwargs, expected):
    args = {"layers": {"a": np.zeros((3, 2, 4))}, "input": np.zeros((3, 2, 4)), "labels": None,
            "predictions": None, "attrs": {"backend": "x"}, **kwargs}
    with pytest.raises(ValueError) as e:
        write_spikes(tmp_path / "s.h5", **args)
    assert expected in str(e.value)
    assert not list(tmp_path.iterdir())


def test_read_spikes_bad_files(tmp_path, files):
    good = (files / "spikes.h5").read_bytes()
    cases = {
        "missing.h5": None,
        "text.h5": b"not an hdf5 file\n",
        "truncated.h5": good[: len(good) // 2],
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError) as e:
            read_spikes(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and FORMAT in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a spike recording .* expected 'htakl-spikes/1'"):
        read_spikes(files / "student_float.nir")  # HDF5, but another format
    with h5py.File(tmp_path / "bad_layer.h5", "w") as f:
        f.attrs.update(format="htakl-spikes/1", attrs_json="{}", layer_order='["a"]')  # the /1 layout
        f["input"] = np.zeros((1, 1, 2))
        f["layers/a"] = np.full((1, 1, 2), 2, np.uint8)
    with pytest.raises(UserError, match="uint8 0/1 spikes"):
        read_spikes(tmp_path / "bad_layer.h5")


def test_record_float_gives_the_lif_outputs():
    g = small_graph()
    x = np.repeat(np.random.default_rng(2).random((1, 3, 1, 6, 6)), 2, axis=0)
    layers = record_float(g, x)
    _, vals = run_float(g, x, record=True)
    assert list(layers) == ["act1", "act2"]
    for k, v in layers.items():
        assert v.dtype == np.uint8 and np.array_equal(v, vals[k].numpy())


# -- CLI -----------------------------------------------------------------------------------


def test_cli_energy_on_quantised_graph(files, capsys):
    out = files / "energy.json"
    rc = main(["energy", str(files / "spikes.h5"), "--graph", str(files / "student_quant.nir"), "--json-out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert "paper-45nm" in text and "conv2" in text and "act1" in text
    assert rep["format"] == "htakl-energy/1" and rep["backend"] == "emulator"
    assert rep["energy_model"]["name"] == "paper-45nm" and "Horowitz" in rep["energy_model"]["source"]
    # the report's counts are the counter's counts on the graph read back from NIR
    direct = count_ops(small_graph(), read_spikes(files / "spikes.h5"))
    assert rep["totals"]["acs"] == direct["totals"]["acs"] and rep["totals"]["macs"] == direct["totals"]["macs"]
    # conv1, 3×3/pad 1 on 6×6: (2+3·4+2)² input-tap pairs × Cout 4, for S=5 samples × T=4 steps
    assert rep["input_encoding"] == "analog" and rep["totals"]["macs"] == 16 * 16 * 4 * 5 * 4
    t = rep["totals"]
    assert t["energy_pj"] == pytest.approx(0.9 * t["acs"] + 4.6 * t["macs"])
    assert [r["name"] for r in rep["layers"]] == ["conv1", "conv2", "act1->pool->act2", "fc"]
    assert not list(files.glob("*.tmp"))


def test_cli_energy_presets_and_model_file(files, capsys, tmp_path):
    spikes, graph = str(files / "spikes.h5"), str(files / "student_float.nir")
    assert main(["energy", spikes, "--graph", graph, "--preset", "loihi1", "--json-out", str(tmp_path / "l.json")]) == 0
    lo = json.loads((tmp_path / "l.json").read_text())
    t = lo["totals"]
    assert t["energy_pj"] == pytest.approx(23.6 * (t["acs"] + t["macs"]) + 81 * t["neuron_updates"] + 1.7 * t["spikes"])
    model = tmp_path / "m.json"
    model.write_text(json.dumps({"source": "unit test", "e_ac_pj": 1, "e_mac_pj": 0}))
    rc = main(["energy", spikes, "--graph", graph, "--energy-model", str(model), "--json-out", str(tmp_path / "m_out.json")])
    assert rc == 0
    m = json.loads((tmp_path / "m_out.json").read_text())
    assert m["totals"]["energy_pj"] == m["totals"]["acs"] and m["energy_model"]["name"] == "m"
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["{d}/none.h5", "--graph", "{d}/student_quant.nir"], "none.h5: no such spike file"),
        (["{d}/spikes.h5", "--graph", "{d}/none.nir"], "none.nir: no such NIR file"),
        (["{d}/spikes.h5", "--graph", "{d}/student_quant.nir", "--preset", "tpu"], "--preset: got 'tpu'"),
        (["{d}/spikes.h5", "--graph", "{d}/student_quant.nir", "--energy-model", "{d}/none.toml"],
         "none.toml: cannot read"),
        (["{d}/spikes.h5", "--graph", "{d}/other.nir"], "missing LIF layer(s) ['xact1', 'xact2']"),
    ],
)
def test_cli_bad_input(files, capsys, args, expected):
    if not (files / "other.nir").exists():  # a graph whose LIF nodes are not in the recording
        g = small_graph()
        nodes = OrderedDict((("x" + k if isinstance(v, LIFNode) else k), v) for k, v in g.nodes.items())
        edges = [tuple("x" + n if isinstance(g.nodes[n], LIFNode) else n for n in e) for e in g.edges]
        write_nir(StudentGraph(nodes, edges), files / "other.nir")
    rc = main(["energy", *[a.format(d=files) for a in args]])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and err.count("\n") == 1, err


def test_cli_subprocess_exit_2_without_traceback(tmp_path, files):
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "htakl_deploy", "energy", str(tmp_path / "junk.h5"), "--graph",
         str(files / "student_quant.nir")], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "junk.h5" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_neurobench_counts_on_a_sample_of_the_recording(files, capsys, tmp_path):
    """`energy --neurobench-samples N` runs the NeuroBench cross-check on N samples spread over the
    recording (here every 2nd of 5: samples 0 and 2), exactly the counts of a recording holding only
    those samples; the AC/MAC counts and the energy still use every sample. `all` = every sample,
    `--no-neurobench` none; `--json` prints the report instead of the table."""
    from htakl_deploy.energy.counter import spread
    from htakl_deploy.energy.spikefile import SpikeRecording

    spikes, graph = str(files / "spikes.h5"), str(files / "student_quant.nir")
    assert spread(5, 2) == slice(0, 3, 2) and spread(10000, 256) == slice(0, 39 * 255 + 1, 39)
    assert len(range(10000)[spread(10000, 256)]) == 256 and spread(5, 256) == slice(0, 5, 1)
    assert main(["energy", spikes, "--graph", graph, "--neurobench-samples", "2", "--json"]) == 0
    part = json.loads(capsys.readouterr().out)
    assert main(["energy", spikes, "--graph", graph, "--neurobench-samples", "all", "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert (part["samples"], part["neurobench_samples"], whole["neurobench_samples"]) == (5, 2, 5)
    assert part["totals"]["acs"] == whole["totals"]["acs"] and part["totals"]["energy_pj"] == whole["totals"]["energy_pj"]
    rec = read_spikes(spikes)
    two = SpikeRecording({k: v[:, [0, 2]] for k, v in rec.layers.items()}, rec.input[:, [0, 2]])
    direct = count_ops(from_nir(read_nir(graph)).graph, two)  # the quantised weights (some round to 0)
    for key in ("neurobench_eff_acs", "neurobench_eff_macs"):
        assert part["totals"][key] == direct["totals"][key] and part["per_sample"][key] == direct["totals"][key] / 2
    assert part["per_sample"]["neurobench_eff_macs"] != whole["per_sample"]["neurobench_eff_macs"]  # another sample
    assert main(["energy", spikes, "--graph", graph, "--neurobench-samples", "2"]) == 0
    assert "NeuroBench effective (on 2 of 5 samples):" in capsys.readouterr().out
    assert main(["energy", spikes, "--graph", graph, "--no-neurobench", "--json"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["neurobench_samples"] == 0 and off["totals"]["neurobench_eff_acs"] is None
    for bad in ("0", "-3", "some"):
        assert main(["energy", spikes, "--graph", graph, "--neurobench-samples", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "expected a positive number of samples or 'all'" in err
