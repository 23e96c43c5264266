"""Recurrent networks (issue 26, item 1): a cycle through one neuron deploys — float run (by-hand
loop reference), timestep-aligned integers, the emulator, Lava ``fixed_pt`` (the layer's ``s_out``
back to its ``a_in``), energy and map; cycles with no neuron, or through several, are refused
naming their nodes. The snnTorch-written Braille-like network is in tests/test_wild.py."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from htakl_deploy.cli import main
from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import run_float
from htakl_deploy.export.nir_in import load_nir_graph
from htakl_deploy.export.nir_io import from_nir
from htakl_deploy.export.quantize import run_int
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import plan_from_quantized

ALPHA, BETA = 0.5, 0.25  # dt / tau_syn, dt / tau_mem at dt = 1e-4


def _cuba(n: int, r: float = 4.0, w_in: float = 2.0) -> nir.CubaLIF:
    full = lambda v: np.full(n, v)  # noqa: E731
    return nir.CubaLIF(tau_syn=full(1e-4 / ALPHA), tau_mem=full(1e-4 / BETA), r=full(r), w_in=full(w_in),
                       v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0))


def rec_graph(rec_bias: float = 0.05, **change) -> nir.NIRGraph:
    """input(4) → fc1 → lif (CubaLIF) ⟲ w_rec, lif → fc2 → out (CubaLIF) → output: Braille's shape."""
    rng = np.random.default_rng(5)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc1": nir.Affine(weight=rng.normal(0.4, 0.5, (6, 4)), bias=np.full(6, 0.05)),
        "lif": _cuba(6),
        "w_rec": nir.Affine(weight=rng.normal(0.0, 0.6, (6, 6)), bias=np.full(6, rec_bias)),
        "fc2": nir.Linear(weight=rng.normal(0.3, 0.6, (3, 6))),
        "out": _cuba(3),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "fc2"), ("fc2", "out"),
             ("out", "output")]
    nodes.update(change.pop("nodes", {}))
    return nir.NIRGraph(nodes=nodes, edges=change.pop("edges", edges), type_check=False)


def _events(t: int = 40, b: int = 6, p: float = 0.3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((t, b, 4)) < p).astype(np.float64)


def _by_hand(g: nir.NIRGraph, x: np.ndarray) -> np.ndarray:
    """The lif layer's spikes by a plain loop: at step t it sums fc1(x_t) and w_rec(its spikes of t − 1),
    zero spikes before step 0 (so the recurrent bias acts from step 0)."""
    n = g.nodes
    w1, b1, wr, br = n["fc1"].weight, n["fc1"].bias, n["w_rec"].weight, n["w_rec"].bias
    i = v = np.zeros((x.shape[1], 6))
    s = np.zeros_like(i)
    out = []
    for t in range(x.shape[0]):
        cur = x[t] @ w1.T + b1 + s @ wr.T + br
        i = (1 - ALPHA) * i + ALPHA * 2.0 * cur
        h = (1 - BETA) * v + BETA * 4.0 * i
        s = (h >= 1.0).astype(float)
        v = h * (1 - s)
        out.append(s)
    return np.stack(out)


def test_recurrent_float_run_matches_a_plain_loop():
    g = rec_graph()
    graph = from_nir(g)
    assert graph.back_edges == {("w_rec", "lif")} and graph.recurrent == ["lif"]
    x = _events()
    _, vals = run_float(graph, torch.from_numpy(x), record=True)
    want = _by_hand(g, x)
    assert 0.05 < want.mean() < 0.95
    assert np.array_equal(vals["lif"].numpy(), want)
    no_rec = _by_hand(rec_graph(rec_bias=0.0), x)  # the recurrent bias from step 0 matters
    assert not np.array_equal(no_rec, want)


def test_recurrent_layer_deploys_lava_equals_emulator(tmp_path, capsys):
    g = rec_graph()
    nir.write(tmp_path / "rec.nir", g)
    x = _events(b=5)
    np.save(tmp_path / "ev.npy", x)
    assert main(["export", "--json", str(tmp_path / "rec.nir"), "--target", "nir", "lava", "--input",
                 str(tmp_path / "ev.npy"), "--lava-check", "5"]) == 0  # raises unless Lava = emulator
    rep = json.loads(capsys.readouterr().out)
    assert rep["lava"]["lava_check"]["spike_agreement"]["all"] == 1.0
    rec = [k for k in rep["lava"]["links"] if k["src"] == k["dst"]]
    assert rec == [{"name": "w_rec", "kind": "dense", "src": "lif", "dst": "lif", "delay": 0, "weight_exp": rec[0]["weight_exp"]}]
    _, q = load_nir_graph(tmp_path / "rec.nir")
    plan = plan_from_quantized(q)
    emu = emulate(plan, x)
    _, vals = run_int(q, x, record=True)  # the timestep-aligned integers: the same spikes
    assert np.array_equal(emu.spikes["lif"], vals["lif"].astype(bool)) and emu.spikes["lif"].mean() > 0.05
    assert np.array_equal(emu.spikes["out"], vals["out"].astype(bool))
    q.connection("w_rec", "lif").weight_mant[:] = 0  # the recurrent link carries spikes that matter
    assert not np.array_equal(run_int(q, x, record=True)[1]["lif"], vals["lif"])


def test_recurrent_run_counts_energy_and_maps(tmp_path, capsys):
    nir.write(tmp_path / "rec.nir", rec_graph())
    np.save(tmp_path / "ev.npy", _events(b=4))
    assert main(["run", "--json", "--from-nir", str(tmp_path / "rec.nir"), "--input", str(tmp_path / "ev.npy"),
                 "--dt", "1e-4", "--backends", "emulator", "--lava-check", "0", "--out-dir", str(tmp_path),
                 "--run-name", "r", "--no-progress"]) == 0
    capsys.readouterr()
    run = tmp_path / "r"
    energy = json.loads((run / "energy" / "emulator.json").read_text())
    row = next(r for r in energy["layers"] if r["name"] == "w_rec")
    import h5py  # by hand: every spike of lif reaches the non-zero weights of its column of w_rec

    with h5py.File(run / "simulate" / "emulator" / "spikes.h5", "r") as f:
        counts = f["counts"]["lif"][()].sum(0)
    _, q = load_nir_graph(tmp_path / "rec.nir")
    assert row["sources"] == ["lif"] and row["acs"] == int(counts @ (q.graph.nodes["w_rec"].weight != 0).sum(0)) > 0
    assert (run / "map").is_dir()


def _ident(n, shape):
    return nir.Affine(weight=np.eye(n), bias=np.zeros(n))


BAD = {
    "no neuron": (dict(nodes={"fc3": _ident(6, 6)},
                       edges=[("input", "fc1"), ("fc1", "fc3"), ("fc3", "fc1"), ("fc1", "lif"), ("lif", "fc2"),
                              ("fc2", "out"), ("out", "output")]), "'fc1', 'fc3' form a cycle with no neuron"),
    "two neurons": (dict(nodes={"back": nir.Linear(weight=np.ones((6, 3)))},
                         edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "out"), ("out", "back"),
                                ("back", "lif"), ("out", "output")]), "through 2 neuron layers ('lif', 'out')"),
    "only cycle input": (dict(edges=[("input", "fc1"), ("fc1", "w_rec"), ("lif", "w_rec"), ("w_rec", "lif"),
                                     ("lif", "fc2"), ("fc2", "out"), ("out", "output")]),
                         "neuron 'lif' takes input only from its own cycle"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_cycles_are_refused_naming_their_nodes(case, tmp_path, capsys):
    change, words = BAD[case]
    nir.write(tmp_path / "bad.nir", rec_graph(**change))
    with pytest.raises(UserError, match=".*"):
        load_nir_graph(tmp_path / "bad.nir")
    assert main(["export", str(tmp_path / "bad.nir"), "--target", "lava"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "bad-export").exists()


def test_recurrent_layer_after_a_biased_one_is_refused_for_lava(tmp_path, capsys):
    """A recurrent layer one hop deeper, behind a layer with a bias: on Lava the bias makes the first
    layer spike before the sample arrives, and the recurrent layer's spike at its last warm-up step
    would enter its first step; refused naming it (no bias: deploys, Lava = emulator)."""
    edges = [("input", "fc1"), ("fc1", "pre"), ("pre", "fc0"), ("fc0", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
             ("lif", "fc2"), ("fc2", "out"), ("out", "output")]
    pre = {"pre": _cuba(6), "fc0": nir.Linear(weight=np.eye(6) * 1.5)}
    nir.write(tmp_path / "deep.nir", rec_graph(nodes=pre, edges=edges))
    assert main(["export", str(tmp_path / "deep.nir"), "--target", "lava"]) == 2
    assert "node 'lif': a recurrent layer 1 synapse hops from the input" in capsys.readouterr().err
    plain = {**pre, "fc1": nir.Linear(weight=rec_graph().nodes["fc1"].weight),
             "w_rec": nir.Linear(weight=rec_graph().nodes["w_rec"].weight)}
    nir.write(tmp_path / "deep0.nir", rec_graph(nodes=plain, edges=edges))
    np.save(tmp_path / "ev.npy", _events(b=3, p=0.6))
    assert main(["export", "--json", str(tmp_path / "deep0.nir"), "--target", "lava", "--input",
                 str(tmp_path / "ev.npy"), "--lava-check", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["lava"]["populations"]["lif"]["depth"] == 1


def test_calibration_streams_samples_and_gives_the_same_report(tmp_path, monkeypatch):
    """Bounded memory (issue 26, item 6): calibration runs ``graph.samples_per_batch`` samples at a time;
    one sample at a time (the budget a long input would force) gives the report of all at once, the
    recurrent layer's headroom included (its state restarts with each sample, as in Lava)."""
    import htakl_deploy.export.graph as graph_mod
    from htakl_deploy.export.calibration import calibrate, load_calibration

    nir.write(tmp_path / "rec.nir", rec_graph())
    graph, q = load_nir_graph(tmp_path / "rec.nir")
    np.save(tmp_path / "x.npy", _events(t=30, b=7, p=0.4, seed=3))
    shape = graph.shapes[graph.input_name]
    whole, _ = calibrate(graph, q, load_calibration(str(tmp_path / "x.npy"), shape, 30))
    sizes = []
    real = graph_mod.samples_per_batch
    monkeypatch.setattr(graph_mod, "samples_per_batch", lambda g, t, cap: sizes.append(real(g, t, cap, budget=1))
                        or sizes[-1])
    one, _ = calibrate(graph, q, load_calibration(str(tmp_path / "x.npy"), shape, 30))
    assert sizes == [1] and real(graph, 30, 7) == 7
    assert one == whole and whole["samples"] == 7
