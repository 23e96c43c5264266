"""The user's own inputs (``--input FILE`` of ``simulate``, ``run --from-nir`` and ``export``, and
``export --calibration FILE``): arrays on disk, or event recordings read with tonic.

An ``Inputs`` object is what every consumer streams over: ``len(inputs)`` samples, ``timesteps``
steps each, ``batch(s0, s1)`` → float64 ``[T, b, *shape]`` and ``labels`` (``[N]`` int64, or None).
Samples are read batch by batch (``.npy`` memory-mapped, ``.h5`` sliced), so a long file is never
held whole.

Files (``open_inputs``):

- ``.npy``: one array (``allow_pickle=False``: no code runs from a data file);
- ``.npz``: the array ``inputs`` (or the one array not named ``labels``), labels optional in
  ``labels``;
- ``.h5`` / ``.hdf5``: the dataset ``inputs`` (or the one dataset not named ``labels``), labels
  optional in ``labels``; no external links or storage, no dataset larger than the file holds
  (``readers.check_h5``; ``.npy``/``.npz`` headers likewise: ``check_npy``/``check_npz``);
- a folder of N-MNIST-format ``.bin`` event recordings (the format of N-MNIST and N-Caltech101),
  read with tonic's own reader (``tonic.io.read_mnist_file``) and binned with tonic's
  ``ToFrame`` into 1 ms frames ``[T, 2, 34, 34]`` (polarity, y, x; the NIR paper's N-MNIST binning);
  a sample's label is the integer name of its folder (N-MNIST's ``Test/<digit>/``), if it is one.
  tonic is an optional dependency (``pip install 'htakl-deploy[events]'``; ``make install`` has it).

Layout ``[T, B, *shape]`` (event frames, or any sequence: T comes from the data) or ``[B, *shape]``
(a static input shown at every step: direct encoding; T from ``--timesteps`` or the artefact).
Values: finite and >= 0; either analog in [0, 1] (the first layer takes 8-bit values
``round(255·x)``) or event counts — whole numbers up to ``MAX_COUNT`` per bin (a count ``c`` enters
as ``255·c``: several events in one bin are handled exactly; more than ``MAX_COUNT`` is refused:
bin finer). Anything else is a one-line ``UserError`` naming the file, before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from htakl_deploy.errors import UserError
from htakl_deploy.export.quantize import MAX_COUNT  # events per bin and input: a count c enters as 255·c

ARRAY_KEY = "inputs"
LABEL_KEY = "labels"
SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")
CHECK_CHUNK_BYTES = 64 << 20  # the validation pass reads this much at a time
EVENT_BIN_US = 1000  # tonic ToFrame time window for event folders (1 ms, as the NIR paper binned N-MNIST)
NMNIST_SENSOR = (34, 34, 2)  # tonic.datasets.NMNIST.sensor_size (x, y, polarity)


@dataclass(eq=False)
class Inputs:
    """Samples to run (see the module docstring). ``source`` names them in messages and reports;
    ``kind`` is ``"analog"`` (values in [0, 1]) or ``"events"`` (whole-number counts);
    ``max_value`` bounds the values (an event folder's: ``MAX_COUNT``, checked as it is read)."""

    source: str
    shape: tuple[int, ...]
    timesteps: int
    labels: np.ndarray | None
    kind: str
    max_value: float
    _read: Any = field(repr=False)  # (s0, s1) -> [T, b, *shape] or [b, *shape]
    _static: bool = False
    _n: int = 0
    _close: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return self._n

    def batch(self, s0: int, s1: int) -> np.ndarray:
        """Samples ``s0:s1`` as float64 ``[T, b, *shape]`` (a fresh, writable array)."""
        x = np.array(self._read(s0, min(s1, self._n)), dtype=np.float64)
        return np.repeat(x[None], self.timesteps, axis=0) if self._static else x

    def head(self, n: int) -> "Inputs":
        """The first ``n`` samples (all if fewer)."""
        n = min(int(n), self._n)
        labels = None if self.labels is None else self.labels[:n]
        return Inputs(self.source, self.shape, self.timesteps, labels, self.kind, self.max_value, self._read,
                      self._static, n, self._close)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_input_file(source: str | os.PathLike) -> bool:
    """Whether ``source`` names an input file or event folder (else: a data set name)."""
    p = Path(source)
    return p.suffix.lower() in SUFFIXES or p.is_dir()


def open_inputs(path: str | os.PathLike, in_shape: tuple[int, ...], *, timesteps: int | None = None,
                default_timesteps: int = 4, flag: str = "--input") -> Inputs:
    """The inputs in ``path`` for a network taking ``in_shape`` (module docstring). ``timesteps``:
    the user's ``--timesteps`` (the T of a static file; must match a sequence file's T);
    ``default_timesteps``: a static file's T without it. UserError naming ``flag`` and the file."""
    from htakl_deploy.readers import describe_missing

    p = Path(path)
    where = f"{flag} {p}"
    in_shape = tuple(int(s) for s in in_shape)
    if p.is_dir():
        return _event_folder(p, in_shape, timesteps, where)
    if p.suffix.lower() not in SUFFIXES:
        raise UserError(f"{where}: expected a {', '.join(SUFFIXES)} file or a folder of event recordings")
    if not p.is_file():
        raise describe_missing(p, flag, "input file")
    x, labels, close = _open_array(p, where)
    try:
        return _checked(x, labels, close, in_shape, timesteps, default_timesteps, where, str(p))
    except BaseException:
        if close is not None:
            close()
        raise


def _open_array(p: Path, where: str):
    """(array-like, labels or None, close or None) of a file; UserError for unreadable files."""
    from htakl_deploy.readers import check_h5, check_npy, check_npz

    suffix = p.suffix.lower()
    label = where.split(" ")[0]
    try:
        if suffix == ".npy":
            check_npy(p, label)  # a header that declares more than the file holds is named as such
            return np.load(p, mmap_mode="r", allow_pickle=False), None, None
        if suffix == ".npz":
            check_npz(p, label)
            with np.load(p, allow_pickle=False) as z:
                key = _pick(list(z.files), where)
                return z[key], (z[LABEL_KEY] if LABEL_KEY in z.files else None), None
        import h5py

        check_h5(p, label, streamed=("/",))  # no links out, no lying sizes; inputs are read batch by batch
        f = h5py.File(p, "r")
        try:
            sets = [k for k in f if isinstance(f[k], h5py.Dataset)]
            key = _pick(sets, where)
            labels = f[LABEL_KEY][()] if LABEL_KEY in sets else None
            return f[key], labels, f.close
        except BaseException:
            f.close()
            raise
    except UserError:
        raise
    except Exception as e:  # numpy/h5py raise ValueError/OSError/KeyError on bad files
        raise UserError(f"{where}: not a readable input array: {type(e).__name__}: {str(e)[:160]}") from None


def _pick(keys: list[str], where: str) -> str:
    if ARRAY_KEY in keys:
        return ARRAY_KEY
    rest = [k for k in keys if k != LABEL_KEY]
    if len(rest) != 1:
        raise UserError(f"{where}: expected one array of inputs (or one named {ARRAY_KEY!r}, labels optional in "
                        f"{LABEL_KEY!r}), found {sorted(keys)}")
    return rest[0]


def _checked(x, labels, close, in_shape, timesteps, default_timesteps, where, source) -> Inputs:
    dtype = np.dtype(getattr(x, "dtype", object))
    if dtype.kind not in "biuf":
        raise UserError(f"{where}: holds {dtype} values, expected real numbers")
    shape = tuple(int(s) for s in x.shape)
    n = len(in_shape)
    dims = ", ".join(map(str, in_shape))
    if len(shape) not in (n + 1, n + 2):
        raise UserError(f"{where}: shape {shape}, expected [T, B, {dims}] (sequences) or [B, {dims}] (static)")
    if shape[-n:] != in_shape:
        raise UserError(f"{where}: inputs are {shape[-n:]}, the network's input is {in_shape}")
    static = len(shape) == n + 1
    samples = shape[0] if static else shape[1]
    t_data = None if static else shape[0]
    if samples < 1 or t_data == 0:
        raise UserError(f"{where}: no inputs (shape {shape})")
    if not static and timesteps is not None and timesteps != t_data:
        raise UserError(f"--timesteps {timesteps}: {where} holds sequences of T = {t_data} steps (T comes from the "
                        "data; leave --timesteps out)")
    read = (lambda s0, s1: x[s0:s1]) if static else (lambda s0, s1: x[:, s0:s1])
    kind, hi = _check_values(read, samples, int(np.prod(shape)) // samples * dtype.itemsize, dtype, where)
    if labels is not None:
        labels = _check_labels(np.asarray(labels), samples, where)
    t = t_data if t_data is not None else int(timesteps or default_timesteps)
    return Inputs(source, in_shape, t, labels, kind, hi, read, static, samples, close)


def _check_values(read, samples: int, bytes_per_sample: int, dtype: np.dtype, where: str) -> str:
    """One pass over the file, ``CHECK_CHUNK_BYTES`` at a time: finite, >= 0, and either in [0, 1]
    or whole numbers up to ``MAX_COUNT``. Returns (``"analog"`` or ``"events"``, the largest value)."""
    step = max(1, CHECK_CHUNK_BYTES // max(bytes_per_sample, 1))
    lo, hi, whole = np.inf, -np.inf, True
    for s0 in range(0, samples, step):
        c = np.asarray(read(s0, min(s0 + step, samples)))
        if dtype.kind == "f" and not np.isfinite(c).all():
            raise UserError(f"{where}: holds NaN or infinite values")
        if c.size:
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
            whole = whole and (dtype.kind in "biu" or bool(np.all(c == np.round(c))))
    if lo < 0:
        raise UserError(f"{where}: holds negative values (minimum {lo:.4g}); inputs are analog values in [0, 1] "
                        "or event counts >= 0")
    if hi <= 1:
        return ("events" if whole else "analog"), max(hi, 0.0)
    if not whole:
        raise UserError(f"{where}: values span [{lo:.4g}, {hi:.4g}], expected analog values in [0, 1] (8-bit: "
                        f"round(255·x)) or whole-number event counts up to {MAX_COUNT} per bin")
    if hi > MAX_COUNT:
        raise UserError(f"{where}: up to {hi:.0f} events in one bin of one input, more than {MAX_COUNT} (a count c "
                        f"enters the first layer as 255·c in 16 bits): bin the events more finely")
    return "events", hi


def _check_labels(labels: np.ndarray, samples: int, where: str) -> np.ndarray:
    if labels.shape != (samples,):
        raise UserError(f"{where}: labels have shape {labels.shape}, expected [{samples}] (one per sample)")
    if labels.dtype.kind not in "biuf" or (labels.dtype.kind == "f" and not np.all(np.isfinite(labels))) \
            or not np.all(labels == np.round(labels)) or (labels.size and labels.min() < 0):
        raise UserError(f"{where}: labels must be whole numbers >= 0 (class indices)")
    return labels.astype(np.int64)


# -- event recordings, read with tonic -----------------------------------------------------


def _event_folder(p: Path, in_shape: tuple[int, ...], timesteps: int | None, where: str) -> Inputs:
    """N-MNIST-format ``.bin`` files under ``p`` (sorted), binned into 1 ms frames with tonic."""
    try:
        import tonic.io
        import tonic.transforms
    except ImportError:
        raise UserError(f"{where}: reading event recordings needs tonic (pip install 'htakl-deploy[events]')") from None
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".bin" and f.is_file())
    if not files:
        raise UserError(f"{where}: no event recordings (N-MNIST-format .bin files) in this folder")
    sensor = NMNIST_SENSOR
    want = (sensor[2], sensor[1], sensor[0])
    if in_shape != want:
        raise UserError(f"{where}: N-MNIST-format recordings are frames {want} (polarity, y, x), the network's "
                        f"input is {in_shape}")
    dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])

    def events(f: Path) -> np.ndarray:
        try:
            ev = tonic.io.read_mnist_file(str(f), dtype=dtype)
        except Exception as e:
            raise UserError(f"{where}: {f.name} is not an N-MNIST-format recording: {type(e).__name__}: {e}") from None
        bad = (ev["x"] >= sensor[0]) | (ev["y"] >= sensor[1]) | (ev["x"] < 0) | (ev["y"] < 0)
        if bad.any():
            raise UserError(f"{where}: {f.name} has events outside the {sensor[0]}×{sensor[1]} sensor")
        return np.sort(ev, order="t", kind="stable")  # ToFrame slices by time with a binary search

    durations = [int(ev["t"].max()) + 1 if len(ev) else 0 for ev in map(events, files)]
    t = timesteps or max(1, -(-max(durations) // EVENT_BIN_US))
    labels = [f.parent.name for f in files]
    labels_arr = np.array([int(s) for s in labels], np.int64) if all(s.isdigit() for s in labels) else None

    def read(s0: int, s1: int) -> np.ndarray:
        out = np.zeros((t, s1 - s0, *want), np.float64)
        for j, f in enumerate(files[s0:s1]):
            ev = events(f)
            ev = ev[ev["t"] < t * EVENT_BIN_US]
            if len(ev):
                frames = tonic.transforms.ToFrame(sensor_size=sensor, time_window=EVENT_BIN_US, start_time=0,
                                                  end_time=t * EVENT_BIN_US, include_incomplete=True)(ev)
                out[:min(t, len(frames)), j] = frames[:t]
        if out.max(initial=0) > MAX_COUNT:
            raise UserError(f"{where}: more than {MAX_COUNT} events in one 1 ms bin of one pixel")
        return out

    return Inputs(str(p), in_shape, int(t), labels_arr, "events", float(MAX_COUNT), read, False, len(files))


def from_dataset(ds, timesteps: int) -> Inputs:
    """A named data set's split (``ArrayDataset``) as ``Inputs``: its images shown at every step
    (direct encoding), its labels."""
    import torch

    return Inputs(ds.name, tuple(int(s) for s in ds.in_shape), int(timesteps), ds.labels.numpy().astype(np.int64),
                  "analog", 1.0, lambda s0, s1: ds.batch(torch.arange(s0, s1))[0].numpy(), True, len(ds))
