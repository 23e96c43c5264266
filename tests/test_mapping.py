"""Hardware mapping (``htakl-deploy map``): targets as data, the partition, the lower bounds, the
routed spikes, the CLI. Small networks are built by hand so every number can be counted by hand."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import tiny_digits_run
from htakl_deploy.energy.spikefile import SpikeRecording
from htakl_deploy.errors import UserError
from htakl_deploy.hw.mapping import ConvGeom, MatrixGeom, Tiling, entry_bits, estimate, lower_bounds, map_plan, summary
from htakl_deploy.hw.plan import INPUT, DeploymentPlan, Link, Population
from htakl_deploy.hw.target import NUMBER_KEYS, load_target, target_from_dict

BIG = 10**9


def pop(name, shape, depth, readout=False):
    c = shape[0]
    return Population(name, shape, depth, readout, 1, 0, 0, 1, np.zeros(c, np.int64), 0, 1.0, 1.0, 1.0, np.zeros(c))


def dense_link(name, src, dst, n_dst, n_src, pattern=None, kind="dense"):
    m = sp.csr_matrix(np.ones((n_dst, n_src), np.int64) if pattern is None else pattern.astype(np.int64))
    return Link(name, src, dst, kind, 0, 0, m, m.astype(np.float64))


def input_link(dst, n):
    """An off-chip encoding link from a (1, 1, n) input to a flat population of n neurons."""
    w = np.ones((n, 1, 1, n), np.int64)
    spec = {"weight": w, "f_weight": w.astype(float), "stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
            "groups": 1}
    return Link("enc", INPUT, dst, "input", 0, 0, conv=spec)


def flat_plan(n_a: int, n_b: int, n_out: int, b_to_out=None) -> DeploymentPlan:
    """input → A (n_a, off-chip encoding) → B (n_b, dense) → out (n_out, readout; dense or a pattern)."""
    pops = {"A": pop("A", (n_a,), 0), "B": pop("B", (n_b,), 1), "out": pop("out", (n_out,), 2, readout=True)}
    links = [input_link("A", n_a), dense_link("ab", "A", "B", n_b, n_a),
             dense_link("bo", "B", "out", n_out, n_b, b_to_out, "dense" if b_to_out is None else "sparse")]
    return DeploymentPlan((1, 1, n_a), 1.0, pops, links)


def target(**changes):
    """Loihi 1's encoding with every limit lifted except what a test sets."""
    base = load_target("loihi1")
    lifted = dict(neurons_per_core=BIG, synapse_memory_bits_per_core=BIG, input_axons_per_core=BIG,
                  output_axons_per_core=BIG)
    return replace(base, **{**lifted, **changes})


# -- targets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_shipped_targets_have_a_source_for_every_number(name):
    t = load_target(name)
    assert set(t.sources) == set(NUMBER_KEYS)
    assert all(len(s) > 10 for s in t.sources.values())
    assert all("not published" in t.sources[k] for k in t.unpublished)
    assert t.cores_per_chip == 128


def test_target_validation_refuses_bad_files(tmp_path):
    good = load_target("loihi1").to_dict()
    for bad, msg in [({"neurons_per_core": -1}, "neurons_per_core"), ({"e_synop_pj": float("inf")}, "e_synop_pj"),
                     ({"weight_bits": 2.5}, "weight_bits"), ({"frobs": 3}, "unknown key"),
                     ({"sources": {k: "x" for k in NUMBER_KEYS if k != "t_synop_ns"}}, "t_synop_ns")]:
        with pytest.raises(ValueError, match=msg):
            target_from_dict({**good, **bad}, default_name="x")
    with pytest.raises(UserError, match="expected one of loihi1, loihi2"):
        load_target("loihi3")
    f = tmp_path / "chip.toml"
    f.write_text("neurons_per_core = 3\n")
    with pytest.raises(UserError, match="missing key"):
        load_target(f)
    t = load_target("loihi2").with_overrides(["input_axons_per_core=8192"])
    assert t.input_axons_per_core == 8192 and "input_axons_per_core" not in t.unpublished
    assert t.sources["input_axons_per_core"].startswith("user-set")
    for bad in ["frob=1", "neurons_per_core=x", "neurons_per_core=0"]:
        with pytest.raises(UserError, match="--set"):
            load_target("loihi2").with_overrides([bad])


# -- memory encoding and the partition ------------------------------------------------------


def test_entry_bits_by_hand():
    t = load_target("loihi1")  # 64-bit words, 64 synapses per entry, 10-bit header
    assert entry_bits(0, 18, t) == 0
    assert entry_bits(1, 18, t) == 64  # 18 + 10 = 28 → one word
    assert entry_bits(3, 18, t) == 64  # 54 + 10 = 64: exactly one word
    assert entry_bits(4, 18, t) == 128  # 72 + 10 = 82 → two words
    assert entry_bits(64, 8, t) == 64 * math.ceil((64 * 8 + 10) / 64)
    assert entry_bits(65, 8, t) == 64 * math.ceil((64 * 8 + 10) / 64) + 64


def test_neuron_limit_just_under_and_over():
    plan = flat_plan(6, 40, 3)
    m = map_plan(plan, target(neurons_per_core=40))
    assert m.layers["B"].cores == 1
    m = map_plan(plan, target(neurons_per_core=39))
    assert m.layers["B"].cores == 2 and m.layers["B"].tiling.channels == 39 - 19  # 40 → 20 + 20
    assert summary(m)["layers"][1]["binding_limit"] == "neurons"


def test_memory_limit_just_under_and_over():
    # B (10 neurons) on one core: each of A's 30 axons stores 10 weights densely (no index):
    # 10·8 + 10 = 90 bits → 2 words = 128 bits (sparse would be 10·(8+6) + 10 = 150 → 192)
    plan = flat_plan(30, 10, 2)
    need = 30 * 128
    m = map_plan(plan, target(synapse_memory_bits_per_core=need))
    assert m.layers["B"].cores == 1 and m.layers["B"].stats["bits"].tolist() == [need]
    m = map_plan(plan, target(synapse_memory_bits_per_core=need - 1))
    # two cores of 5: 5·8 + 10 = 50 → one word per axon
    assert m.layers["B"].cores == 2 and m.layers["B"].stats["bits"].tolist() == [30 * 64, 30 * 64]
    assert summary(m)["layers"][1]["binding_limit"] == "synapse_memory"


def test_impossible_layer_refused_by_name():
    plan = flat_plan(30, 10, 2)
    with pytest.raises(UserError, match=r"1 layer\(s\) fit on no loihi1 core .*: layer 'B': a single neuron "
                                        r"needs 30 input axons per core \(fan-in\) \(limit 29\)$"):
        map_plan(plan, target(input_axons_per_core=29))
    # every layer that cannot fit is named at once, with every limit it breaks
    bits = 30 * 64  # one neuron: 30 axons of one synapse, one 64-bit word each
    with pytest.raises(UserError, match=rf"2 layer\(s\) .*layer 'B': a single neuron needs {bits} synapse memory "
                                        rf"bits per core \(limit {bits - 1}\) and 30 input axons per core "
                                        r"\(fan-in\) \(limit 2\); layer 'out': .* 10 input axons"):
        map_plan(plan, target(input_axons_per_core=2, synapse_memory_bits_per_core=bits - 1))
    # two output axons per core: B (one axon per neuron, to the readout's core) is cut into 5 cores of 2,
    # so every A neuron needs an axon to each of B's 5 cores
    with pytest.raises(UserError, match=r"layer 'A' fits on no loihi1 core: a single neuron needs 5 output axons"
                                        r" per core \(fan-out\) \(limit 2\)"):
        map_plan(plan, target(output_axons_per_core=2))


def conv_spec(cout, cin, k, pad, groups=1):
    w = np.full((cout, cin // groups, k, k), 2, np.int64)
    return {"weight": w, "f_weight": w.astype(float), "stride": (1, 1), "padding": (pad, pad), "dilation": (1, 1),
            "groups": groups}


def test_residual_join_counted_by_hand():
    """C = conv(B) + identity skip from A (delayed one step): both links' synapses on C's core."""
    pops = {"A": pop("A", (2, 4, 4), 0), "B": pop("B", (2, 4, 4), 1), "C": pop("C", (2, 4, 4), 2),
            "out": pop("out", (3,), 3, readout=True)}
    enc = {**conv_spec(2, 1, 1, 0)}
    links = [Link("enc", INPUT, "A", "input", 0, 0, conv=enc),
             Link("ab", "A", "B", "conv", 0, 0, conv=conv_spec(2, 2, 3, 1)),
             Link("bc", "B", "C", "conv", 0, 0, conv=conv_spec(2, 2, 3, 1)),
             Link("skip", "A", "C", "sparse", 1, 0, conv=conv_spec(2, 2, 1, 0, groups=2)),
             dense_link("co", "C", "out", 3, 32)]
    plan = DeploymentPlan((1, 4, 4), 1.0, pops, links)
    m = map_plan(plan, target())
    c = m.layers["C"]
    assert c.cores == 1 and [g.name for g in c.links] == ["bc", "skip"]
    # skip: 32 axons × 1 synapse of 8 weight + 1 delay + 6 index bits: 15 + 10 → one 64-bit word
    # (dense would be 32 × 9 + 10 → 320 bits); bc: per input channel, 4 corner axons reach 4 positions
    # × 2 channels (8·14 + 10 = 122 → 128 bits), 8 edge axons 12 (178 → 192), 4 inner ones 18
    # (262 → 320; dense 32·8 + 10 = 266 → 320)
    assert c.stats["bits"].tolist() == [32 * 64 + 2 * (4 * 128 + 8 * 192 + 4 * 320)]
    assert c.stats["input_axons"].tolist() == [32 + 32]
    assert c.synapses == 32 + 2 * 2 * (4 * 4 + 8 * 6 + 4 * 9) and c.fan_in_max == 2 * 9 + 1
    # out-axons of A: each neuron feeds B's core and C's core
    assert m.layers["A"].stats["output_axons"].tolist() == [64]


def test_greedy_against_lower_bounds():
    plan = flat_plan(64, 256, 10)
    t = target(neurons_per_core=64, synapse_memory_bits_per_core=64 * 64 * 9)
    m = map_plan(plan, t)
    lb = lower_bounds(m)
    # neurons: A 64 → 1 core, B 256 → 4 cores, out 1 core; memory: B's 64 axons × 64 dense weights per core
    # = 64 · ceil((64·8 + 10)/64)·64 = 64·9·64 bits: exactly one core's worth, so B needs 4 cores both ways
    assert [lm.cores for lm in m.layers.values()] == [1, 4, 1]
    assert lb["lower_bound_cores_layerwise"] == 6 == m.cores
    assert lb["lower_bound_cores"] == math.ceil((64 + 256 + 10) / 64)
    assert m.cores >= lb["lower_bound_cores"]


def test_conv_fast_path_equals_the_matrix_path():
    """The separable conv evaluation against the same link as an explicit sparse matrix (every
    synapse stored: Loihi 1; Loihi 2's shared kernels are tests/test_loihi2_calibration.py's)."""
    from htakl_deploy.hw.plan import conv_matrix

    rng = np.random.default_rng(0)
    t = load_target("loihi1")
    for (cin, cout, h, k, s, p, groups) in [(3, 5, 7, 3, 1, 1, 1), (4, 6, 8, 3, 2, 1, 2), (4, 4, 6, 1, 1, 0, 4)]:
        w = rng.integers(1, 5, (cout, cin // groups, k, k)) * rng.choice([-2, 2], (cout, cin // groups, k, k))
        spec = {"weight": w, "f_weight": w.astype(float), "stride": (s, s), "padding": (p, p), "dilation": (1, 1),
                "groups": groups}
        ho = (h + 2 * p - k) // s + 1
        conv = ConvGeom(Link("c", "a", "b", "sparse", 1, 0, conv=spec), (cin, h, h), (cout, ho, ho), t)
        m = conv_matrix(w, (cin, h, h), (s, s), (p, p), (1, 1), groups).astype(np.int64)
        mat = MatrixGeom(Link("c", "a", "b", "sparse", 1, 0, m, m.astype(float)), (cin, h, h), (cout, ho, ho), t)
        for til in [Tiling((cout, ho, ho), 1, 1, 1), Tiling((cout, ho, ho), 2, 3, 2), Tiling((cout, ho, ho), cout, ho, ho)]:
            a, b = conv.tile_stats(til), mat.tile_stats(til)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} {til}")
            assert (conv.counts(til) != mat.counts(til)).nnz == 0
            np.testing.assert_array_equal(conv.tiles_per_source(til), mat.tiles_per_source(til))
        np.testing.assert_array_equal(conv.fan_out(), mat.fan_out())
        assert conv.fan_in_max() == mat.fan_in_max() and conv.synapses() == mat.synapses()


# -- routed spikes, by hand ----------------------------------------------------------------


def test_hand_network_partition_and_routed_spikes():
    # A (4) → B (4) dense; B → out (2) sparse: out0 ← B0, B1; out1 ← B1, B3 (B2 reaches nothing)
    pattern = np.array([[1, 1, 0, 0], [0, 1, 0, 1]])
    plan = flat_plan(4, 4, 2, pattern)
    t = replace(target(neurons_per_core=2), cores_per_tile=1, mesh_tiles_x=2)
    m = map_plan(plan, t)
    # partition: A = cores 0, 1 (neurons 0-1, 2-3), B = cores 2, 3, out = core 4
    assert [(lm.first_core, lm.cores, lm.tiling.channels) for lm in m.layers.values()] == [(0, 2, 2), (2, 2, 2), (4, 1, 2)]
    # mesh (x, y), two tiles wide: 0 (0,0), 1 (1,0), 2 (0,1), 3 (1,1), 4 (0,2)
    assert m.core_xy().tolist() == [[0, 0], [1, 0], [0, 1], [1, 1], [0, 2]]
    a = np.zeros((2, 1, 4), np.uint8)
    b = np.zeros((2, 1, 4), np.uint8)
    a[0, 0, [0, 3]] = 1  # step 1: A0 (core 0) and A3 (core 1) spike
    b[1, 0, [1, 2]] = 1  # step 2: B1 (core 2) and B2 (core 3) spike
    rec = SpikeRecording({"A": a, "B": b}, np.zeros((2, 1, 1, 1, 4), np.float32), attrs={"backend": "hand"})
    est = estimate(m, rec)
    s1, s2 = est["per_timestep"]
    # step 1: 2 spikes × 4 synapses; each spike goes to B's 2 cores: A0→2 (1 hop), A0→3 (2), A3→2 (2), A3→3 (1)
    assert (s1["synops"], s1["messages"], s1["hops"], s1["max_hops"]) == (8, 4, 6, 2)
    # step 2: B1 has 2 synapses on core 4 (1 hop from core 2); B2 has none: no message
    assert (s2["synops"], s2["messages"], s2["hops"], s2["max_hops"]) == (2, 1, 1, 1)
    e = est["per_inference"]["energy"]
    assert e["synaptic_pj"] == pytest.approx(10 * t.e_synop_pj)
    assert e["neuron_pj"] == pytest.approx(10 * 2 * t.e_neuron_update_pj)  # 10 neurons × 2 steps
    assert e["routing_pj"] == pytest.approx(5 * t.e_spike_within_tile_pj + 7 * t.e_tile_hop_pj)
    # latency of step 1: the busiest core is a B core (4 synops, 2 neurons), 2 hops, the barrier
    assert s1["latency_ns"] == pytest.approx(4 * t.t_synop_ns + 2 * t.t_neuron_update_ns + t.t_spike_within_tile_ns
                                             + 2 * t.t_tile_hop_ns + t.t_barrier_ns)



def test_estimate_reads_a_counts_only_spike_file(tmp_path):
    """A file streamed with record="counts" (no per-sample spikes) gives the same estimate."""
    from htakl_deploy.energy.spikefile import SpikeWriter, open_spikes

    plan = flat_plan(4, 4, 2, np.array([[1, 1, 0, 0], [0, 1, 0, 1]]))
    m = map_plan(plan, replace(target(neurons_per_core=2), cores_per_tile=1, mesh_tiles_x=2))
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, (3, 5, 4), dtype=np.uint8), rng.integers(0, 2, (3, 5, 4), dtype=np.uint8)
    x = np.zeros((3, 5, 1, 1, 4), np.float32)
    ests = []
    for record in ("spikes", "counts"):
        path = tmp_path / f"{record}.h5"
        with SpikeWriter(path, layer_shapes={"A": (4,), "B": (4,)}, timesteps=3, attrs={"backend": "hand"},
                         record=record) as w:
            w.append(layers={"A": a, "B": b}, input=x)
        with open_spikes(path) as f:
            ests.append(estimate(m, f))
    ref = estimate(m, SpikeRecording({"A": a, "B": b}, x, attrs={"backend": "hand"}))
    assert ests[0] == ests[1] == ref
    assert ref["per_timestep"][0]["synops"] == pytest.approx(a[0].sum() * 4 / 5 + (b[0] @ [1, 2, 0, 1]) .sum() / 5)


# -- a real run end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from htakl_deploy.export.pipeline import run_export
    from htakl_deploy.hw.simulate import simulate

    r = tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=256, limit_test=16, epochs=2,
                        teacher_epochs=1)
    run_export(r, ["nir", "lava"], lava_check=0, evaluate=False)
    simulate(r, backend="emulator", compare=False)
    return r


def test_routed_synops_equal_the_energy_counters_acs(run_dir):
    from htakl_deploy.energy.counter import count_ops
    from htakl_deploy.energy.spikefile import read_spikes
    from htakl_deploy.export.nir_io import from_nir, read_nir
    from htakl_deploy.hw.simulate import read_artefact

    rec = read_spikes(run_dir / "simulate/emulator/spikes.h5")
    plan = read_artefact(run_dir / "export/student.lava.npz")
    # Loihi 1's model (a synaptic op per stored synapse reached) on tiles that end at the layer's edge
    m = map_plan(plan, load_target("loihi1"), "fewest")
    est = estimate(m, rec)
    q = from_nir(read_nir(run_dir / "export/student_quant.nir"))
    graph = getattr(q, "graph", q)
    ops = count_ops(graph, rec, neurobench=False)
    spike_rows = [r for r in ops["layers"] if r["input"] == "spikes"]
    for t in range(rec.timesteps):
        assert est["per_timestep"][t]["synops"] * rec.samples == sum(r["acs_per_timestep"][t] for r in spike_rows)
    assert m.input_synapses * rec.timesteps * rec.samples == ops["totals"]["macs"]
    # Loihi 2 (calibrated on Intel's activity profile): each link's ops times its non-zero weight
    # fraction, and ops to the neurons a compiler tile allocates past the layer's edge
    m2 = map_plan(plan, load_target("loihi2"), "fewest")
    est2 = estimate(m2, rec)
    frac = {g.name: g.nonzero_fraction() for lm in m2.layers.values() for g in lm.links if hasattr(g, "synops")}
    assert 0 < min(frac.values()) and any(f < 1 for f in frac.values())
    want = sum(link["synops"] * frac[link["link"]] for link in est["links"])
    assert est2["per_inference"]["synops"] == pytest.approx(want, rel=1e-12)


def test_map_cli_end_to_end(run_dir, capsys, tmp_path):
    from htakl_deploy.cli import main
    from htakl_deploy.energy.document import write_report

    assert main(["map", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "binding limit" in out and "energy per inference on loihi2" in out
    data = json.loads((run_dir / "map/loihi2.json").read_text())
    assert data["format"] == "htakl-map/1" and data["totals"]["cores"] == sum(r["cores"] for r in data["layers"])
    assert data["totals"]["cores"] >= data["totals"]["lower_bound_cores_layerwise"]
    assert data["estimate"]["timesteps"] == 4 and data["estimate"]["samples"] == 16
    # a what-if writes beside the run's own mapping, never over it
    own = (run_dir / "map/loihi2.json").read_bytes()
    assert main(["map", str(run_dir), "--set", "e_synop_pj=10", "--strategy", "packed"]) == 0
    what_if = run_dir / "map/what-if/loihi2-packed-e_synop_pj=10.json"
    assert f"wrote {what_if}" in capsys.readouterr().out
    assert (run_dir / "map/loihi2.json").read_bytes() == own
    changed = json.loads(what_if.read_text())
    assert changed["target"]["e_synop_pj"] == 10 and changed["totals"]["strategy"] == "packed"
    assert data["target"]["e_synop_pj"] != 10
    assert main(["map", str(run_dir / "export"), "--target", "loihi1", "--no-spikes",
                 "--json-out", str(tmp_path / "l1.json")]) == 0
    assert "estimate" not in json.loads((tmp_path / "l1.json").read_text())
    assert not (run_dir / "map/loihi1.json").exists()
    assert main(["map", str(run_dir), "--set", "input_axons_per_core=10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("htakl-deploy: error: ") and "input axons" in err and "Traceback" not in err
    assert main(["map", str(tmp_path / "nowhere")]) == 2
    # `run`'s mapping stage records a network that fits nowhere instead of failing the run
    from htakl_deploy.hw.mapping import map_run_dir

    small = tmp_path / "tiny_chip.toml"
    small.write_text((Path(__file__).parents[1] / "hw/targets/loihi1.toml").read_text()
                     .replace("input_axons_per_core = 4096", "input_axons_per_core = 10")
                     .replace('name = "loihi1"', 'name = "tiny_chip"'))
    assert map_run_dir(run_dir, str(small)).startswith("does not fit: ")
    assert "input axons" in json.loads((run_dir / "map/tiny_chip.json").read_text())["error"]
    report = write_report(run_dir)
    assert "loihi2" in report["mapping"] and "**Does not fit on tiny_chip**" in (run_dir / "report.md").read_text()
    md = (run_dir / "report.md").read_text()
    assert "## Hardware mapping" in md and "binding limit" in md
    assert "the run's own mapping (map/loihi2.json)" in md
    assert "Not shown: 1 what-if mapping(s) in map/what-if/" in md and what_if.name in md
    assert 'id="fig-hardware_mapping"' in (run_dir / "report.html").read_text()


def test_map_a_graph_imported_from_nir(tmp_path, capsys):
    """A hand-written NIR graph (not ours) → `export` → `map`: the same plan, counted by hand."""
    import nir

    from htakl_deploy.cli import main

    rng = np.random.default_rng(0)
    lif = {k: np.full((4, 8, 8), v) for k, v in (("tau", 2e-4), ("r", 1.0), ("v_leak", 0.0), ("v_threshold", 1.0),
                                                  ("v_reset", 0.0))}
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "conv": nir.Conv2d(input_shape=np.array([8, 8]), weight=rng.normal(0, 0.5, (4, 1, 3, 3)),
                           stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]),
                           groups=1, bias=np.full(4, 0.2)),
        "lif": nir.LIF(**lif),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.3, (10, 64)), bias=np.zeros(10)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "output")]
    path = tmp_path / "hand.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert main(["export", str(path), "--target", "lava", "--lava-check", "0"]) == 0
    out = tmp_path / "m.json"
    assert main(["map", str(tmp_path / "hand-export"), "--no-spikes", "--json-out", str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    lif_row, fc_row = data["layers"]
    # the LIF layer (256 neurons, fed off-chip) and the readout (10) fit one Loihi 2 core each; each of
    # the readout's 256 input axons (the pool folded into fc) stores its 10 weights at the layer's netx
    # precision (8 bits) with a 12-bit index, and a 4-bit header: 10·20 + 4 = 204 → four 64-bit words
    assert (lif_row["cores"], fc_row["cores"], data["totals"]["chips"]) == (1, 1, 1)
    assert fc_row["weight_bits"] == [8]
    assert fc_row["synapse_bits_per_core_max"] == 256 * 4 * 64 and fc_row["fan_in_max"] == 256
    assert lif_row["output_axons_per_core_max"] == 256
    # the encoding conv (off-chip): per axis 8 outputs × 3 taps − 2 padding taps = 22; 22² × 4 channels
    assert data["totals"]["encoding_synapses_off_chip"] == 22 * 22 * 4


def test_map_prints_a_summary_not_one_line_per_step():
    """A 300-step recording: the text gives the per-step spread in one line (every step stays in
    the JSON), not 300 entries."""
    from htakl_deploy.hw.mapping_report import format_text

    plan = flat_plan(4, 4, 2)
    m = map_plan(plan, target(neurons_per_core=2))
    rng = np.random.default_rng(0)
    rec = SpikeRecording({"A": rng.integers(0, 2, (300, 3, 4), dtype=np.uint8),
                          "B": rng.integers(0, 2, (300, 3, 4), dtype=np.uint8)},
                         np.zeros((300, 3, 1, 1, 4), np.float32), attrs={"backend": "hand"})
    data = summary(m)
    data["estimate"] = estimate(m, rec)
    text = format_text(data)
    assert len(data["estimate"]["per_timestep"]) == 300
    assert len(text.splitlines()) < 20 and "t=300" not in text and "t=2:" not in text
    assert "per time step (300 steps" in text
    lat = [s["latency_ns"] for s in data["estimate"]["per_timestep"]]
    assert f"{min(lat) / 1e3:.2f} – {max(lat) / 1e3:.2f} µs" in text


def test_error_bars_from_the_calibration_by_hand():
    """The range a target's [calibration] leaves: the central estimate and the two single-operation
    attributions of the measured run (all synaptic ops, all neuron updates), each refitted to it."""
    cal = {"source": "hand", "steps_per_frame": 2, "step_ns": 1000.0, "dynamic_pj_per_step": 500.0,
           "static_w_low": 0.1, "static_w_high": 0.2, "synops_per_step": 10.0, "neuron_updates_per_step": 20.0,
           "busiest_core_synops": 5.0, "busiest_core_neurons": 4.0}
    t = replace(target(neurons_per_core=2), cores_per_tile=1, mesh_tiles_x=2, calibration=cal)
    plan = flat_plan(4, 4, 2, np.array([[1, 1, 0, 0], [0, 1, 0, 1]]))
    m = map_plan(plan, t)
    a, b = np.zeros((2, 1, 4), np.uint8), np.zeros((2, 1, 4), np.uint8)
    a[0, 0, [0, 3]] = 1
    b[1, 0, [1, 2]] = 1
    est = estimate(m, SpikeRecording({"A": a, "B": b}, np.zeros((2, 1, 1, 1, 4), np.float32), attrs={}))
    pi = est["per_inference"]
    r = pi["ranges"]
    # 10 synaptic ops and 10 neurons × 2 steps: all-synops 500/10 pJ each → 500; all-updates 500/20 → 500
    dyn = [pi["energy"]["dynamic_pj"], 500.0 * 10 / 10, 500.0 * 20 / 20]
    assert r["dynamic_pj"] == [min(dyn), max(dyn)]
    # per step: busiest core's synops (4, then 2) × 1000/5 ns; its neurons (2) × 1000/4 ns
    steps = [pi["step_latency_ns_mean"], (4 * 200 + 2 * 200) / 2, 2 * 250.0]
    assert r["step_latency_ns"] == pytest.approx([min(steps), max(steps)])
    chips = m.chips
    assert r["static_pj"] == pytest.approx([0.1 * chips * min(steps) * 2 * 1e3, 0.2 * chips * max(steps) * 2 * 1e3])
    assert r["total_pj"] == pytest.approx([r["dynamic_pj"][0] + r["static_pj"][0], r["dynamic_pj"][1] + r["static_pj"][1]])
    assert "ranges" not in estimate(replace(m, target=replace(t, calibration={})), SpikeRecording(
        {"A": a, "B": b}, np.zeros((2, 1, 1, 1, 4), np.float32), attrs={}))["per_inference"]
