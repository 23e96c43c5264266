"""The spike recording file: the contract between a simulator and the energy counter.

One HDF5 file (h5py), written atomically (temporary file in the same folder, then
``os.replace``) and *streamed*: ``SpikeWriter`` appends one batch of samples at a time into
chunked, resizable datasets, so a writer's memory is bounded by its batch, not by the number
of samples. Every array is laid out ``[T, samples, ...]``:

    /input                 [T, S, C, H, W]   what the first layer received at each step:
                                             float32 (analog pixels, direct encoding), or an
                                             integer / uint8 array (fixed-point input, Poisson
                                             spikes); repeated over T for direct encoding.
                                             Absent when ``record`` is "counts".
    /layers/<node name>    [T, S, ceil(N/8)]  the 0/1 spikes of a LIF node, N = its neurons in
                                             torch order (C, H, W) flattened, bit-packed along
                                             that axis (``numpy.packbits``, big bit order) and
                                             gzip-1 compressed in chunks of one step × a few
                                             samples; the dataset attribute ``packed_shape``
                                             (JSON) gives the unpacked ``[T, S, *shape]``.
                                             Named as in the StudentGraph (dots are fine).
                                             Present for the layers ``record`` keeps.
    /counts/<node name>    [T, *shape] int64 spikes of every LIF node summed over the samples
                                             (always present, whatever ``record`` is)
    /input_nonzero         [T, C, H, W] int64 non-zero input values summed over the samples
    /labels                [S]  int64        optional
    /predictions           [S]  int64        optional
    file attributes:       format = "htakl-spikes/2", backend (e.g. "lava-fixed_pt",
                           "emulator", "torch-float"), layer_order (JSON list of names),
                           timesteps, samples, record (JSON: "spikes", "counts" or the list of
                           layers with full spikes), layer_shapes (JSON: name → shape),
                           input_shape (JSON), input_events (every non-zero input value has one
                           magnitude), attrs_json (every attribute the writer was given,
                           JSON-encoded so that it reads back exactly)

Why bit-packing + gzip-1 (measured, bench/spikes_io.py and docs/PERFORMANCE.md): on random
spikes at 2 / 10 / 25 % firing it takes 0.27 / 0.59 / 0.85 bits per neuron-step, against
0.45 / 1.17 / 1.64 for uint8 + gzip-1 (the /1 layout), and writes 1.6–2.6× and reads 3× faster.

Files of the previous layout ("htakl-spikes/1": /input and unpacked uint8 /layers only) are
still read: their counts are summed chunk by chunk from the spikes.

Step ``t`` of a sample is step ``t`` of that sample for every layer: a simulator whose layers
lag (Lava adds one step per Dense/Conv hop) realigns before writing.

Reading: ``open_spikes`` gives a ``SpikeFile`` that reads chunk by chunk (counts, then spikes
of one step × a block of samples at a time); ``read_spikes`` loads a whole file with full
spikes into a ``SpikeRecording`` (small files, tests). Both turn a missing, corrupt, truncated
or foreign file into a ``UserError`` that names the file and what was expected;
``write_spikes`` / ``SpikeWriter`` raise ``ValueError`` on arrays that break the layout (a
programming error in the caller, not a user mistake).

Writer API for a simulator backend (the emulator and torch-float backends of
``hw.simulate`` use it; a Lava backend can too)::

    with SpikeWriter(path, layer_shapes={name: shape, ...}, timesteps=T,
                     attrs={"backend": "lava-fixed_pt", ...}, record="spikes") as w:
        for each batch:
            w.append(layers={name: [T, B, *shape] 0/1}, input=[T, B, ...],
                     labels=[B] or None, predictions=[B] or None)
    # the file appears (atomically) when the block ends without an exception
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import AtomicH5
from htakl_deploy.errors import UserError

FORMAT = "htakl-spikes/2"
FORMAT_V1 = "htakl-spikes/1"
READABLE = (FORMAT, FORMAT_V1)
_RESERVED = ("format", "layer_order", "timesteps", "samples")
_CHUNK_BYTES = 1 << 20  # about 1 MB per chunk of a packed layer (one step × a block of samples)


def _check_layout(layers: dict, input_tb, labels, predictions) -> tuple[int, int]:
    """Raise ValueError unless every array follows ``[T, samples, ...]``; return (T, samples)."""
    x = np.asarray(input_tb) if not hasattr(input_tb, "shape") else input_tb
    if len(x.shape) < 3:
        raise ValueError(f"input must be [T, samples, ...features], got shape {tuple(x.shape)}")
    t, s = x.shape[:2]
    if t < 1 or s < 1:
        raise ValueError(f"input has T={t}, samples={s}: both must be >= 1")
    if not layers:
        raise ValueError("layers is empty: record the spikes of every LIF node")
    for name, arr in layers.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"layer name {name!r} must be a non-empty string without '/'")
        shape = tuple(arr.shape) if hasattr(arr, "shape") else np.asarray(arr).shape
        if len(shape) < 3 or shape[:2] != (t, s):
            raise ValueError(f"layer {name!r} has shape {shape}, expected [T={t}, samples={s}, ...]")
    for what, arr in (("labels", labels), ("predictions", predictions)):
        if arr is not None and np.asarray(arr).shape != (s,):
            raise ValueError(f"{what} must have shape [samples={s}], got {np.asarray(arr).shape}")
    return t, s


def _binary_u8(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a.view(np.uint8)  # the same bytes, no copy (a batch of ResNet-19 spikes is ~370 MB)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"layer {name!r}: spikes must be numeric or bool, got dtype {a.dtype}")
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"layer {name!r}: spikes must be 0/1, found other values")
    return a.astype(np.uint8)


def _input_array(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.bool_:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input must be float, integer or bool, got dtype {x.dtype}")
    return x


def nonzero_magnitudes(x: np.ndarray) -> np.ndarray:
    """The distinct magnitudes of the non-zero values of ``x`` (at most two are kept: enough
    to tell whether the input is events, i.e. all non-zero values share one magnitude)."""
    nz = np.abs(x[x != 0])
    if not nz.size:
        return nz
    first = nz.flat[0]
    other = nz[nz != first]
    return np.array([first] if not other.size else [first, other.flat[0]])


# -- the in-memory recording ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpikeRecording:
    """Spikes of every LIF layer plus the input, all ``[T, samples, ...]`` (checked here).

    ``layers``: node name → uint8 0/1 array, in ``attrs['layer_order']``; ``input``: the
    first layer's input; ``labels`` / ``predictions``: ``[samples]`` or None; ``attrs``:
    ``format``, ``backend``, ``layer_order`` and whatever else the writer stored.

    The counting interface (shared with ``SpikeFile``, which reads a file chunk by chunk):
    ``layer_shape``, ``layer_counts``, ``input_nonzero``, ``input_events``, ``has_spikes``.
    """

    layers: dict[str, np.ndarray]
    input: np.ndarray
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_layout(self.layers, self.input, self.labels, self.predictions)

    @property
    def timesteps(self) -> int:
        return int(self.input.shape[0])

    @property
    def samples(self) -> int:
        return int(self.input.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input.shape[2:])

    def layer_shape(self, name: str) -> tuple[int, ...] | None:
        """``(T, samples, *shape)`` of a recorded layer, None if not recorded."""
        return tuple(self.layers[name].shape) if name in self.layers else None

    def has_spikes(self, name: str) -> bool:
        return name in self.layers

    def layer_counts(self, name: str) -> np.ndarray:
        """int64 ``[T, *shape]``: the layer's spikes summed over the samples."""
        return np.asarray(self.layers[name]).sum(axis=1, dtype=np.int64)

    def input_nonzero(self) -> np.ndarray:
        """int64 ``[T, *shape]``: non-zero input values summed over the samples."""
        return (np.asarray(self.input) != 0).sum(axis=1, dtype=np.int64)

    def input_events(self) -> bool:
        """True if every non-zero input value has one magnitude (spikes, maybe scaled)."""
        return len(nonzero_magnitudes(np.asarray(self.input))) <= 1


# -- writing -------------------------------------------------------------------------------


def parse_record(record, layer_order: list[str]):
    """``"spikes"`` (full spikes of every layer), ``"counts"`` (counts only), or a list / comma-
    separated string of layer names (full spikes of those, counts of all). ValueError otherwise."""
    if record in ("spikes", "counts"):
        return record
    names = [n.strip() for n in record.split(",")] if isinstance(record, str) else list(record)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in layer_order]
    if not names or unknown:
        raise ValueError(f"record: expected 'spikes', 'counts' or a comma-separated list of layers "
                         f"from {layer_order}; got {record!r}")
    return [n for n in layer_order if n in names]


class SpikeWriter:
    """Append batches of samples to a new spike file (see the module docstring).

    ``layer_shapes``: LIF node name → per-sample shape, in layer order (``attrs['layer_order']``
    may reorder); ``attrs`` must name the ``backend``; ``record``: see ``parse_record``.
    The file is written to a temporary name and renamed onto ``path`` by ``close()``; ``abort()``
    (or leaving the ``with`` block by an exception) removes it.
    """

    def __init__(self, path: str | os.PathLike, *, layer_shapes: dict[str, tuple[int, ...]], timesteps: int,
                 attrs: dict, record="spikes"):
        import h5py

        attrs = dict(attrs)
        if not isinstance(attrs.get("backend"), str) or not attrs["backend"]:
            raise ValueError("attrs['backend'] must name the simulator, e.g. 'lava-fixed_pt', 'emulator', 'torch-float'")
        if attrs.get("format", FORMAT) not in (FORMAT, FORMAT_V1):
            raise ValueError(f"attrs['format'] must be {FORMAT!r} if given, got {attrs['format']!r}")
        attrs.pop("format", None)
        if not layer_shapes:
            raise ValueError("layers is empty: record the spikes of every LIF node")
        for name in layer_shapes:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"layer name {name!r} must be a non-empty string without '/'")
        order = list(attrs.get("layer_order", list(layer_shapes)))
        if sorted(order) != sorted(layer_shapes) or len(set(order)) != len(order):
            raise ValueError(f"attrs['layer_order'] {order} must list each layer exactly once ({sorted(layer_shapes)})")
        self.record = parse_record(record, order)
        self.path = Path(path)
        self.timesteps = int(timesteps)
        self.order = order
        self.shapes = {n: tuple(int(v) for v in layer_shapes[n]) for n in order}
        self.full = order if self.record == "spikes" else [] if self.record == "counts" else list(self.record)
        self.attrs = attrs
        self.samples = 0
        self.counts = {n: np.zeros((self.timesteps, *self.shapes[n]), np.int64) for n in order}
        self.input_nz = None
        self.magnitudes = np.zeros(0)
        self.input_shape = None
        self.has = {"labels": None, "predictions": None}
        self._file = AtomicH5(self.path)  # a full disk: one UserError, never a crash inside libhdf5
        try:
            self._f = self._file.h5
            g = self._f.create_group("layers")
            self._ds = {}  # kept open: closing a dataset flushes its chunk cache, so a chunk filled over
            # several appends would be compressed, read back and decompressed at every append
            for n in self.full:
                nbytes = (int(np.prod(self.shapes[n])) + 7) // 8
                chunk = max(1, min(1024, _CHUNK_BYTES // max(nbytes, 1)))
                ds = g.create_dataset(n, shape=(self.timesteps, 0, nbytes), maxshape=(self.timesteps, None, nbytes),
                                      dtype=np.uint8, chunks=(1, chunk, nbytes), compression="gzip", compression_opts=1)
                ds.attrs["packed_shape"] = json.dumps([self.timesteps, 0, *self.shapes[n]])
                self._ds[n] = ds
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "SpikeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def append(self, *, layers: dict, input, labels=None, predictions=None) -> None:
        """Add a batch ``[T, B, ...]`` (every layer of ``layer_shapes``, the input; labels and
        predictions ``[B]`` in every batch or in none)."""
        t, b = _check_layout(layers, input, labels, predictions)
        if t != self.timesteps:
            raise ValueError(f"batch has T={t}, the file T={self.timesteps}")
        if sorted(layers) != sorted(self.order):
            raise ValueError(f"batch layers {sorted(layers)} differ from the file's {sorted(self.order)}")
        x = _input_array(input)
        if self.input_shape is not None and tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"input batch has shape {x.shape}, the file's input is [T, S, {self.input_shape}]")
        for what, arr in (("labels", labels), ("predictions", predictions)):
            if self.has[what] is not None and self.has[what] != (arr is not None):
                raise ValueError(f"{what} must be given in every batch or in none")
        spikes = {}
        for n in self.order:  # every check before anything is written
            spikes[n] = _binary_u8(n, layers[n])
            if spikes[n].shape[2:] != self.shapes[n]:
                raise ValueError(f"layer {n!r} has shape {spikes[n].shape}, expected [T, B, {self.shapes[n]}]")
        if self.input_shape is None:
            self._start_input(tuple(x.shape[2:]), x.dtype)
        for what, arr in (("labels", labels), ("predictions", predictions)):
            self.has[what] = arr is not None
        s0, s1 = self.samples, self.samples + b
        for n, a in spikes.items():
            self.counts[n] += a.sum(axis=1, dtype=np.int64)
            if n in self.full:
                ds = self._ds[n]
                ds.resize(s1, axis=1)
                ds[:, s0:s1] = np.packbits(a.reshape(t, b, -1), axis=-1)
        self.input_nz += (x != 0).sum(axis=1, dtype=np.int64)
        self.magnitudes = nonzero_magnitudes(np.concatenate([self.magnitudes, nonzero_magnitudes(x)]))
        if "input" in self._f:
            self._f["input"].resize(s1, axis=1)
            self._f["input"][:, s0:s1] = x
        for what, arr in (("labels", labels), ("predictions", predictions)):
            if arr is not None:
                if what not in self._f:
                    self._f.create_dataset(what, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
                self._f[what].resize(s1, axis=0)
                self._f[what][s0:s1] = np.asarray(arr).astype(np.int64)
        self.samples = s1
        self._file.check()  # the disk filled up: stop now (the temporary file is removed)

    def _start_input(self, shape: tuple[int, ...], dtype) -> None:
        """The first batch fixes the input's shape and dtype (and creates ``/input``)."""
        t = self.timesteps
        self.input_shape = shape
        self.input_nz = np.zeros((t, *shape), np.int64)
        if self.record != "counts":
            chunk = max(1, min(1024, _CHUNK_BYTES // max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)))
            self._f.create_dataset("input", shape=(t, 0, *shape), maxshape=(t, None, *shape), dtype=dtype,
                                   chunks=(1, chunk, *shape), compression="gzip", compression_opts=1)

    def append_file(self, part: "SpikeFile", input_magnitudes, batch: int) -> None:
        """Append every sample of ``part`` — a spike file of this file's layers, shapes, T, record
        and attributes, e.g. one shard of a split simulation — copying its packed spikes as they
        are (no unpacking), ``batch`` samples at a time in ``append``'s order of writes: appending
        the shards of a run, with its batch size, writes the file the run's one writer writes,
        byte for byte. ``input_magnitudes``: the distinct non-zero input magnitudes ``part``'s
        writer saw (``SpikeWriter.magnitudes``: a ``record="counts"`` file keeps no input to find
        them in)."""
        if part.format != FORMAT or part.layer_order != self.order or part.timesteps != self.timesteps \
                or part.record != self.record or {n: part.shapes[n][2:] for n in self.order} != self.shapes \
                or part.attrs != {**self.attrs, "format": FORMAT, "layer_order": self.order,
                                  "timesteps": self.timesteps, "samples": part.samples}:
            raise ValueError(f"{part.path}: another recording's layout (layers, shapes, T, record or attributes)")
        if self.input_shape is None:
            self._start_input(part.input_shape, part.input.dtype if part.input is not None else np.uint8)
        elif part.input_shape != self.input_shape:
            raise ValueError(f"{part.path}: input {part.input_shape}, this file's {self.input_shape}")
        extra = {what: getattr(part, what) for what in ("labels", "predictions")}
        for what, arr in extra.items():
            if self.has[what] is not None and self.has[what] != (arr is not None):
                raise ValueError(f"{what} must be given in every part or in none")
            self.has[what] = arr is not None
        layers = {n: part._f["layers"][n] for n in self.full}
        for a in range(0, part.samples, batch):
            z = min(a + batch, part.samples)
            s0, s1 = self.samples, self.samples + z - a
            for n, src in layers.items():
                self._ds[n].resize(s1, axis=1)
                self._ds[n][:, s0:s1] = src[:, a:z]
            if "input" in self._f:  # opened per write, as append does: when HDF5 flushes its chunks follows
                self._f["input"].resize(s1, axis=1)
                self._f["input"][:, s0:s1] = part.input[:, a:z]
            for what, arr in extra.items():
                if arr is not None:
                    if what not in self._f:
                        self._f.create_dataset(what, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
                    self._f[what].resize(s1, axis=0)
                    self._f[what][s0:s1] = arr[a:z].astype(np.int64)
            self.samples = s1
        for n in self.order:
            self.counts[n] += part.layer_counts(n)
        self.input_nz += part.input_nonzero()
        self.magnitudes = nonzero_magnitudes(np.concatenate([self.magnitudes, np.asarray(input_magnitudes, float)]))

    def close(self) -> Path:
        if self.samples < 1:
            self.abort()
            raise ValueError("input has samples=0: append at least one batch before closing")
        f = self._f
        attrs = {**self.attrs, "format": FORMAT, "layer_order": self.order, "timesteps": self.timesteps,
                 "samples": self.samples}
        try:
            attrs_json = json.dumps(attrs, sort_keys=True)
        except TypeError as e:
            self.abort()
            raise ValueError(f"attrs must be JSON-serialisable: {e}") from None
        try:
            for n in self.full:
                f["layers"][n].attrs["packed_shape"] = json.dumps([self.timesteps, self.samples, *self.shapes[n]])
            g = f.create_group("counts")
            for n in self.order:
                g.create_dataset(n, data=self.counts[n], compression="gzip", compression_opts=1)
            f.create_dataset("input_nonzero", data=self.input_nz, compression="gzip", compression_opts=1)
            f.attrs.update(format=FORMAT, backend=self.attrs["backend"], layer_order=json.dumps(self.order),
                           timesteps=self.timesteps, samples=self.samples, attrs_json=attrs_json,
                           record=json.dumps(self.record),
                           layer_shapes=json.dumps({n: list(s) for n, s in self.shapes.items()}),
                           input_shape=json.dumps(list(self.input_shape)),
                           input_events=bool(len(self.magnitudes) <= 1))
        except BaseException:
            self._file.check()  # a full disk is the cause: say so
            self.abort()
            raise
        self._file.commit()  # close, fsync, rename; a full disk: UserError, temporary file removed
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing appears at ``path``)."""
        self._file.abort()


def write_spikes(path: str | os.PathLike, *, layers: dict[str, np.ndarray], input: np.ndarray,
                 labels: np.ndarray | None, predictions: np.ndarray | None, attrs: dict,
                 record="spikes") -> Path:
    """Write a whole recording to ``path`` (HDF5, atomic) in one batch; see ``SpikeWriter``.

    ``attrs`` must name the ``backend`` (str); it may give ``layer_order`` (a permutation of
    the layer names; default: the dict order). Values must be JSON-serialisable.
    Raises ValueError for arrays that break ``[T, samples, ...]``, non-binary spikes or
    unusable attributes.
    """
    t, _ = _check_layout(layers, input, labels, predictions)
    _input_array(input)
    spikes = {name: _binary_u8(name, a) for name, a in layers.items()}
    try:
        json.dumps(dict(attrs), sort_keys=True)
    except TypeError as e:
        raise ValueError(f"attrs must be JSON-serialisable: {e}") from None
    with SpikeWriter(path, layer_shapes={n: a.shape[2:] for n, a in spikes.items()}, timesteps=t,
                     attrs=attrs, record=record) as w:
        w.append(layers=spikes, input=input, labels=labels, predictions=predictions)
    return Path(path)


# -- reading -------------------------------------------------------------------------------


class _PackedLayer:
    """A packed ``/layers/<name>`` dataset read as uint8 0/1 ``[T, S, *shape]``: index it with
    ``[t, s0:s1]`` or ``[:, s0:s1]`` (an int or a slice for each of the first two axes)."""

    def __init__(self, ds, shape: tuple[int, ...]):
        self.ds, self.shape, self.dtype, self.ndim = ds, shape, np.dtype(np.uint8), len(shape)
        self.n = int(np.prod(shape[2:]))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 2 or any(not isinstance(k, (int, np.integer, slice)) for k in key):
            raise IndexError("a packed layer is indexed by [t] or [t, samples] (ints or slices) only")
        raw = self.ds[key]
        out = np.unpackbits(raw, axis=-1, count=self.n)
        return out.reshape(*raw.shape[:-1], *self.shape[2:])

    def __array__(self, dtype=None, copy=None):
        a = self[:, :]
        return a if dtype is None else a.astype(dtype)


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


class SpikeFile:
    """An open spike file (either layout), read chunk by chunk; a context manager.

    Same counting interface as ``SpikeRecording`` (``timesteps``, ``samples``, ``layer_order``,
    ``layer_shape``, ``has_spikes``, ``layer_counts``, ``input_nonzero``, ``input_events``), plus
    ``layers`` (name → indexable uint8 0/1 ``[T, S, ...]`` view, recorded layers only),
    ``input`` (an h5py dataset, or None for a counts-only file), ``labels``, ``predictions``,
    ``attrs``, ``record``. Only what is asked for is read.
    """

    def __init__(self, path: str | os.PathLike, chunk: int = 256):
        import h5py

        from htakl_deploy.readers import check_h5, describe_missing

        p = self.path = Path(path)
        self.chunk = chunk
        if not p.is_file():
            raise describe_missing(p, "", "spike file", f"an HDF5 '{FORMAT}' recording")
        # no external links/storage (a recording cannot make us read other files), no dataset larger
        # than the file holds; the spikes and the input are read block by block
        check_h5(p, streamed=("layers", "input"))
        try:
            self._f = f = h5py.File(p, "r")
        except Exception as e:
            raise UserError(f"{p}: not a readable '{FORMAT}' HDF5 file (corrupt or truncated?): "
                            f"{type(e).__name__}: {e}") from None
        try:
            self._open(f)
        except UserError:
            f.close()
            raise
        except Exception as e:  # h5py: OSError / KeyError / ValueError on corrupt or truncated files
            f.close()
            raise UserError(f"{p}: not a readable '{FORMAT}' HDF5 file (corrupt or truncated?): "
                            f"{type(e).__name__}: {e}") from None

    def _open(self, f) -> None:
        p = self.path
        fmt = _decode(f.attrs.get("format"))
        if fmt not in READABLE:
            raise UserError(f"{p}: not a spike recording (format attribute {fmt!r}, expected "
                            f"{FORMAT_V1!r} or {FORMAT!r})")
        self.format = fmt
        for key in ("attrs_json", "layer_order"):
            if key not in f.attrs:
                raise UserError(f"{p}: spike recording lacks the {key!r} attribute")
        self.attrs = json.loads(f.attrs["attrs_json"])
        self.layer_order = order = json.loads(f.attrs["layer_order"])
        if fmt == FORMAT_V1:
            if "input" not in f or "layers" not in f:
                raise UserError(f"{p}: spike recording lacks the 'input' dataset or the 'layers' group")
            missing = [n for n in order if n not in f["layers"]]
            if missing:
                raise UserError(f"{p}: layer(s) {missing} listed in layer_order but not stored under /layers")
            self.record = "spikes"
            self.layers = {n: f["layers"][n] for n in order}
            for n, ds in self.layers.items():
                if ds.dtype != np.uint8:
                    raise UserError(f"{p}: layer {n!r} must hold uint8 0/1 spikes, got dtype {ds.dtype}")
            self.shapes = {n: tuple(ds.shape) for n, ds in self.layers.items()}
            self.input = f["input"]
            self.timesteps, self.samples = (int(v) for v in self.input.shape[:2])
            self._input_events = None
        else:
            self.record = json.loads(f.attrs["record"])
            self.timesteps, self.samples = int(f.attrs["timesteps"]), int(f.attrs["samples"])
            shapes = json.loads(f.attrs["layer_shapes"])
            self.shapes = {n: (self.timesteps, self.samples, *shapes[n]) for n in order}
            full = order if self.record == "spikes" else [] if self.record == "counts" else self.record
            missing = [n for n in order if n not in f["counts"]] + [n for n in full if n not in f["layers"]]
            if missing:
                raise UserError(f"{p}: layer(s) {missing} listed in layer_order but not stored")
            for n in order:  # the attributes' shapes are what readers allocate by: they must be the data's
                if tuple(f["counts"][n].shape) != (self.timesteps, *shapes[n]):
                    raise UserError(f"{p}: layer {n!r}: layer_shapes says {[self.timesteps, *shapes[n]]} per step, "
                                    f"its counts dataset is {list(f['counts'][n].shape)}")
            self.layers = {}
            for n in full:
                ds = f["layers"][n]
                if "packed_shape" in ds.attrs:
                    self.layers[n] = _PackedLayer(ds, tuple(json.loads(ds.attrs["packed_shape"])))
                elif ds.dtype == np.uint8:
                    self.layers[n] = ds
                else:
                    raise UserError(f"{p}: layer {n!r} must hold uint8 0/1 spikes, got dtype {ds.dtype}")
                if tuple(self.layers[n].shape) != self.shapes[n]:
                    raise UserError(f"{p}: layer {n!r} has shape {self.layers[n].shape}, expected {self.shapes[n]}")
            self.input = f["input"] if "input" in f else None
            self.input_shape = tuple(json.loads(f.attrs["input_shape"]))
            if self.input is not None and tuple(self.input.shape) != (self.timesteps, self.samples, *self.input_shape):
                raise UserError(f"{p}: the input dataset is {list(self.input.shape)}, the attributes say "
                                f"{[self.timesteps, self.samples, *self.input_shape]}")
            self._input_events = bool(f.attrs["input_events"])
        if fmt == FORMAT_V1:
            self.input_shape = tuple(self.input.shape[2:])
        self.labels = f["labels"][()] if "labels" in f else None
        self.predictions = f["predictions"][()] if "predictions" in f else None
        for what, arr in (("labels", self.labels), ("predictions", self.predictions)):
            if arr is not None and arr.shape != (self.samples,):
                raise UserError(f"{p}: {what} must have shape [samples={self.samples}], got {arr.shape}")

    def __enter__(self) -> "SpikeFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def _guard(self, what: str, fn):
        try:
            return fn()
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{self.path}: cannot read {what} (corrupt or truncated?): {type(e).__name__}: {e}") from None

    def layer_shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def has_spikes(self, name: str) -> bool:
        return name in self.layers

    def blocks(self, name: str):
        """The layer's spikes ``[T, b, *shape]`` uint8, ``chunk`` samples at a time."""
        src = self.layers[name]
        for s0 in range(0, self.samples, self.chunk):
            block = self._guard(f"layer {name!r}", lambda: np.asarray(src[:, s0:s0 + self.chunk]))
            if block.size and block.max() > 1:
                raise UserError(f"{self.path}: layer {name!r} must hold uint8 0/1 spikes, found {block.max()}")
            yield block

    def layer_counts(self, name: str) -> np.ndarray:
        if self.format == FORMAT:
            return self._guard(f"counts of {name!r}", lambda: self._f["counts"][name][()].astype(np.int64))
        total = np.zeros((self.timesteps, *self.shapes[name][2:]), np.int64)
        for block in self.blocks(name):
            total += block.sum(axis=1, dtype=np.int64)
        return total

    def input_blocks(self):
        for s0 in range(0, self.samples, self.chunk):
            yield self._guard("input", lambda: np.asarray(self.input[:, s0:s0 + self.chunk]))

    def input_nonzero(self) -> np.ndarray:
        if self.format == FORMAT:
            return self._guard("input_nonzero", lambda: self._f["input_nonzero"][()].astype(np.int64))
        total = np.zeros((self.timesteps, *self.input_shape), np.int64)
        for block in self.input_blocks():
            total += (block != 0).sum(axis=1, dtype=np.int64)
        return total

    def input_events(self) -> bool:
        if self._input_events is None:
            mags = np.zeros(0)
            for block in self.input_blocks():
                mags = nonzero_magnitudes(np.concatenate([mags, nonzero_magnitudes(block)]))
            self._input_events = len(mags) <= 1
        return self._input_events


def open_spikes(path: str | os.PathLike, chunk: int = 256) -> SpikeFile:
    """Open a spike file for chunked reading; every problem is a one-line UserError."""
    return SpikeFile(path, chunk)


def read_spikes(path: str | os.PathLike) -> SpikeRecording:
    """Load a whole recording with full spikes of every layer (small files; ``open_spikes``
    reads chunk by chunk). Every problem is a one-line UserError."""
    with open_spikes(path) as f:
        if f.input is None or len(f.layers) != len(f.layer_order):
            raise UserError(f"{f.path}: recorded with --record {f.record!r}: not every layer's spikes are "
                            "stored; read it with energy.spikefile.open_spikes (counts)")
        layers = {n: np.concatenate(list(f.blocks(n)), axis=1) for n in f.layer_order}
        x = f._guard("input", lambda: f.input[()])
        try:
            return SpikeRecording(layers, x, f.labels, f.predictions, f.attrs)
        except ValueError as e:
            raise UserError(f"{f.path}: {e}") from None


def record_float(graph, x_tb) -> dict[str, np.ndarray]:
    """Spikes of every LIF node of ``graph`` (a StudentGraph) run in floating point on
    ``x_tb`` ``[T, B, *input_shape]``: node name → uint8 ``[T, B, ...]``, in graph order.

    Uses ``export.graph.run_float(record=True)`` (float64, SpikingJelly's LIF): the values a
    LIF node emits are its spikes. Pass the result as ``layers=`` to ``write_spikes`` with
    ``attrs={'backend': 'torch-float', ...}``.
    """
    from htakl_deploy.export.graph import NeuronNode, run_float

    _, vals = run_float(graph, x_tb, record=True)
    return {name: vals[name].detach().cpu().numpy().astype(np.uint8)
            for name, node in graph.nodes.items() if isinstance(node, NeuronNode)}
