"""The compact Lava artefact (``hw.artefact_format``, format ``htakl-lava-plan/2``): integers in
their smallest exact types, read back unchanged (every spike of the emulator and of Lava equal to
the plan's before saving), float weights only where a path needs them (rebuilt for Lava's
``floating_pt`` from the NIR graphs beside the artefact). Hostile files: tests/bad_inputs/cases.py."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_lava_deploy import T, residual_graph

from htakl_deploy.errors import UserError
from htakl_deploy.export.nir_io import write_nir
from htakl_deploy.export.quantize import quantize
from htakl_deploy.hw import artefact_format as fmt
from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.plan import load_plan, plan_from_quantized
from htakl_deploy.hw.simulate import float_plan, read_artefact


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A residual net (every kind of link) written as an export writes it: the two NIR graphs and
    the artefact from them; (folder, in-memory plan with floats, inputs)."""
    from htakl_deploy.export.pipeline import plan_from_nir

    folder = tmp_path_factory.mktemp("export")
    graph = residual_graph()
    q = quantize(graph)
    write_nir(graph, folder / "student_float.nir")
    write_nir(graph, folder / "student_quant.nir", quantized=q)
    plan = plan_from_nir(folder)
    plan.metadata.update({"config": None, "timesteps": T})
    plan.save(folder / "student.lava.npz")
    x = torch.rand(T, 6, 1, 6, 6, generator=torch.Generator().manual_seed(1)).double().numpy()
    return folder, plan, x


@pytest.mark.parametrize("values, dtype, shift", [
    ([-254, -2, 0, 2, 254], np.int8, 1),  # Loihi's mixed-sign 8-bit weights: even
    ([0, 1, 255], np.uint8, 0),  # excitatory: 0..255
    ([-255, -3, 0], np.int16, 0),  # inhibitory, odd: int8 cannot hold -255
    ([-256, 256], np.int8, 8),
    ([3, -4095, 4095], np.int16, 0),  # 13-bit biases
    ([2**20, -2**22], np.int8, 20),
    ([2**24 + 1, -1], np.int32, 0),
    ([2**40 + 1], np.int64, 0),
    ([0, 0], np.int8, 0),
    ([], np.int8, 0),
])
def test_integers_stored_in_the_smallest_type_and_read_back_unchanged(values, dtype, shift):
    a = np.array(values, dtype=np.int64)
    stored, s = fmt.pack_int(a)
    assert (stored.dtype, s) == (np.dtype(dtype), shift)
    back = fmt.unpack_int(stored, s)
    np.testing.assert_array_equal(back, a)
    assert back.dtype.kind == "i" and back.dtype.itemsize >= 2  # no int8 negation wraps downstream


def test_floats_stored_as_float32_only_where_exact():
    assert fmt.pack_float(np.array([0.5, -1.25, 3.0])).dtype == np.float32
    assert fmt.pack_float(np.array([0.1])).dtype == np.float64  # 0.1 is not a float32


@pytest.mark.parametrize("density, explicit_zero, layout", [(1.0, False, "dense"), (0.05, False, "csr"),
                                                            (1.0, True, "csr")])
def test_matrices_dense_or_csr_whichever_is_smaller(density, explicit_zero, layout):
    m = sp.random(40, 300, density=density, random_state=0, format="csr")
    m.data = (np.round(m.data * 127) * 2 - 128).astype(np.int64)
    m.eliminate_zeros()
    if explicit_zero:  # a stored zero: only CSR gives back the same non-zeros
        m.data[0] = 0
    members, meta, shift = fmt.pack_matrix(m, "x", True)
    assert meta["layout"] == layout
    back = fmt.unpack_matrix(members, "x", meta, shift, True)
    assert back.shape == m.shape and back.nnz == m.nnz and (back != m).nnz == 0
    if not explicit_zero:  # int8 values, uint16 indices, uint16 indptr: the smaller of the two
        assert sum(a.nbytes for a in members.values()) == min(m.shape[0] * m.shape[1], m.nnz * 3 + 41 * 2)


def test_saved_plan_keeps_every_integer_and_every_spike(exported):
    folder, plan, x = exported
    again = read_artefact(folder / "student.lava.npz")
    assert again.same_network(plan) is None  # every field and array, floats of the neurons included
    assert not again.float_weights and plan.float_weights
    for a, b in zip(plan.links, again.links):
        if a.conv is not None:
            np.testing.assert_array_equal(np.asarray(a.conv["weight"]), b.conv["weight"])
            assert b.conv["weight"].dtype == np.int16  # stored int8 >> 1, read back 2 bytes wide
        else:
            assert (a.int_matrix(()) != b.int_matrix(())).nnz == 0
    want, got = emulate(plan, x), emulate(again, x)
    for name in want.spikes:
        np.testing.assert_array_equal(want.spikes[name], got.spikes[name], err_msg=name)
    np.testing.assert_array_equal(want.readout_u, got.readout_u)
    assert sum(s.sum() for s in want.spikes.values()) > 0


def test_weights_take_one_byte_each(exported):
    folder, plan, _ = exported
    with zipfile.ZipFile(folder / "student.lava.npz") as z:
        sizes = {i.filename[:-4]: i.file_size for i in z.infolist()}
    for i, link in enumerate(plan.links):
        if link.conv is not None:
            n, stored = np.asarray(link.conv["weight"]).size, sizes[f"link{i}.weight"]
        else:  # dense (one byte an entry) or CSR where that is smaller
            n = link.matrix.shape[0] * link.matrix.shape[1]
            stored = sum(v for k, v in sizes.items() if k == f"link{i}.m" or k.startswith(f"link{i}.m."))
        assert stored <= n + 3 * 128, (link.name, stored, n)  # + the .npy headers
    assert not any(k.startswith(("link", "pop")) and ".f" in k and not k.endswith("f_bias") for k in sizes)


def test_lava_fixed_pt_on_the_read_artefact_equals_the_emulator(exported):
    from htakl_deploy.hw.lava_net import run_lava

    folder, plan, x = exported
    again = read_artefact(folder / "student.lava.npz")
    lava, emu = run_lava(again, x[:, :3], backend="fixed_pt"), emulate(plan, x[:, :3])
    for name in emu.spikes:
        np.testing.assert_array_equal(lava.spikes[name], emu.spikes[name], err_msg=name)
    np.testing.assert_array_equal(lava.readout_u, emu.readout_u)


def test_floating_pt_takes_the_float_weights_from_the_nir_beside_the_artefact(exported, tmp_path):
    from htakl_deploy.hw.lava_net import run_lava

    folder, plan, x = exported
    path = folder / "student.lava.npz"
    again = read_artefact(path)
    with pytest.raises(ValueError, match="float weights"):
        run_lava(again, x[:, :2], backend="floating_pt")
    rebuilt = float_plan(path, again)
    for a, b in zip(plan.links, rebuilt.links):
        if a.conv is not None:
            np.testing.assert_array_equal(a.conv["f_weight"], b.conv["f_weight"])
        else:
            assert (a.f_matrix != b.f_matrix).nnz == 0
    want, got = run_lava(plan, x[:, :2], backend="floating_pt"), run_lava(rebuilt, x[:, :2], backend="floating_pt")
    np.testing.assert_array_equal(want.logits, got.logits)
    # NIR graphs of another network beside the artefact: refused
    other = tmp_path / "other"
    other.mkdir()
    graph = residual_graph(seed=1)
    write_nir(graph, other / "student_float.nir")
    write_nir(graph, other / "student_quant.nir", quantized=quantize(graph))
    (other / "student.lava.npz").write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="not the network it holds"):
        float_plan(other / "student.lava.npz", again)


def test_float_weights_travel_to_the_lava_worker(exported, tmp_path):
    """The worker's channel (``save(float_weights=True)``) carries the float weights exactly."""
    _, plan, _ = exported
    back = load_plan(plan.save(tmp_path / "w.npz", float_weights=True))
    assert back.float_weights and back.same_network(plan) is None
    for a, b in zip(plan.links, back.links):
        fa = a.conv["f_weight"] if a.conv is not None else a.f_matrix.toarray()
        fb = b.conv["f_weight"] if b.conv is not None else b.f_matrix.toarray()
        np.testing.assert_array_equal(np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64))


def test_plan_from_quantized_round_trips(tmp_path):
    """A plan straight from the quantiser (int64 everywhere) reads back as the same network."""
    plan = plan_from_quantized(quantize(residual_graph(seed=2)))
    plan.metadata.update({"config": None, "timesteps": T})
    assert load_plan(plan.save(tmp_path / "p.npz")).same_network(plan) is None


def test_a_csr_matrix_beyond_65535_entries_reads_back(tmp_path):
    """Its ``indptr`` needs uint32 (PilotNet LIF's dense layers): stored and read back through the
    checked reader (``Members`` refused uint32 before)."""
    m = sp.random(300, 3000, density=0.1, random_state=0, format="csr")
    m.data = (np.round(m.data * 127) * 2 - 128).astype(np.int64)
    m.eliminate_zeros()
    members, meta, shift = fmt.pack_matrix(m, "x", True)
    assert meta["layout"] == "csr" and members["x.indptr"].dtype == np.uint32
    np.savez(tmp_path / "m.npz", **members)
    back = fmt.unpack_matrix(fmt.Members(str(tmp_path / "m.npz")), "x", meta, shift, True)
    assert (back != m).nnz == 0
