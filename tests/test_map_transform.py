"""Fan-ins no core can hold, rewritten onto graded relays (``hw.map_transform``): the emulator and
Lava ``fixed_pt`` run the rewritten plans spike for spike, and their readout is the untransformed
plan's, integer for integer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from htakl_deploy.errors import UserError
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.map_transform import deployable, pool_factor, retime, with_fan_in_split, with_pool_layer
from htakl_deploy.hw.mapping import map_plan
from htakl_deploy.hw.plan import INPUT, DeploymentPlan, Link, Population
from htakl_deploy.hw.target import load_target


def lif(name, shape, vth=40, readout=False):
    c = shape[0]
    return Population(name, tuple(shape), 0, readout, 8, 4095, 0 if readout else 3000, 2**17 - 1 if readout else vth,
                      np.zeros(c, np.int64), 0, 1.0, 1.0, 1.0, np.zeros(c))


def kernel(w):
    w = np.asarray(w, np.int64)
    return {"weight": w, "f_weight": w.astype(float), "stride": (1, 1), "padding": (1, 1), "dilation": (1, 1),
            "groups": 1}


def matrix_link(name, src, dst, m, kind="dense", exp=0):
    m = sp.csr_matrix(np.asarray(m, np.int64))
    return Link(name, src, dst, kind, 0, exp, m, m.astype(float))


def pooled_plan(rng) -> DeploymentPlan:
    """input (1, 6, 6) → A: conv 3×3, 4 channels (LIF) → global pool folded into fc → readout (5)."""
    pops = {"A": lif("A", (4, 6, 6)), "out": lif("out", (5,), readout=True)}
    w_in = 2 * rng.integers(-6, 7, (4, 1, 3, 3))
    v = 2 * rng.integers(-40, 41, (5, 4))
    folded = np.repeat(v[:, :, None], 36, axis=2).reshape(5, 144)  # the same weight at every position
    links = [Link("enc", INPUT, "A", "input", 0, 0, conv=kernel(w_in)), matrix_link("fc", "A", "out", folded, exp=-1)]
    return retime(DeploymentPlan((1, 6, 6), 1.0, pops, links))


def conv_pool_plan(rng) -> DeploymentPlan:
    """input (1, 8, 8) → A (4, 8, 8) → a 2 × 2 average pool composed into a 3 × 3 conv (a 6 × 6
    stride-2 kernel whose taps repeat over 2 × 2 blocks, as plan_from_quantized composes it) → B
    (3, 4, 4) → readout (5)."""
    pops = {"A": lif("A", (4, 8, 8)), "B": lif("B", (3, 4, 4), vth=60), "out": lif("out", (5,), readout=True)}
    w3 = 2 * rng.integers(-10, 11, (3, 4, 3, 3))
    composed = {**kernel(np.repeat(np.repeat(w3, 2, axis=2), 2, axis=3)), "stride": (2, 2), "padding": (2, 2)}
    links = [Link("enc", INPUT, "A", "input", 0, 0, conv=kernel(2 * rng.integers(-6, 7, (4, 1, 3, 3)))),
             Link("ab", "A", "B", "conv", 0, 0, conv=composed),
             matrix_link("fc", "B", "out", 2 * rng.integers(-30, 31, (5, 48)))]
    return retime(DeploymentPlan((1, 8, 8), 1.0, pops, links))


def split_plan(rng) -> DeploymentPlan:
    """input (40) → A0 (LIF) → A (LIF) → B (readout 6), with a skip A0 → B delayed to meet A's hop."""
    pops = {"A0": lif("A0", (40,)), "A": lif("A", (40,)), "B": lif("B", (6,), readout=True)}
    links = [matrix_link("enc", INPUT, "A0", 2 * rng.integers(-3, 9, (40, 40)), kind="input"),
             matrix_link("aa", "A0", "A", 2 * rng.integers(-20, 30, (40, 40))),
             matrix_link("ab", "A", "B", 2 * rng.integers(-60, 61, (6, 40)), exp=-2),
             matrix_link("skip", "A0", "B", 2 * rng.integers(-20, 21, (6, 40)), kind="sparse")]
    return retime(DeploymentPlan((40,), 1.0, pops, links, {"timesteps": 6, "config": None}))


def _agree(a, b, names):
    for n in names:
        assert np.array_equal(a.spikes[n], b.spikes[n]), n
    assert np.array_equal(a.readout_u, b.readout_u)


@pytest.mark.parametrize("kind", ["pool", "convpool", "split"])
def test_rewrite_is_exact_in_the_emulator_and_in_lava(kind):
    from htakl_deploy.hw.lava_net import run_lava

    rng = np.random.default_rng(3)
    if kind == "pool":
        plan = pooled_plan(rng)
        new = with_pool_layer(plan, "fc")
        relay, x = "A.pool", rng.integers(0, 256, (6, 3, 1, 6, 6))
    elif kind == "convpool":
        plan = conv_pool_plan(rng)
        new = with_pool_layer(plan, "ab")
        relay, x = "A.pool", rng.integers(0, 256, (6, 3, 1, 8, 8))
    else:
        plan = split_plan(rng)
        new = with_fan_in_split(plan, "ab", 16)
        relay, x = "B.partial", rng.integers(0, 256, (6, 3, 40))
    assert new.populations[relay].neuron == "graded" and new.readout.depth == plan.readout.depth + 1
    before, after = emulate(plan, x, x_is_int=True), emulate(new, x, x_is_int=True)
    spiking = [n for n, p in plan.populations.items() if not p.readout]
    _agree(before, after, spiking)  # the readout's currents, integer for integer, one hop later in Lava time
    assert sum(before.spikes[n].sum() for n in spiking) > 20 and np.abs(before.readout_u).max() > 0
    payload = after.spikes[relay]
    if kind == "pool":  # each relay forwards its channel's spike count
        assert np.array_equal(payload.reshape(*payload.shape[:3]), before.spikes["A"].sum(axis=(3, 4)))
    elif kind == "convpool":  # each relay forwards a 2 × 2 block's spike count
        a = before.spikes["A"].astype(np.int64)
        assert np.array_equal(payload, a[..., ::2, ::2] + a[..., 1::2, ::2] + a[..., ::2, 1::2] + a[..., 1::2, 1::2])
    else:  # the partial sums of the three groups add up to the link's sum
        m = plan.links[2].matrices((40,))[0].toarray()
        want = np.einsum("nk,tbk->tbn", m, before.spikes["A"].astype(np.int64))
        assert np.array_equal(payload.reshape(6, 3, 3, 6).sum(axis=2), want)
    assert np.abs(payload).max() > 1  # graded, not binary
    lava = run_lava(new, x, backend="fixed_pt", x_is_int=True)
    _agree(after, lava, [n for n, p in new.populations.items() if not p.readout])


def test_retime_delays_the_skip_to_meet_the_relay():
    plan = with_fan_in_split(split_plan(np.random.default_rng(0)), "ab", 16)
    depth = {n: p.depth for n, p in plan.populations.items()}
    assert depth == {"A0": 0, "A": 1, "B.partial": 2, "B": 3}
    delays = {k.name: (k.delay, k.kind) for k in plan.links}
    assert delays["skip"] == (2, "sparse") and delays["ab"] == (0, "sparse") and delays["aa"] == (0, "dense")


def test_pool_factor_only_where_weights_repeat_over_positions():
    rng = np.random.default_rng(1)
    plan = pooled_plan(rng)
    assert pool_factor(plan.links[1], (4, 6, 6)).shape == (5, 4)
    m = plan.links[1].matrices((4, 6, 6))[0].toarray()
    m[0, 7] += 2
    assert pool_factor(matrix_link("x", "A", "out", m), (4, 6, 6)) is None


def test_deployable_chooses_the_cheaper_rewrite_and_says_why():
    """A fan-in above the input axons of a core: the map refuses the plan; ``deployable`` rewrites
    it (the pool layer where the weights factor, costed against the split) and the result fits."""
    rng = np.random.default_rng(2)
    t = replace(load_target("loihi2"), input_axons_per_core=100)
    plan = pooled_plan(rng)
    with pytest.raises(UserError, match="fit on no loihi2 core.*'out'.*144 input axons"):
        map_plan(plan, t)
    new, decisions = deployable(plan, t)
    (d,) = decisions
    assert d["population"] == "out" and d["chosen"] == "pool-layer" and "144 input axons" in d["reason"]
    assert [o["option"] for o in d["options"]] == ["pool-layer", "fan-in-split"]
    assert all(o["cores"] for o in d["options"])
    assert map_plan(new, t).cores == d["options"][0]["cores"]
    plan2 = split_plan(rng)
    new2, (d2,) = deployable(plan2, replace(load_target("loihi2"), input_axons_per_core=45))
    assert d2["chosen"] == "fan-in-split" and [o["option"] for o in d2["options"]] == ["fan-in-split"]
    assert "B.partial" in new2.populations


def test_a_rewritten_plan_saves_and_reads_back(tmp_path):
    """A plan with graded relays is an artefact like any other: written, checked, read, the same."""
    from htakl_deploy.hw.simulate import read_artefact

    rng = np.random.default_rng(4)
    new = with_fan_in_split(split_plan(rng), "ab", 16)
    path = tmp_path / "relay.lava.npz"
    new.save(path)
    back = read_artefact(path)
    assert back.populations["B.partial"].neuron == "graded"
    x = rng.integers(0, 256, (4, 2, 40))
    a, b = emulate(new, x, x_is_int=True), emulate(back, x, x_is_int=True)
    _agree(a, b, [n for n, p in new.populations.items() if not p.readout])
