"""Bit-exact numpy twin of lava-nc 0.10.0's ``fixed_pt`` Dense -> LIF (``PyDenseModelBitAcc``,
``PyLifModelBitAcc``), checked against real Lava runs in ``tests/test_lava.py``.

Lava source read for this (``lava/proc/dense/models.py``, ``lava/proc/lif/models.py``,
``lava/utils/weightutils.py``, ``lava/magma/core/model/py/ports.py``); points where it is
more precise than, or differs from, docs/DESIGN.md "Loihi-style fixed point":

- Weights that are all <= 0 (and not all 0) are "inhibitory": clipped to [-255, 0], no bit
  dropped (docs/DESIGN.md names only the mixed and the all >= 0 cases). All-zero counts as >= 0.
- The "24-bit wrap" of ``u`` is one conditional step, not a modulo: ``u > 2**23`` gets
  ``-2**24``, ``u <= -2**23`` gets ``+2**24``. So ``u == 2**23`` is kept as is (range
  ``(-2**23, 2**23]``), and a value beyond ``2**23 + 2**24`` is not brought back into range.
- Lava computes in int32 where its buffers are int32: the Dense output crosses an int32
  channel (the 16-bit ``a_out`` width is not enforced, int32 wrap-around is), ``a_in << 6``
  and ``u + a_in << 6`` wrap at 32 bits. Reproduced here with ``wrap_i32``; it only matters
  for activations beyond ``2**25``.
- ``bias_exp`` may be negative: then ``bias = bias_mant >> -bias_exp`` (arithmetic shift).
- ``weight_exp < 0`` is an arithmetic (floor) right shift of the summed input, after the sum.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

_DECAY_SHIFT = 12  # du, dv are 12-bit fractions of 4096
_MSB_SHIFT = 6  # a_in and vth are shifted left by 6 to align with the 24-bit u, v
_UV_MAX = 2**23
# The threshold of a readout population (the logits: its u or v is read, it must never spike):
# Lava spikes when v > vth << 6, and the 24-bit v is clipped to 2**23 - 1, so vth = 2**17 (vth << 6
# = 2**23) is the smallest value that can never fire;
# 2**17 - 1 fires once v > 2**23 - 64 (tests/test_lava.py runs both in Lava).
READOUT_VTH = 1 << 17


try:  # compiles the update below into hw.kernels' fused loop; without numba it runs as plain Python/arrays
    from numba.extending import register_jitable as _jitable
except ImportError:  # pragma: no cover - numba is a dependency, this only keeps imports working
    def _jitable(f):
        return f


@_jitable
def _i32(x):
    """Two's-complement wrap of int64 values to int32 (what numpy's int32 cast does), kept int64;
    elementwise on Python/numba integers, numpy arrays and torch tensors alike."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def wrap_i32(x):
    """Two's-complement wrap of int64 values to int32, as numpy casts do, kept as int64
    (numpy array or torch tensor; a torch tensor already in range is returned as is)."""
    if isinstance(x, torch.Tensor):
        if x.numel() and (x.max() >= 2**31 or x.min() < -(2**31)):
            return _i32(x)
        return x
    return _i32(np.asarray(x).astype(np.int64))


@_jitable
def trunc_decay(x, decay):
    """``sign(x * decay) * (|x * decay| >> 12)``: multiply by decay/4096, truncating toward zero
    (integer, numpy array or torch tensor). Written as ``(p + 4095·[p < 0]) >> 12``: an arithmetic
    shift rounds toward −∞, the offset makes it round toward zero."""
    p = x * decay
    return (p + (p < 0) * ((1 << _DECAY_SHIFT) - 1)) >> _DECAY_SHIFT


def effective_weights(weights: np.ndarray, num_weight_bits: int = 8) -> np.ndarray:
    """Weights as lava's fixed_pt Dense / Sparse use them, int64 [M, N]: clipped to 8 bits for
    their sign mode, then truncated to ``num_weight_bits`` (``lava.utils.weightutils``).

    Mixed signs: clip to [-256, 255], then drop the lowest ``9 - num_weight_bits`` bits (8 bits:
    ``(w >> 1) << 1``, toward -inf). All >= 0: clip to [0, 255]; all <= 0: to [-255, 0]; then drop
    ``8 - num_weight_bits`` bits of the magnitude. lava-dl's netx passes ``num_weight_bits`` up to 9
    for its dense layers (``netx.utils.optimize_weight_bits``), which keeps odd mixed-sign weights.
    """
    w = np.asarray(weights).astype(np.int64)
    if w.min(initial=0) >= 0:
        drop = max(0, 8 - num_weight_bits)
        return (np.clip(w, 0, 255) >> drop) << drop
    if w.max(initial=0) <= 0:
        drop = max(0, 8 - num_weight_bits)
        return -((np.clip(-w, 0, 255) >> drop) << drop)
    drop = max(0, 9 - num_weight_bits)
    return (np.clip(w, -256, 255) >> drop) << drop


def dense_lif_fixed_pt(
    spikes_tn: np.ndarray,
    weights: np.ndarray,
    weight_exp: int,
    du: int,
    dv: int,
    bias_mant: np.ndarray | int,
    bias_exp: np.ndarray | int,
    vth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a spike source -> Dense -> LIF network for T steps, bit-exactly as lava-nc fixed_pt.

    Args:
        spikes_tn: [T, N] binary input spikes (0/1 or bool); row t is what the source sends at
            Lava time step t+1.
        weights: [M, N] integer weight mantissas (Dense ``weights``; clipped/truncated here
            exactly as Lava does, see ``effective_weights``).
        weight_exp: Dense ``weight_exp``; the summed input is shifted left by it (right,
            arithmetically, if negative).
        du, dv: current / voltage decays in units of 1/4096 (u decays by (du+1)/4096, v by
            dv/4096 per step): du in [-1, 4095], dv in [0, 4096].
        bias_mant, bias_exp: scalar or [M] integers; bias = bias_mant << bias_exp, added to v
            each step in v's units (not shifted by 6).
        vth: integer threshold; a neuron spikes when v > vth << 6 (strictly).

    Returns:
        (spikes_tm bool [T, M], u_tm int64 [T, M], v_tm int64 [T, M]), the state after each of
        the T steps (v after reset). The Dense buffer delays input by one step: step 0 sees
        a_in = 0, step t sees the spikes of row t-1.
    """
    s = np.asarray(spikes_tn)
    if s.ndim != 2:
        raise ValueError(f"spikes_tn must be [T, N], got shape {s.shape}")
    if not np.isin(s, (0, 1)).all():
        raise ValueError("spikes_tn must be binary (0/1); graded spikes are not modelled")
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != s.shape[1]:
        raise ValueError(f"weights must be [M, N={s.shape[1]}], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"weights must be integers, got dtype {w.dtype}")
    for name, d, lo, hi in (("du", du, -1, 4095), ("dv", dv, 0, 4096)):
        if not lo <= int(d) <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {d}")
    n_t, n_m = s.shape[0], w.shape[0]

    w_eff = effective_weights(w)
    # Lava sums the selected weight columns in int64, shifts, then the int32 channel wraps.
    a_tm = w_eff @ s.T.astype(np.int64)  # [M, T]
    a_tm = (a_tm << weight_exp) if weight_exp > 0 else (a_tm >> -weight_exp)
    a_tm = wrap_i32(a_tm.T)
    # One step of Dense buffer delay: step t receives what was computed at step t-1.
    a_in_tm = np.zeros((n_t, n_m), dtype=np.int64)
    a_in_tm[1:] = a_tm[:-1]

    b_mant = np.broadcast_to(np.asarray(bias_mant, dtype=np.int64), (n_m,))
    b_exp = np.broadcast_to(np.asarray(bias_exp, dtype=np.int64), (n_m,))
    bias_m = np.where(b_exp >= 0, b_mant << np.maximum(b_exp, 0), b_mant >> np.maximum(-b_exp, 0))

    u = np.zeros(n_m, dtype=np.int64)
    v = np.zeros(n_m, dtype=np.int64)
    spikes_tm = np.zeros((n_t, n_m), dtype=bool)
    u_tm = np.zeros((n_t, n_m), dtype=np.int64)
    v_tm = np.zeros((n_t, n_m), dtype=np.int64)
    for t in range(n_t):
        spikes_tm[t], u, v = lif_int_step(u, v, a_in_tm[t], du=int(du), dv=int(dv), bias_v=bias_m, vth=int(vth))
        u_tm[t], v_tm[t] = u, v
    return spikes_tm, u_tm, v_tm


@_jitable
def lif_update(u, v, a_in, du, dv, bias_v, vth, i32_wraps, u_wraps, subtract=False):
    """One lava-nc ``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc`` step: **the only definition
    of the fixed-point neuron update in the package**. Elementwise and branch-free on the data, so
    the one source serves every caller: numpy arrays and torch tensors (``lif_int_step``, the
    emulator's general and CUDA paths, export's integer check) and, compiled by numba, int64
    scalars in ``hw.kernels``' fused loop. Returns (spikes, u, v after reset).

    ``bias_v`` = ``bias_mant << bias_exp`` (broadcastable to ``v``); spikes when v > vth << 6.
    ``i32_wraps=False`` skips Lava's int32 wraps and ``u_wraps=False`` its 24-bit wrap of ``u``:
    only where the caller has proved they cannot trigger (same integers, fewer operations).
    ``subtract``: reset by subtraction (``v − (vth << 6)`` after a spike, Loihi 2's programmable
    neuron ``hw.lava_procs.loihi_lif``) instead of Lava's reset to 0."""
    u = trunc_decay(u, (1 << _DECAY_SHIFT) - (du + 1))
    if i32_wraps:
        u = _i32(_i32(u) + _i32(a_in << _MSB_SHIFT))
    else:
        u = u + (a_in << _MSB_SHIFT)
    if u_wraps:  # one conditional step each way, not a modulo (Lava's wrap of the 24-bit u)
        u = u - (u > _UV_MAX) * (2 * _UV_MAX) + (u <= -_UV_MAX) * (2 * _UV_MAX)
    v = trunc_decay(v, (1 << _DECAY_SHIFT) - dv) + u + bias_v
    if i32_wraps:
        v = _i32(v)
    v = v - (v > _UV_MAX - 1) * (v - (_UV_MAX - 1)) - (v < 1 - _UV_MAX) * (v + (_UV_MAX - 1))  # clip to 24 bits
    th = vth << _MSB_SHIFT
    s = v > th
    return s, u, v - s * (th if subtract else v)


def lif_int_step(u, v, a_in, *, du: int, dv: int, bias_v, vth: int, i32_wraps: bool = True,
                 u_wraps: bool = True, ref_delay: int = 1, ref=None, subtract: bool = False):
    """``lif_update`` on arrays of any shape, int64, all numpy or all torch: (spikes bool, u, v
    after reset). ``i32_wraps`` / ``u_wraps``: see ``lif_update``. On the CPU with numba the
    update runs compiled, one pass over the neurons (``lif_elementwise``); elsewhere (a CUDA
    tensor, no numba) as array operations — the same source, the same integers
    (tests/test_kernels.py compares the two forms).

    ``du`` is in -1..4095 (Loihi's ``iDecay - 1``: -1 keeps all of ``u``, 4095 none of it) and
    ``dv`` in 0..4096 (Loihi's ``vDecay``: 4096 keeps none of ``v``).

    Refractory period (Loihi's ``refDelay``, ``ref_delay`` >= 1 steps counting the spike's own
    step, see ``refractory_hold``): with ``ref_delay > 1`` pass ``ref`` (int64, the steps each
    neuron is still held, 0 at the start) and get ``(spikes, u, v, ref)`` back. ``ref_delay = 1``
    (every file slayer writes) is the plain update. ``subtract``: reset by subtraction (``lif_update``)."""
    args = (int(du), int(dv), bias_v, int(vth), bool(i32_wraps), bool(u_wraps), bool(subtract))
    size = u.numel() if isinstance(u, torch.Tensor) else np.size(u)
    if numba is not None and size >= ELEMENTWISE_MIN and _cpu_int64(u, v, a_in, bias_v):
        s, u, v = lif_elementwise(u, v, a_in, *args)
    else:
        s, u, v = lif_update(u, v, a_in, *args)
    if ref is None:
        if ref_delay != 1:
            raise ValueError(f"ref_delay {ref_delay} > 1 needs the refractory state ref")
        return s, u, v
    s, v, ref = refractory_hold(s, v, ref, int(ref_delay))
    return s, u, v, ref


@_jitable
def refractory_hold(s, v, ref, ref_delay):
    """Loihi's refractory delay applied to one step's result (``s``, ``v`` after reset): a neuron
    with ``ref > 0`` (held since its spike) neither integrates nor fires — ``v`` stays 0, the
    value the reset left; ``u`` integrates as always. A spike holds the neuron for the next
    ``ref_delay - 1`` steps. So ``ref_delay = 1`` is no hold at all: a neuron may fire on
    consecutive steps, as it does in Intel's PilotNet LIF traces (refDelay 1 everywhere; Loihi 2
    reports ``v = 128`` at a spike's own step, the register holding the refractory state, and the
    next step's ``v`` starts from 0 — docs/NETX.md). lava-nc's float ``LIFRefractory`` holds ``v``
    the same way for ``refractory_period = ref_delay - 1`` steps. Returns (spikes, v, ref)."""
    held = ref > 0
    s = s & ~held
    v = v * ~held
    ref = (ref - 1) * held + s * (ref_delay - 1)
    return s, v, ref


ELEMENTWISE_MIN = 1 << 14  # below this many neurons the array form is faster than starting numba's threads
# (a netx readout of 1 neuron: 40 ms a step through the threaded kernel on a loaded 2-core machine)


def _cpu_int64(*xs) -> bool:
    def ok(x):
        if isinstance(x, torch.Tensor):
            return x.device.type == "cpu" and x.dtype == torch.int64
        return isinstance(x, (np.ndarray, int, np.integer)) and np.asarray(x).dtype == np.int64
    return all(ok(x) for x in xs)


def lif_elementwise(u, v, a_in, du, dv, bias_v, vth, i32_wraps, u_wraps, subtract=False):
    """``lif_update`` compiled by numba over every neuron in one pass (numpy arrays or CPU torch
    tensors, int64, broadcast together); returns new arrays of the inputs' kind."""
    is_torch = isinstance(u, torch.Tensor)
    xs = [np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for x in (u, v, a_in, bias_v)]
    shape = np.broadcast_shapes(*(x.shape for x in xs))
    flat = [np.ascontiguousarray(np.broadcast_to(x, shape)).reshape(-1) for x in xs]
    s_out = np.empty(flat[0].size, np.bool_)
    u_out, v_out = np.empty(flat[0].size, np.int64), np.empty(flat[0].size, np.int64)
    with numba_threads():
        _lif_elem_nb(*flat, du, dv, vth, i32_wraps, u_wraps, subtract, s_out, u_out, v_out)
    out = (s_out.reshape(shape), u_out.reshape(shape), v_out.reshape(shape))
    return tuple(torch.from_numpy(o) for o in out) if is_torch else out


def _lif_elem(u, v, a, bias, du, dv, vth, i32_wraps, u_wraps, subtract, s_out, u_out, v_out):
    for j in _prange(u.size):
        s, uj, vj = lif_update(u[j], v[j], a[j], du, dv, bias[j], vth, i32_wraps, u_wraps, subtract)
        s_out[j] = s
        u_out[j] = uj
        v_out[j] = vj


@contextmanager
def numba_threads():
    """numba's thread count = torch's for the call (OMP_NUM_THREADS / torch.set_num_threads), and
    torch's count unchanged by it: numba's first call starts its OpenMP threading layer, which sets
    the process's OpenMP count — the one torch reads — to numba's default (every core), so a
    1-thread grid cell or shard ran all its later torch work on every core."""
    torch_threads = torch.get_num_threads()
    want = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    old = numba.get_num_threads()
    numba.set_num_threads(want)
    torch.set_num_threads(torch_threads)
    try:
        yield
    finally:
        numba.set_num_threads(old)
        torch.set_num_threads(torch_threads)


LOOP_CHUNK = 2048  # neurons a thread steps together: its u, v (32 KiB) stay in L1/L2


def _lif_loop(a, exp, a2, exp2, two, bias, n, du, dv, vth, u_wraps, subtract, spikes, spikes_f, us, store_u):
    """All T steps of ``lif_update`` over a flat population (numba-compiled as ``lif_loop``,
    parallel over chunks of ``LOOP_CHUNK`` neurons; within a chunk the steps go one after the other
    and the innermost loop runs over contiguous neurons, so the compiler vectorises the update).
    ``a`` ``[T, M]`` float32 holding exact integers: step t's input is ``shift(a[t], exp)`` (plus
    ``shift(a2[t], exp2)`` with ``two``): each link's Lava shift (floor for a negative exponent),
    then the InPort sum. No int32 wraps: the caller has proved |a_in| < 2^25, |bias| < 2^29.
    Writes spikes (bool and float32 0/1) and, with ``store_u``, u; ``bias`` per neuron of one
    sample (``n`` of them, repeated over the batch)."""
    steps, m = a.shape
    for c in _prange((m + LOOP_CHUNK - 1) // LOOP_CHUNK):
        lo = c * LOOP_CHUNK
        w = min(LOOP_CHUNK, m - lo)
        u = np.zeros(w, np.int64)
        v = np.zeros(w, np.int64)
        b = np.empty(w, np.int64)
        for k in range(w):
            b[k] = bias[(lo + k) % n]
        for t in range(steps):
            for k in range(w):
                j = lo + k
                ai = np.int64(a[t, j])
                ai = (ai << exp) if exp >= 0 else (ai >> -exp)
                if two:
                    bi = np.int64(a2[t, j])
                    ai += (bi << exp2) if exp2 >= 0 else (bi >> -exp2)
                s, u[k], v[k] = lif_update(u[k], v[k], ai, du, dv, b[k], vth, False, u_wraps, subtract)
                spikes[t, j] = s
                spikes_f[t, j] = np.float32(s)
                if store_u:
                    us[t, j] = u[k]


try:  # cached next to lif_update: numba invalidates its cache when this file changes
    import numba

    _prange = numba.prange
    lif_loop = numba.njit(parallel=True, cache=True, nogil=True)(_lif_loop)
    _lif_elem_nb = numba.njit(parallel=True, cache=True, nogil=True)(_lif_elem)
except ImportError:  # pragma: no cover
    numba = None
    _prange = range
    lif_loop = _lif_loop
