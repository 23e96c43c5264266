"""The Lava artefact's file format, ``htakl-lava-plan/2``: how ``DeploymentPlan.save`` stores a
plan's arrays and how ``hw.plan`` / ``hw.artefact_check`` read them back, every array's type and
size checked before it is allocated (docs/ARTEFACT.md describes the format for a reader in
another language).

Container: an ``.npz`` — a zip archive of ``.npy`` members, stored uncompressed (``np.savez``).
Only the members a caller asks for are read (``Members``), each straight into its final array
(numpy reads a zip member in 256 KiB pieces into an array allocated once). A member's declared
dtype and shape come from its own ``.npy`` header and are checked — allowed type, bytes declared
= bytes stored, stored bytes inside the file — before anything is allocated, so an artefact can
make the reader allocate no more than its own size.

Values, in the smallest type that holds them (``pack_int``, ``pack_float``, ``pack_matrix``):

- integers (weights, biases) are stored as ``a >> s`` in the smallest of int8, uint8, int16,
  uint16, int32, int64, where ``s`` is the number of trailing zero bits all values share
  (recorded in the header's ``int_shift`` table when it is not 0). Loihi's 8-bit mixed-sign
  weights are even (Lava drops their lowest bit), so ``[-254, 254]`` is stored as int8
  ``[-127, 127]`` with shift 1: one byte a weight. Read back (``unpack_int``) they are the same
  integers, at least int16 wide (every 8-bit Loihi weight, -255..255, fits; no int8 negation
  wraps);
- a link's matrix is stored dense or as CSR (``data``, ``indices``, ``indptr``; indices in the
  smallest unsigned type), whichever takes fewer bytes; it is read back as CSR;
- floats as float32 where that is exact, else float64. Float weights (``f_weight``, the float
  matrix) are written only on request (``float_weights=True``: the Lava worker's
  ``floating_pt`` channel); the exported artefact holds the integer network and the neurons'
  float parameters, and ``simulate --backend lava-floating_pt`` rebuilds the float weights from
  the float student beside it (``hw.simulate.float_plan``).
"""

from __future__ import annotations

import zipfile
from typing import IO, Any

import numpy as np
import scipy.sparse as sp
from numpy.lib import format as npy

from htakl_deploy.readers import npy_header

FORMAT = "htakl-lava-plan/2"
OLD_FORMATS = ("htakl-lava-plan/1",)  # refused: "re-export"
INT_STORE = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64))
FLOAT_STORE = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_STORE = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.int64))
MAX_SHIFT = 24  # beyond it no weight fits Lava's 24-bit sums; biases are 13-bit
MAX_HEADER_BYTES = 16 * 2**20


class FormatError(ValueError):
    """An artefact member that is not what the format allows (its message names the member)."""


# -- values -----------------------------------------------------------------------------------


def _smallest(lo: int, hi: int, candidates) -> np.dtype:
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    raise FormatError(f"integers in {lo}..{hi} do not fit int64")


def pack_int(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``(a >> s, s)`` in the smallest integer type, ``s`` the trailing zero bits all values share."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise TypeError(f"pack_int takes integers, got {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if not a.size:
        return a.astype(np.int8), 0
    bits = int(np.bitwise_or.reduce(a, axis=None))
    shift = min((bits & -bits).bit_length() - 1, MAX_SHIFT) if bits else 0
    lo, hi = int(a.min()) >> shift, int(a.max()) >> shift
    dt = _smallest(lo, hi, INT_STORE)
    if dt == np.int64:  # no narrower type: keep the values as they are
        return a, 0
    return (a >> shift).astype(dt), shift


def unpack_int(stored: np.ndarray, shift: int) -> np.ndarray:
    """The integers ``stored << shift``, at least int16 wide."""
    if stored.dtype not in INT_STORE:
        raise FormatError(f"integers stored as {stored.dtype}")
    if not (isinstance(shift, int) and 0 <= shift <= MAX_SHIFT) or (shift and stored.dtype == np.int64):
        raise FormatError(f"shift {shift!r} outside 0..{MAX_SHIFT} for {stored.dtype}")
    info = np.iinfo(stored.dtype)
    wide = _smallest(info.min << shift, info.max << shift, (np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64)))
    out = stored.astype(wide)
    if shift:
        out <<= shift
    return out


def pack_float(a: np.ndarray) -> np.ndarray:
    """float32 if that holds every value exactly, else float64."""
    a = np.asarray(a, dtype=np.float64)
    f32 = a.astype(np.float32)
    return f32 if np.array_equal(f32, a, equal_nan=True) else a


def _index(a: np.ndarray, top: int) -> np.ndarray:
    return np.asarray(a).astype(_smallest(0, max(top, 0), INDEX_STORE), copy=False)


def pack_matrix(m: sp.spmatrix, prefix: str, integer: bool) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
    """A matrix's members (``prefix`` dense, or ``prefix.data/.indices/.indptr``), its header
    fields (``layout``, ``shape``) and its values' shift: dense when that takes fewer bytes and the
    matrix holds no explicit zeros (so that reading it back gives the same non-zeros)."""
    m = m.tocsr()
    if not m.has_canonical_format:  # sorted indices, no duplicates (summed: the same matrix)
        m = m.copy()
        m.sum_duplicates()
    rows, cols = m.shape
    if integer:
        data, shift = pack_int(m.data)
    else:
        data, shift = pack_float(m.data), 0
    indices, indptr = _index(m.indices, cols - 1), _index(m.indptr, m.nnz)
    csr_bytes = data.nbytes + indices.nbytes + indptr.nbytes
    dense_bytes = rows * cols * data.itemsize
    if dense_bytes < csr_bytes and np.count_nonzero(m.data) == m.nnz:
        dense = np.zeros((rows, cols), data.dtype)
        dense[np.repeat(np.arange(rows), np.diff(m.indptr)), m.indices] = data
        return {prefix: dense}, {"layout": "dense", "shape": [rows, cols]}, shift
    return ({f"{prefix}.data": data, f"{prefix}.indices": indices, f"{prefix}.indptr": indptr},
            {"layout": "csr", "shape": [rows, cols]}, shift)


def _csr_from_dense(stored: np.ndarray, shift: int, integer: bool) -> sp.csr_matrix:
    """CSR of a dense stored matrix (a boolean mask, no index arrays of the full size)."""
    rows, cols = stored.shape
    mask = stored != 0
    idx = np.int32 if max(int(np.count_nonzero(mask)), cols) < 2**31 else np.int64
    indptr = np.zeros(rows + 1, idx)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    indices = np.broadcast_to(np.arange(cols, dtype=idx), stored.shape)[mask]  # row by row: CSR order
    values = stored[mask]
    return sp.csr_matrix((unpack_int(values, shift) if integer else values, indices, indptr), shape=(rows, cols))


def unpack_matrix(arrays, prefix: str, meta: dict[str, Any], shift: int, integer: bool) -> sp.csr_matrix:
    """The CSR matrix ``pack_matrix`` stored (``arrays``: a ``Members`` or a dict)."""
    shape = tuple(meta["shape"])
    if meta["layout"] == "dense":
        stored = arrays[prefix]
        if stored.shape != shape:
            raise FormatError(f"{prefix}: shape {stored.shape}, header says {shape}")
        return _csr_from_dense(stored, shift, integer)
    data = arrays[f"{prefix}.data"]
    data = unpack_int(data, shift) if integer else data
    indices, indptr = arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]
    idx = np.int32 if max(shape[1], data.size) < 2**31 else np.int64
    return sp.csr_matrix((data, indices.astype(idx), indptr.astype(idx)), shape=shape)


def matrix_members(prefix: str, layout: str) -> list[str]:
    """The members of a matrix stored with ``layout``, its values' member first."""
    return [prefix] if layout == "dense" else [f"{prefix}.data", f"{prefix}.indices", f"{prefix}.indptr"]


# -- the container ----------------------------------------------------------------------------


class Members:
    """The ``.npy`` members of an artefact's zip, read on demand. ``info(name)`` gives a member's
    dtype and shape from its own header, after checking them (an allowed plain type, the bytes it
    declares = the bytes it stores, those bytes inside the file), with nothing allocated;
    ``members[name]`` then reads it. ``FormatError`` / ``zipfile.BadZipFile`` / ``OSError`` on
    anything else."""

    def __init__(self, source: str | IO[bytes]):
        self._zip = zipfile.ZipFile(source)
        fp = self._zip.fp
        fp.seek(0, 2)
        self.file_bytes = fp.tell()
        self._entries: dict[str, zipfile.ZipInfo] = {}
        for zi in self._zip.infolist():
            if not zi.filename.endswith(".npy") or zi.is_dir() or zi.filename[:-4] in self._entries:
                raise FormatError(f"member {zi.filename!r} is not an array (or appears twice)")
            if zi.compress_type != zipfile.ZIP_STORED:
                raise FormatError(f"member {zi.filename!r} is compressed; artefacts store their arrays uncompressed")
            if zi.header_offset + zi.file_size > self.file_bytes:
                raise FormatError(f"member {zi.filename!r} declares {zi.file_size} bytes past the end of the file")
            self._entries[zi.filename[:-4]] = zi
        self._info: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    def __enter__(self) -> "Members":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        if name not in self._info:
            zi = self._entries[name]
            with self._zip.open(zi) as f:
                try:
                    shape, fortran, dtype, offset = npy_header(f)
                except ValueError as e:
                    raise FormatError(f"array {name!r}: not a plain .npy array ({str(e)[:80]})") from None
            if dtype.hasobject or dtype not in (*INT_STORE, *INDEX_STORE, *FLOAT_STORE) or fortran:
                raise FormatError(f"array {name!r}: type {dtype}{' (Fortran order)' if fortran else ''} is not "
                                  "one an artefact stores")
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared != zi.file_size - offset:
                raise FormatError(f"array {name!r}: declares shape {shape} ({declared} bytes) but holds "
                                  f"{zi.file_size - offset} bytes")
            self._info[name] = (dtype, tuple(int(s) for s in shape))
        return self._info[name]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise KeyError(name)
        dtype, shape = self.info(name)
        with self._zip.open(self._entries[name]) as f:
            a = npy.read_array(f, allow_pickle=False)
        if a.dtype != dtype or a.shape != shape:  # pragma: no cover - read_array parses the same header
            raise FormatError(f"array {name!r}: read {a.dtype} {a.shape}, declared {dtype} {shape}")
        return a


def read_header_bytes(members: Members) -> bytes:
    """The ``header`` member's bytes (uint8, at most ``MAX_HEADER_BYTES``)."""
    if "header" not in members:
        raise FormatError("no header")
    dtype, shape = members.info("header")
    if dtype != np.uint8 or len(shape) != 1:
        raise FormatError(f"the header must be UTF-8 JSON bytes, got {dtype} {shape}")
    if shape[0] > MAX_HEADER_BYTES:
        raise FormatError(f"the header takes {shape[0]} bytes (at most {MAX_HEADER_BYTES})")
    return members["header"].tobytes()
