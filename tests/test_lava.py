"""lava-nc on Python 3.11 (hw/lava_compat.py) and the bit-exact fixed_pt twin (hw/lif_ref.py).

lava-nc is a required test dependency (installed by the Makefile): if it is missing these
tests fail with the install command instead of skipping.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htakl_deploy.errors import UserError
from htakl_deploy.hw import lava_compat
from htakl_deploy.hw.lif_ref import READOUT_VTH, dense_lif_fixed_pt, effective_weights

N_IN, N_OUT, N_STEPS = 16, 8, 20


@pytest.fixture
def lava():
    try:
        lava_compat.ensure_lava()
    except UserError as e:
        pytest.fail(str(e))


def test_ensure_lava_is_idempotent_and_fixes_var_model(lava):
    lava_compat.ensure_lava()
    lava_compat.ensure_lava()
    assert sum(getattr(f, "htakl_lava_compat", False) for f in sys.meta_path) == 1

    import lava.magma.compiler.var_model as vm

    for cls in (vm.CoreEncoder, vm.ChipEncoder, vm.AxonEncoder):
        for f in dataclasses.fields(cls):
            assert f.default_factory is vm.ByteEncoder, (cls.__name__, f.name)
    assert vm.CoreEncoder().x is not vm.CoreEncoder().x  # a factory, not a shared instance
    # Nothing on disk was changed: the installed file still has the 0.10.0 text.
    assert Path(vm.__file__).read_text().count("ByteEncoder = ByteEncoder()") == 8


def test_patch_fails_loudly_if_lava_changed(lava):
    import lava.magma.compiler.var_model as vm

    source = Path(vm.__file__).read_text()
    patched = lava_compat.patch_var_model_source(source)
    assert patched.count("\n") == source.count("\n")  # tracebacks keep their line numbers
    changed = source.replace("ByteEncoder = ByteEncoder()", "ByteEncoder = None", 1)
    with pytest.raises(ImportError, match=r"lava-nc 0\.10\.0.*expected 8"):
        lava_compat.patch_var_model_source(changed)


def test_missing_lava_is_a_user_error_with_install_hint(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lava_compat.importlib.metadata, "version", not_installed)
    with pytest.raises(UserError, match="pip install --no-deps --ignore-requires-python lava-nc"):
        lava_compat.ensure_lava()


def test_effective_weights_sign_modes():
    mixed = np.array([[-300, -3, 3, 300]])
    assert effective_weights(mixed).tolist() == [[-256, -4, 2, 254]]
    assert effective_weights(np.array([[0, 3, 300]])).tolist() == [[0, 3, 255]]
    assert effective_weights(np.array([[0, -3, -300]])).tolist() == [[0, -3, -255]]


def test_reference_by_hand():
    # One input spiking at step 0, weight 10: a_in = 10 arrives at step 1 (Dense delay).
    spikes, u, v = dense_lif_fixed_pt(
        np.array([[1], [0], [0]]), np.array([[10]]), weight_exp=0,
        du=4095, dv=0, bias_mant=0, bias_exp=0, vth=9,
    )
    assert u.tolist() == [[0], [640], [0]]
    assert spikes[:, 0].tolist() == [False, True, False]  # 640 > 9 << 6 = 576
    assert v.tolist() == [[0], [0], [0]]
    # Truncation toward zero: u = -1000 decays by (du+1)/4096 = 1/2 to -500, then -250.
    _, u, _ = dense_lif_fixed_pt(
        np.array([[1], [0], [0]]), np.array([[-15]]), weight_exp=0,
        du=2047, dv=0, bias_mant=0, bias_exp=0, vth=1000,
    )
    assert u[:, 0].tolist() == [0, -960, -480]


def _random_case(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sign = seed % 3  # mixed, all >= 0, all <= 0 weights (then a positive bias makes it fire)
    lo, hi = [(-300, 300), (0, 300), (-300, 0)][sign]
    return dict(
        spikes_tn=(rng.random((N_STEPS, N_IN)) < 0.3).astype(np.int32),
        weights=rng.integers(lo, hi + 1, size=(N_OUT, N_IN)),
        weight_exp=int(rng.integers(-3, 4)),
        du=int(rng.integers(0, 4096)),
        dv=int(rng.integers(0, 4096)),
        bias_mant=rng.integers(0 if sign == 2 else -200, 401 if sign == 2 else 201, size=N_OUT),
        bias_exp=rng.integers(0, 4, size=N_OUT),
        vth=int(rng.integers(1, 20 if sign == 2 else 400)),
    )


def _saturating_case(weight_exp: int) -> dict:
    """Drives u past 2**23 (Lava's one-step wrap) and v into its clip; some neurons never fire.

    weight_exp=7 keeps everything within int32; 14 makes ``a_in << 6`` wrap at 32 bits.
    """
    rng = np.random.default_rng(100)
    weights = np.full((N_OUT, N_IN), 255)
    weights[N_OUT // 2:] = -255
    return dict(
        spikes_tn=(rng.random((N_STEPS, N_IN)) < 0.8).astype(np.int32),
        weights=weights, weight_exp=weight_exp, du=0, dv=0,
        bias_mant=np.zeros(N_OUT, dtype=int), bias_exp=np.zeros(N_OUT, dtype=int),
        vth=131071,
    )


def _run_lava(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    src = RingBuffer(data=case["spikes_tn"].T)  # RingBuffer wants [N, T]
    dense = Dense(weights=case["weights"], weight_exp=case["weight_exp"])
    lif = LIF(shape=(N_OUT,), du=case["du"], dv=case["dv"], bias_mant=case["bias_mant"],
              bias_exp=case["bias_exp"], vth=case["vth"])
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    monitors = {name: Monitor() for name in ("u", "v", "s_out")}
    monitors["u"].probe(lif.u, N_STEPS)
    monitors["v"].probe(lif.v, N_STEPS)
    monitors["s_out"].probe(lif.s_out, N_STEPS)
    try:
        lif.run(condition=RunSteps(num_steps=N_STEPS), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = {k: m.get_data()[lif.name][k] for k, m in monitors.items()}
    finally:
        lif.stop()
    for k, x in out.items():  # monitors hand back float64; the values must be integers
        assert np.array_equal(x, np.round(x)), k
    return out["s_out"].astype(bool), out["u"].astype(np.int64), out["v"].astype(np.int64)


@pytest.mark.parametrize("seed", [*range(6), "saturating7", "saturating14"])
def test_reference_matches_real_lava_run(lava, seed):
    if isinstance(seed, str):
        case = _saturating_case(weight_exp=int(seed.removeprefix("saturating")))
    else:
        case = _random_case(seed)
    spikes_lava, u_lava, v_lava = _run_lava(case)
    # Lava's runtime forks its process models (children inherit the patched var_model);
    # under spawn they would re-import lava without the import hook.
    assert multiprocessing.get_start_method() == "fork"
    spikes_ref, u_ref, v_ref = dense_lif_fixed_pt(**case)
    assert not spikes_ref.all()
    if not isinstance(seed, str):
        assert spikes_ref.any()  # the case actually exercises firing
    np.testing.assert_array_equal(u_ref, u_lava)
    np.testing.assert_array_equal(v_ref, v_lava)
    np.testing.assert_array_equal(spikes_ref, spikes_lava)


@pytest.mark.parametrize("vth, fires", [(READOUT_VTH, False), (2**17 - 1, True)])
def test_readout_threshold_never_fires_in_lava(lava, vth, fires):
    """READOUT_VTH (one value for the plan's and the netx readout): with v driven into its
    24-bit clip (2**23 - 1) by a large bias, Lava never fires at vth = 2**17 (v > 2**23 needed),
    but does at 2**17 - 1 (v > 2**23 - 64) — which would reset a readout read from v."""
    case = dict(spikes_tn=np.zeros((N_STEPS, N_IN), np.int32), weights=np.zeros((N_OUT, N_IN), dtype=int),
                weight_exp=0, du=4095, dv=0, bias_mant=np.full(N_OUT, 4095), bias_exp=np.full(N_OUT, 12),
                vth=vth)
    spikes_lava, u_lava, v_lava = _run_lava(case)
    spikes_ref, u_ref, v_ref = dense_lif_fixed_pt(**case)
    np.testing.assert_array_equal(spikes_ref, spikes_lava)
    np.testing.assert_array_equal(v_ref, v_lava)
    assert bool(spikes_lava.any()) == fires
    if not fires:
        assert (v_lava == 2**23 - 1).all()


def _in_fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent)


def test_lava_runs_after_tqdm_fixed_the_start_method():
    """Regression: a tqdm bar (as training draws) creates a multiprocessing lock, which fixes the
    start method; Lava's runtime import then called set_start_method('fork') and failed."""
    proc = _in_fresh_python(
        "import multiprocessing, numpy as np\n"
        "from tqdm import tqdm\n"
        "for _ in tqdm(range(2), disable=True): pass\n"
        "tqdm.write('x')\n"
        "assert multiprocessing.get_start_method(allow_none=True) == 'fork'\n"
        "from test_lava import _random_case, _run_lava\n"
        "from htakl_deploy.hw.lava_compat import ensure_lava\n"
        "from htakl_deploy.hw.lif_ref import dense_lif_fixed_pt\n"
        "ensure_lava()\n"
        "case = _random_case(0)\n"
        "assert (_run_lava(case)[0] == dense_lif_fixed_pt(**case)[0]).all()\n"
        "print('ok')\n"
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_lava_under_another_start_method_is_a_clear_error():
    proc = _in_fresh_python(
        "import multiprocessing\n"
        "multiprocessing.set_start_method('spawn')\n"
        "from htakl_deploy.errors import UserError\n"
        "from htakl_deploy.hw.lava_compat import ensure_lava\n"
        "try:\n"
        "    ensure_lava()\n"
        "except UserError as e:\n"
        "    print('UserError:', e)\n"
    )
    assert "UserError: lava-nc runs its processes with the 'fork' start method" in proc.stdout, proc.stderr


def test_ports_patch_replaces_removed_numpy_keyword(lava):
    import lava.magma.core.process.ports.ports as ports

    source = Path(ports.__file__).read_text()
    assert source.count("newshape=") == 2  # what lava-nc 0.10.0 ships: fails on numpy >= 2.4
    patched = lava_compat.patch_source(lava_compat.PORTS_MODULE, source)
    assert "newshape=" not in patched and patched.count("\n") == source.count("\n")
    # the module in use is the patched one: a reshape transform runs on this numpy
    port = ports.ReshapePort((3, 2), (2, 3))
    assert port.get_transform_func_fwd()(np.arange(6).reshape(2, 3)).shape == (3, 2)
    with pytest.raises(ImportError, match="expected 1 occurrence"):
        lava_compat.patch_source(lava_compat.PORTS_MODULE, source.replace("newshape=self.shape", "x", 1))
