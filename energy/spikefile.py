"""The spike recording file: the contract between a simulator and the energy counter.

One HDF5 file (h5py), written atomically (temporary file in the same folder, then
``os.replace``). Every array is laid out ``[T, samples, ...]``:

    /input                 [T, S, C, H, W]   what the first layer received at each step:
                                             float32 (analog pixels, direct encoding), or an
                                             integer / uint8 array (fixed-point input, Poisson
                                             spikes); repeated over T for direct encoding
    /layers/<node name>    [T, S, *shape]    uint8 0/1 spikes of every LIF node, named as in
                                             the StudentGraph (e.g. "stage1.act", dots are fine);
                                             conv layers in torch order (C, H, W)
    /labels                [S]  int64        optional
    /predictions           [S]  int64        optional
    file attributes:       format = "htakl-spikes/1", backend (e.g. "lava-fixed_pt",
                           "emulator", "torch-float"), layer_order (JSON list of names),
                           timesteps, samples, attrs_json (every attribute the writer was
                           given, JSON-encoded so that it reads back exactly)

Step ``t`` of a sample is step ``t`` of that sample for every layer: a simulator whose layers
lag (Lava adds one step per Dense/Conv hop) realigns before writing.

``read_spikes`` turns a missing, corrupt, truncated or foreign file into a ``UserError`` that
names the file and what was expected; ``write_spikes`` raises ``ValueError`` on arrays that
break the layout (a programming error in the caller, not a user mistake).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from htakl_deploy.atomic import atomic_path
from htakl_deploy.errors import UserError

FORMAT = "htakl-spikes/1"
_RESERVED = ("format", "layer_order", "timesteps", "samples")


def _check_layout(layers: dict, input_tb, labels, predictions) -> tuple[int, int]:
    """Raise ValueError unless every array follows ``[T, samples, ...]``; return (T, samples)."""
    x = np.asarray(input_tb)
    if x.ndim < 3:
        raise ValueError(f"input must be [T, samples, ...features], got shape {x.shape}")
    t, s = x.shape[:2]
    if t < 1 or s < 1:
        raise ValueError(f"input has T={t}, samples={s}: both must be >= 1")
    if not layers:
        raise ValueError("layers is empty: record the spikes of every LIF node")
    for name, arr in layers.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"layer name {name!r} must be a non-empty string without '/'")
        a = np.asarray(arr)
        if a.ndim < 3 or a.shape[:2] != (t, s):
            raise ValueError(f"layer {name!r} has shape {a.shape}, expected [T={t}, samples={s}, ...]")
    for what, arr in (("labels", labels), ("predictions", predictions)):
        if arr is not None and np.asarray(arr).shape != (s,):
            raise ValueError(f"{what} must have shape [samples={s}], got {np.asarray(arr).shape}")
    return t, s


def _binary_u8(name: str, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"layer {name!r}: spikes must be numeric or bool, got dtype {a.dtype}")
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"layer {name!r}: spikes must be 0/1, found other values")
    return a.astype(np.uint8)


@dataclass(frozen=True, eq=False)
class SpikeRecording:
    """Spikes of every LIF layer plus the input, all ``[T, samples, ...]`` (checked here).

    ``layers``: node name → uint8 0/1 array, in ``attrs['layer_order']``; ``input``: the
    first layer's input; ``labels`` / ``predictions``: ``[samples]`` or None; ``attrs``:
    ``format``, ``backend``, ``layer_order`` and whatever else the writer stored.
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


def write_spikes(path: str | os.PathLike, *, layers: dict[str, np.ndarray], input: np.ndarray,
                 labels: np.ndarray | None, predictions: np.ndarray | None, attrs: dict) -> Path:
    """Write a recording to ``path`` (HDF5, atomic). See the module docstring for the layout.

    ``attrs`` must name the ``backend`` (str); it may give ``layer_order`` (a permutation of
    the layer names; default: the dict order). Values must be JSON-serialisable.
    Raises ValueError for arrays that break ``[T, samples, ...]``, non-binary spikes or
    unusable attributes.
    """
    import h5py

    t, s = _check_layout(layers, input, labels, predictions)
    attrs = dict(attrs)
    if not isinstance(attrs.get("backend"), str) or not attrs["backend"]:
        raise ValueError("attrs['backend'] must name the simulator, e.g. 'lava-fixed_pt', 'emulator', 'torch-float'")
    if attrs.get("format", FORMAT) != FORMAT:
        raise ValueError(f"attrs['format'] must be {FORMAT!r} if given, got {attrs['format']!r}")
    order = list(attrs.get("layer_order", list(layers)))
    if sorted(order) != sorted(layers) or len(set(order)) != len(order):
        raise ValueError(f"attrs['layer_order'] {order} must list each layer exactly once ({sorted(layers)})")
    attrs.update(format=FORMAT, layer_order=order, timesteps=t, samples=s)
    try:
        attrs_json = json.dumps(attrs, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"attrs must be JSON-serialisable: {e}") from None

    x = np.asarray(input)
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    elif not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input must be float, integer or bool, got dtype {x.dtype}")
    spikes = {name: _binary_u8(name, layers[name]) for name in order}

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["backend"] = attrs["backend"]
            f.attrs["layer_order"] = json.dumps(order)
            f.attrs["timesteps"] = t
            f.attrs["samples"] = s
            f.attrs["attrs_json"] = attrs_json
            f.create_dataset("input", data=x, compression="gzip", compression_opts=1)
            g = f.create_group("layers")
            for name, a in spikes.items():
                g.create_dataset(name, data=a, compression="gzip", compression_opts=1)
            for what, arr in (("labels", labels), ("predictions", predictions)):
                if arr is not None:
                    f.create_dataset(what, data=np.asarray(arr).astype(np.int64))
    return Path(path)


def read_spikes(path: str | os.PathLike) -> SpikeRecording:
    """Read a recording written by ``write_spikes``; every problem is a one-line UserError."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such spike file (expected an HDF5 '{FORMAT}' recording)")
    try:
        with h5py.File(p, "r") as f:
            fmt = f.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt != FORMAT:
                raise UserError(f"{p}: not a spike recording (format attribute {fmt!r}, expected {FORMAT!r})")
            for key in ("attrs_json", "layer_order"):
                if key not in f.attrs:
                    raise UserError(f"{p}: spike recording lacks the {key!r} attribute")
            attrs = json.loads(f.attrs["attrs_json"])
            order = json.loads(f.attrs["layer_order"])
            if "input" not in f or "layers" not in f:
                raise UserError(f"{p}: spike recording lacks the 'input' dataset or the 'layers' group")
            missing = [n for n in order if n not in f["layers"]]
            if missing:
                raise UserError(f"{p}: layer(s) {missing} listed in layer_order but not stored under /layers")
            layers = {n: f["layers"][n][()] for n in order}
            x = f["input"][()]
            labels = f["labels"][()] if "labels" in f else None
            predictions = f["predictions"][()] if "predictions" in f else None
    except UserError:
        raise
    except Exception as e:  # h5py: OSError / KeyError / ValueError on corrupt or truncated files
        raise UserError(f"{p}: not a readable '{FORMAT}' HDF5 file (corrupt or truncated?): "
                        f"{type(e).__name__}: {e}") from None
    for name, a in layers.items():
        if a.dtype != np.uint8 or (a.size and a.max() > 1):
            raise UserError(f"{p}: layer {name!r} must hold uint8 0/1 spikes, got dtype {a.dtype}")
    try:
        return SpikeRecording(layers, x, labels, predictions, attrs)
    except ValueError as e:
        raise UserError(f"{p}: {e}") from None


def record_float(graph, x_tb) -> dict[str, np.ndarray]:
    """Spikes of every LIF node of ``graph`` (a StudentGraph) run in floating point on
    ``x_tb`` ``[T, B, *input_shape]``: node name → uint8 ``[T, B, ...]``, in graph order.

    Uses ``export.graph.run_float(record=True)`` (float64, SpikingJelly's LIF): the values a
    LIF node emits are its spikes. Pass the result as ``layers=`` to ``write_spikes`` with
    ``attrs={'backend': 'torch-float', ...}``.
    """
    from htakl_deploy.export.graph import LIFNode, run_float

    _, vals = run_float(graph, x_tb, record=True)
    return {name: vals[name].detach().cpu().numpy().astype(np.uint8)
            for name, node in graph.nodes.items() if isinstance(node, LIFNode)}
