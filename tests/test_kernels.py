"""``hw.kernels`` (issue 19): the emulator's fast path gives the general path's integers, spike
for spike, on random integer layers — including populations whose bounds fail, which must fall
back — and the fused neuron kernel equals ``lif_int_step`` (itself checked against Lava)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from htakl_deploy.export.quantize import quantize
from htakl_deploy.hw import kernels
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.lif_ref import lif_int_step
from htakl_deploy.hw.plan import Population, load_plan, plan_from_quantized
from test_lava_deploy import residual_graph

T = 4


def _plan(seed):
    return plan_from_quantized(quantize(residual_graph(seed)))


def _same(a, b):
    assert a.spikes.keys() == b.spikes.keys()
    for k in a.spikes:
        np.testing.assert_array_equal(a.spikes[k], b.spikes[k], err_msg=k)
    np.testing.assert_array_equal(a.readout_u, b.readout_u)


def _x(seed, n=16):
    return torch.rand(T, n, 1, 6, 6, generator=torch.Generator().manual_seed(seed)).double().numpy()


def _paths(plan, x_max=255):
    shapes = {n: p.shape for n, p in plan.populations.items()}
    return {n: kernels.population_bound(plan, n, shapes, x_max) is not None for n in plan.populations}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_equals_general_path_on_random_integer_layers(seed):
    plan = _plan(seed)
    assert all(_paths(plan).values())  # every population provably exact in float32 here
    kinds = {k.kind for k in plan.links}
    assert {"input", "dense"} <= kinds and kinds & {"conv", "sparse"}
    x = _x(seed)
    fast, slow = emulate(plan, x, fast=True), emulate(plan, x, fast=False)
    _same(fast, slow)
    rates = [s.mean() for s in fast.spikes.values()]
    assert max(rates) > 0.05 and min(rates) < 0.95  # the comparison sees real activity


def test_a_failing_bound_falls_back_and_gives_the_same_integers(tmp_path):
    plan = _plan(0)
    plan.save(tmp_path / "p.npz")
    big = load_plan(tmp_path / "p.npz")
    # shift the skip link into a4 (sum with the conv: ≥ 2^24, inexact in float32) and the readout's
    # dense link (≥ 2^25: int32 wraps in the neuron) by 2^17: the bound fails there
    for link in big.links:
        if link.dst in ("a4", big.readout.name) and link.kind != "conv":
            link.weight_exp += 17
    paths = _paths(big)
    assert not paths["a4"] and not paths[big.readout.name] and paths["a1"]
    x = _x(5)
    _same(emulate(big, x, fast=True), emulate(big, x, fast=False))
    # the shifted readout really wraps: its currents differ from the unshifted plan's × 2^17
    u_big, u = emulate(big, x).readout_u, emulate(plan, x).readout_u
    assert not np.array_equal(u_big, u * 2**17)


def test_bound_is_exact_at_the_float32_limit():
    """2^24 - 1 is the largest sum the float32 path accepts; 2^24 goes to the fallback."""

    class L:  # a minimal dense link: one output row summing n weights of 255
        def __init__(self, total):
            self.kind, self.src, self.dst, self.weight_exp, self.conv = "dense", "a", "b", 0, None
            self.__dict__["_matrix_bound"] = total

    class P:
        input_shape = (1,)

        def __init__(self, link):
            self.link = link

        def links_into(self, name):
            return [self.link]

    ok = kernels.population_bound(P(L(2**24 - 1)), "b", {"a": (1,)}, 1)
    assert ok == {"bound": 2**24 - 1, "grain": 0}
    assert kernels.population_bound(P(L(2**24)), "b", {"a": (1,)}, 1) is None


@pytest.mark.parametrize("du, dv, a_max, exp", [(4095, 2048, 2**17, 0), (1000, 300, 2**17, 0), (0, 4095, 2**16, 0),
                                                (4095, 2048, 2**16, 0), (4095, 0, 2**19, -3), (200, 2048, 2**12, 5)])
@pytest.mark.parametrize("use_numba", [True, False])
def test_fused_neuron_equals_lif_int_step(du, dv, a_max, exp, use_numba):
    rng = np.random.default_rng(du + dv)
    a = rng.integers(-a_max, a_max, (6, 40, 3, 2, 2))
    shifted = a << exp if exp >= 0 else a >> -exp
    pop = Population("p", (3, 2, 2), 0, False, 100, du, dv, 1000, rng.integers(-4000, 4000, 3), 2,
                     1.0, 0.5, 1.0, np.zeros(3))
    bias = pop.per_neuron(pop.bias_mant) << pop.bias_exp
    bound = int(np.abs(shifted).max())
    s, s_f, us = kernels.lif_fused(pop, torch.from_numpy(a.astype(np.float32)), bias, bound, want_u=True, exp=exp,
                                   use_numba=use_numba)
    u = v = np.zeros(a.shape[1:], np.int64)
    for t in range(a.shape[0]):
        want, u, v = lif_int_step(u, v, shifted[t], du=du, dv=dv, bias_v=bias, vth=pop.vth)  # every wrap
        np.testing.assert_array_equal(s[t].numpy(), want)
        np.testing.assert_array_equal(us[t].numpy(), u)
    np.testing.assert_array_equal(s_f.numpy(), s.numpy().astype(np.float32))
    assert s.any() and not s.all()
    # two links summed in the kernel, each shifted on its own (Lava: per-link shift, then the sum)
    a2 = rng.integers(-2**10, 2**10, a.shape)
    both = shifted + (a2 >> 2)
    s2, _, us2 = kernels.lif_fused(pop, torch.from_numpy(a.astype(np.float32)), bias, int(np.abs(both).max()),
                                   want_u=True, exp=exp, second=torch.from_numpy(a2.astype(np.float32)), exp2=-2,
                                   use_numba=use_numba)
    u = v = np.zeros(a.shape[1:], np.int64)
    for t in range(a.shape[0]):
        want, u, v = lif_int_step(u, v, both[t], du=du, dv=dv, bias_v=bias, vth=pop.vth)
        np.testing.assert_array_equal(s2[t].numpy(), want)
        np.testing.assert_array_equal(us2[t].numpy(), u)
    with pytest.raises(ValueError, match="2\\^25"):
        kernels.lif_fused(pop, torch.zeros(1, 1, 3, 2, 2), bias, 2**25, want_u=False)


def test_fused_neuron_over_several_chunks_of_neurons():
    """``lif_loop`` steps ``LOOP_CHUNK`` neurons at a time: a population of 105 neurons × 50 samples
    (2 full chunks and a partial one, the per-neuron bias repeating across chunk borders) gives
    ``lif_int_step``'s integers everywhere."""
    from htakl_deploy.hw.lif_ref import LOOP_CHUNK

    rng = np.random.default_rng(7)
    shape, batch = (3, 5, 7), 50
    assert 2 * LOOP_CHUNK < batch * 105 < 3 * LOOP_CHUNK and LOOP_CHUNK % 105
    a = rng.integers(-2**14, 2**14, (5, batch, *shape))
    pop = Population("p", shape, 0, False, 100, 4095, 1500, 300, rng.integers(-4000, 4000, 3), 1,
                     1.0, 0.5, 1.0, np.zeros(3))
    bias = pop.per_neuron(pop.bias_mant) << pop.bias_exp
    s, s_f, us = kernels.lif_fused(pop, torch.from_numpy(a.astype(np.float32)), bias, int(np.abs(a).max()),
                                   want_u=True)
    u = v = np.zeros(a.shape[1:], np.int64)
    for t in range(a.shape[0]):
        want, u, v = lif_int_step(u, v, a[t], du=pop.du, dv=pop.dv, bias_v=bias, vth=pop.vth)
        np.testing.assert_array_equal(s[t].numpy(), want)
        np.testing.assert_array_equal(us[t].numpy(), u)
    np.testing.assert_array_equal(s_f.numpy(), s.numpy().astype(np.float32))
    assert 0.05 < float(s.double().mean()) < 0.95


def test_samples_in_memory_sized_chunks_give_the_same_integers(monkeypatch):
    """On the CPU ``emulate`` runs ``kernels.chunk_samples`` samples at a time (each population's
    float32 current under ``TENSOR_BYTES``): with the budget cut to a few samples a chunk, the
    result equals one chunk of all 16 samples on both paths, and glibc keeps freed memory mapped."""
    plan = _plan(1)
    x = _x(1)
    largest = max(int(np.prod(p.shape)) for p in plan.populations.values())
    whole = emulate(plan, x, fast=True)  # 16 samples: one chunk under the default budget
    assert kernels.chunk_samples(plan, T, 16) == 16
    monkeypatch.setattr(kernels, "TENSOR_BYTES", 4 * T * largest * 3)  # 3 samples a chunk: 6 chunks, the last of 1
    assert kernels.chunk_samples(plan, T, 16) == 3 and kernels.chunk_samples(plan, T, 2) == 2
    _same(emulate(plan, x, fast=True), whole)
    _same(emulate(plan, x, fast=False), whole)
    monkeypatch.setattr(kernels, "TENSOR_BYTES", 1)
    assert kernels.chunk_samples(plan, T, 16) == 1  # never 0
    assert kernels.keep_freed_memory()  # glibc (Linux): the mallopt settings are in force


def test_export_integer_check_uses_float32_only_where_exact():
    """``quantize._exact`` (export's float-vs-integer check): float32 under the 2^24 bound, float64
    beyond it; both give the float64 integers."""
    from htakl_deploy.export import quantize as qz

    rng = np.random.default_rng(0)
    seen = []

    def conv(z, w):
        seen.append(z.dtype)
        return torch.nn.functional.conv2d(z, w, None, 1, 1)

    x = rng.integers(0, 2, (2, 3, 8, 6, 6))
    w = torch.from_numpy(rng.integers(-255, 256, (4, 8, 3, 3)).astype(np.float64))
    want = torch.nn.functional.conv2d(torch.from_numpy(x.reshape(6, 8, 6, 6).astype(np.float64)), w, None, 1, 1)
    np.testing.assert_array_equal(qz._exact(conv, x, w), want.numpy().astype(np.int64).reshape(2, 3, 4, 6, 6))
    big = x * 2**15  # max |x| · Σ|w| ≥ 2^24: float64
    np.testing.assert_array_equal(qz._exact(conv, big, w), (want.numpy() * 2**15).astype(np.int64).reshape(2, 3, 4, 6, 6))
    assert seen == [torch.float32, torch.float64]


@pytest.mark.parametrize("du, dv", [(4095, 0), (1000, 300), (0, 4095)])
def test_one_update_rule_compiled_and_as_arrays_give_the_same_integers(du, dv):
    """``lif_update`` is the one definition of the neuron step: compiled by numba over the neurons
    (``lif_int_step`` on CPU arrays), as numpy and as torch array operations (CUDA, no numba),
    the integers agree — with every wrap triggering (inputs up to 2^27, biases up to 2^31: the
    results with the wraps differ from those without)."""
    from htakl_deploy.hw.lif_ref import lif_update

    rng = np.random.default_rng(du)
    shape = (3, 50, 7)
    u = rng.integers(-2**23, 2**23, shape)
    v = rng.integers(-2**23, 2**23, shape)
    bias = rng.integers(-2**31, 2**31, shape[1:])
    for _ in range(4):
        a = rng.integers(-2**27, 2**27, shape) * rng.integers(0, 2, shape)
        outs = {}
        for i32, uw in ((True, True), (False, True), (False, False)):
            want = lif_update(u, v, a, du, dv, bias, 40, i32, uw)  # numpy arrays
            got = lif_int_step(u, v, a, du=du, dv=dv, bias_v=bias, vth=40, i32_wraps=i32, u_wraps=uw)  # numba
            tt = lif_update(torch.from_numpy(u), torch.from_numpy(v), torch.from_numpy(a), du, dv,
                            torch.from_numpy(bias), 40, i32, uw)  # torch
            for w, g, h in zip(want, got, tt):
                np.testing.assert_array_equal(g, w)
                np.testing.assert_array_equal(h.numpy(), w)
            outs[i32, uw] = want
        assert not np.array_equal(outs[True, True][2], outs[False, True][2])  # the int32 wraps triggered
        assert not np.array_equal(outs[False, True][1], outs[False, False][1])  # the 24-bit wrap of u too
        s, u, v = outs[True, True]
        assert s.any() and not s.all()
