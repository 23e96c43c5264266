"""Exact integer arithmetic with torch's linear ops (the integer runner's building blocks)."""

from __future__ import annotations

import numpy as np
import torch


def shift(a: np.ndarray, exp: int) -> np.ndarray:
    """``a · 2^exp`` for ``exp ≥ 0``, else an arithmetic (floor) right shift, as Lava's ``weight_exp``."""
    return (a << exp) if exp >= 0 else (a >> -exp)


def exact(fn, x_int: np.ndarray, *tensors) -> np.ndarray:
    """Apply a torch linear op to integers ``x_int`` ``[T, B, ...]`` exactly: in float32 when every
    partial sum provably stays below 2^24 (max |x| × the largest Σ|w| of one output, ``tensors[0]``
    rows = outputs; summation order then does not matter), else in float64 (all sums below 2^53)."""
    t, b = x_int.shape[:2]
    dtype = np.float64
    if tensors:
        w = tensors[0]
        if float(w.abs().reshape(len(w), -1).sum(1).max()) * float(np.abs(x_int).max(initial=0)) < 2**24:
            dtype, tensors = np.float32, tuple(v.to(torch.float32) for v in tensors)
    y = fn(torch.from_numpy(x_int.reshape(t * b, *x_int.shape[2:]).astype(dtype)), *tensors)
    y = y.numpy()
    if np.abs(y).max(initial=0) >= 2**52:
        raise OverflowError("integer accumulation beyond 2^52")
    return np.rint(y).astype(np.int64).reshape(t, b, *y.shape[1:])


def per_step(fn, x_tb: torch.Tensor) -> torch.Tensor:
    """``fn`` on ``[N, ...]`` applied to ``[T, B, ...]`` (time and batch merged)."""
    t, b = x_tb.shape[:2]
    y = fn(x_tb.reshape(t * b, *x_tb.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])
