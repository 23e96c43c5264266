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


def wrap_i32(x):
    """Two's-complement wrap of int64 values to int32, as numpy casts do, kept as int64
    (numpy array or torch tensor)."""
    if isinstance(x, torch.Tensor):
        if x.numel() and (x.max() >= 2**31 or x.min() < -(2**31)):
            return torch.remainder(x + 2**31, 2**32) - 2**31
        return x
    return np.asarray(x).astype(np.int32).astype(np.int64)


def trunc_decay(x, decay: int):
    """``sign(x * decay) * (|x * decay| >> 12)``: multiply by decay/4096, truncating toward zero
    (numpy array or torch tensor). Written as ``(p + 4095·[p < 0]) >> 12``: an arithmetic shift
    rounds toward −∞, the offset makes it round toward zero."""
    if decay == 0:
        return x * 0
    p = x * decay
    where = torch.where if isinstance(p, torch.Tensor) else np.where
    return where(p < 0, p + ((1 << _DECAY_SHIFT) - 1), p) >> _DECAY_SHIFT


def effective_weights(weights: np.ndarray) -> np.ndarray:
    """Weights as lava's fixed_pt Dense uses them (8-bit, ``num_weight_bits=8``), int64 [M, N].

    Mixed signs: clip to [-256, 255], then drop the lowest bit (``(w >> 1) << 1``, toward
    -inf). All >= 0: clip to [0, 255]. All <= 0: clip to [-255, 0].
    """
    w = np.asarray(weights).astype(np.int64)
    if w.min(initial=0) >= 0:
        return np.clip(w, 0, 255)
    if w.max(initial=0) <= 0:
        return np.clip(w, -255, 0)
    return (np.clip(w, -256, 255) >> 1) << 1


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
        du, dv: 12-bit current / voltage decays in [0, 4095], in units of 1/4096
            (u decays by (du+1)/4096, v by dv/4096 per step).
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
    for name, d in (("du", du), ("dv", dv)):
        if not 0 <= int(d) <= 4095:
            raise ValueError(f"{name} must be in [0, 4095], got {d}")
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


def lif_int_step(u, v, a_in, *, du: int, dv: int, bias_v, vth: int, i32_wraps: bool = True,
                 u_wraps: bool = True):
    """One lava-nc ``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc`` step — the only copy of the
    fixed-point neuron update in the package. Arrays of any shape, int64, all numpy or all torch
    (``bias_v`` = ``bias_mant << bias_exp``, broadcastable to ``v``). Returns (spikes bool, u, v
    after reset).

    ``i32_wraps=False`` skips Lava's int32 wraps and ``u_wraps=False`` its 24-bit wrap of ``u``:
    pass them only where the caller has proved they cannot trigger (``hw.emulator`` does, per
    tensor), which gives the same integers with fewer operations.
    """
    w32 = wrap_i32 if i32_wraps else (lambda x: x)
    is_torch = isinstance(u, torch.Tensor)
    where = torch.where if is_torch else np.where
    u = w32(trunc_decay(u, 4096 - (du + 1)))  # a new array: updated in place below
    if i32_wraps:
        u = w32(u + w32(a_in << _MSB_SHIFT))
    else:
        u += a_in << _MSB_SHIFT
    if u_wraps:
        u = where(u > _UV_MAX, u - 2 * _UV_MAX, where(u <= -_UV_MAX, u + 2 * _UV_MAX, u))
    v = w32(trunc_decay(v, 4096 - dv) + u + bias_v)
    if is_torch:
        v.clamp_(-(_UV_MAX - 1), _UV_MAX - 1)
    else:
        np.clip(v, -(_UV_MAX - 1), _UV_MAX - 1, out=v)
    s = v > (int(vth) << _MSB_SHIFT)
    if is_torch:
        v.masked_fill_(s, 0)
    else:
        v[s] = 0
    return s, u, v
