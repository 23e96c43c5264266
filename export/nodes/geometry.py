"""Shape and connectivity arithmetic shared by the conv and pool families."""

from __future__ import annotations

import numpy as np

Shape = tuple[int, ...]


def as_shape(shape, what: str) -> Shape:
    try:
        out = tuple(int(v) for v in np.asarray(shape).reshape(-1))
    except (TypeError, ValueError):
        raise ValueError(f"{what}: shape must be integers, got {shape!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{what}: shape must be positive integers, got {shape!r}")
    return out


def pair(v, what: str) -> tuple[int, int]:
    arr = np.asarray(v).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise ValueError(f"{what} must be an int or a pair, got {v!r}")
    return int(arr[0]), int(arr[1])


def out_len(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length along one axis of a conv/pool (kernel k, stride s, padding p, dilation d)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def axis_reach(n_in: int, k: int, s: int, p: int, d: int = 1, n_out: int | None = None) -> np.ndarray:
    """bool ``[n_in, n_out]``: input index i feeds output o along one axis of a conv/pool
    (kernel k, stride s, padding p, dilation d). The one geometry the op counter and the
    Loihi mapper both read connectivity from. ``n_out`` (default: the conv's output length) may be
    larger: outputs past the end, as a core allocated beyond the layer's edge computes them."""
    n_out = out_len(n_in, k, s, p, d) if n_out is None else n_out
    i = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
    o = np.broadcast_to(np.arange(n_out)[:, None], i.shape)
    ok = (i >= 0) & (i < n_in)
    r = np.zeros((n_in, n_out), dtype=bool)
    r[i[ok], o[ok]] = True
    return r


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean relation product: i reaches k iff some j has a[i, j] and b[j, k]."""
    return (a.astype(np.int64) @ b.astype(np.int64)) > 0
