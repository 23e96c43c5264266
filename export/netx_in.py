"""Reading lava-dl netx HDF5 files (``read_netx``): the network Loihi users ship, as our graph.

A netx file (lava-dl 0.6.0, ``netx/hdf5.py`` reads it, slayer's ``export_hdf5`` writes it) is a
chain of layers ``layer/{i}``, each a group with a ``type`` string, a ``shape`` (C, H, W) or (N,),
weights and a ``neuron`` group. ``read_netx(path)`` returns the same type our NIR reader gives
for a quantised file — a ``QuantizedGraph`` (``export.quantize``) whose connections and targets
are the file's integers and whose float graph holds the same numbers in Lava's floating_pt units
(``export/nodes/loihi_cuba.py``) — so every subcommand that takes a NIR file takes a netx file
through the same path (``export.nir_in.load_nir_graph``).

Layers, one reader each (``LAYER_READERS``, type string → function):

- ``input``: with a neuron, a population whose bias is the graph's input (Intel's PilotNet LIF:
  ``bias_mant = image``; netx never connects its ``a_in``); without one, the input is the next
  layer's graded input (our own files: 8-bit pixels, ``input_message_bits = 8``). The file's
  scalar ``weight``/``bias`` are netx's input *transform* (applied by the data loader, not by the
  network): kept in ``metadata['input_transform']``.
- ``conv``: ``Conv2dNode`` (torch layout and cross-correlation: netx flips and transposes for
  Lava itself) with stride, padding, dilation (all (H, W)) and groups; weights go to Lava's Conv
  unchanged, so any integers in Loihi's 8-bit range are kept as they are.
- ``dense``: ``DenseNode``; netx gives Lava's Dense ``optimize_weight_bits``' mantissas, exponent
  and weight bits, reproduced here (``netx_dense_weights``) so that Lava keeps the same integers.
- ``flatten``: ``FlattenNode`` (netx flattens Lava's (W, H, C) transposed: torch's C-order).
- ``pool``: slayer's pooling block (a sum pool with one weight per tap, then a neuron), which
  netx 0.6.0 cannot build: a depthwise ``Conv2dNode``; an input size that is not a multiple of
  the kernel is refused (slayer pads such inputs at the bottom/right only).
- anything else (``convT``, ``unpool``, ``average``, ``concat``, ``dense_rec``, ``dense_comp``,
  unknown strings): one ``UserError`` naming the layer and its type.

Neurons, by ``neuron/type`` (``NEURON_FAMILIES``): ``LOIHI``/``CUBA`` → ``LoihiCubaNode``, ``SDNN`` →
``SigmaDeltaNode`` (export/nodes/sigma_delta.py; the input layer's delta encoder takes the input
into its ``a_in``); others (``RF*``) refused naming the layer. The last layer is the graph's output: read
as its ``v`` when it cannot spike (``vThMant`` ≥ 2^17 − 1, PilotNet's steering output), as its
spikes otherwise (``LoihiCubaOutput``).

Everything is checked before a node is built: a missing field, a non-integer or NaN weight, a
shape that does not follow from the previous layer, a bias beyond Loihi's 13 bits → one line
naming the file and the layer.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from htakl_deploy.errors import UserError
from htakl_deploy.export.graph import StudentGraph
from htakl_deploy.export.nodes.conv import Conv2dNode
from htakl_deploy.export.nodes.dense import DenseNode
from htakl_deploy.export.nodes.flatten import FlattenNode
from htakl_deploy.export.nodes.io import InputNode
from htakl_deploy.export.nodes.loihi_cuba import LoihiCubaNode, LoihiCubaOutput
from htakl_deploy.export.quantize import QuantConnection, QuantizedGraph, QuantTarget

FORMAT = "lava-dl-netx"
NEVER_FIRES_VTH = 2**17 - 1  # v > vth << 6 needs v above 2^23 - 64: a readout (netx's default: 2^17)
BIAS_MANT_MAX = 4095  # Lava's LIF bias_mant is 13-bit signed
NETX_INPUT_SCALE = 1.0  # a netx network takes integers (biases, spikes, graded values): used as they are


class NetxError(UserError):
    """A netx file or layer we cannot read (one line, exit 2)."""


# -- reading the HDF5 groups -------------------------------------------------------------------


def _value(ds):
    v = ds[()]
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.size == 1:
        v = v.reshape(-1)[0]
    return v.decode("ascii", "replace") if isinstance(v, bytes) else v


class _Layer:
    """One ``layer/{i}`` group read into plain values, with errors naming the layer."""

    def __init__(self, path: Path, index: int, group):
        import h5py

        self.path, self.index = path, index
        self.fields = {k: _value(group[k]) for k in group if isinstance(group[k], h5py.Dataset)}
        self.neuron = None
        if "neuron" in group and isinstance(group["neuron"], h5py.Group):
            self.neuron = {k: _value(v) for k, v in group["neuron"].items() if isinstance(v, h5py.Dataset)}
        self.type = str(self.fields.get("type", ""))

    def error(self, what: str) -> NetxError:
        return NetxError(f"{self.path}: layer {self.index} ({self.type or 'no type'}): {what}")

    def get(self, key: str, *, required: bool = True, default=None):
        if key not in self.fields:
            if required:
                raise self.error(f"missing dataset {key!r}")
            return default
        return self.fields[key]

    def ints(self, key: str, *, required: bool = True, default=None, ndim: int | None = None,
             warnings: list[str] | None = None) -> np.ndarray | None:
        """An integer array (floats holding integers, as slayer writes them); NetxError otherwise.
        With ``warnings`` (weights, biases), fractions are truncated toward zero as lava-dl's netx
        does (``NetDict``: ``astype(int)``) and the truncation is reported there."""
        raw = self.get(key, required=required, default=default)
        if raw is None:
            return None
        a = np.asarray(raw)
        if a.dtype.kind not in "biuf" or a.size == 0:
            raise self.error(f"{key!r} must be numbers, got {a.dtype} {a.shape}")
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                raise self.error(f"{key!r} holds NaN or infinite values")
            if np.abs(a).max(initial=0) >= 2**31:
                raise self.error(f"{key!r} holds values beyond 32 bits")
            if not np.array_equal(a, np.trunc(a)):
                if warnings is None:
                    raise self.error(f"{key!r} must hold integers, got fractions")
                warnings.append(f"layer {self.index} ({self.type}): {int((a != np.trunc(a)).sum())} {key} values have "
                                "fractions, truncated toward zero as lava-dl's netx does")
            a = np.trunc(a)
        a = a.astype(np.int64)
        if ndim is not None and a.ndim != ndim:
            raise self.error(f"{key!r} must have {ndim} dimension(s), got shape {a.shape}")
        return a

    def pair(self, key: str, default) -> tuple[int, int]:
        a = self.ints(key, required=False, default=default).reshape(-1)
        if a.size == 1:
            a = np.repeat(a, 2)
        if a.size != 2:
            raise self.error(f"{key!r} must be one or two integers (H, W), got {a.tolist()}")
        return int(a[0]), int(a[1])

    def shape(self) -> tuple[int, ...]:
        s = tuple(int(v) for v in self.ints("shape").reshape(-1))
        if not s or min(s) < 1:
            raise self.error(f"shape must be positive integers, got {s}")
        return s


# -- neurons ---------------------------------------------------------------------------------


def _loihi_cuba(layer: _Layer, n: dict, bias: np.ndarray, *, last: bool, bias_input: bool = False):
    """A LOIHI/CUBA neuron: (node, QuantTarget fields)."""
    def field(k, default=None):
        if k not in n:
            if default is None:
                raise layer.error(f"neuron lacks {k!r}")
            return default
        v = np.asarray(n[k])
        if v.size != 1 or v.dtype.kind not in "biuf" or not np.isfinite(v).all() or float(v) != int(v):
            raise layer.error(f"neuron {k!r} must be one integer, got {n[k]!r}")
        return int(v.reshape(-1)[0])

    i_decay, v_decay, vth = field("iDecay"), field("vDecay"), field("vThMant")
    ref_delay = field("refDelay", 1)
    if "wgtExp" in n and field("wgtExp") != 0:
        raise layer.error(f"neuron wgtExp = {field('wgtExp')}: lava-dl's netx ignores it (weights reach Lava "
                          "unshifted), so a file relying on it would run differently there; only 0 is read")
    if np.abs(bias).max(initial=0) > 2**15 - 1:  # Lava's int16 bias_mant (netx hands it the file's values)
        raise layer.error(f"bias beyond Lava's 16-bit bias_mant (|bias| < 2^15), got {int(np.abs(bias).max())}")
    cls = LoihiCubaOutput if last else LoihiCubaNode
    extra = {"read": "v" if vth >= NEVER_FIRES_VTH else "spikes"} if last else {}
    try:
        node = cls(i_decay, v_decay, vth, ref_delay, bias.astype(np.float64), bias_input, **extra)
    except ValueError as e:
        raise layer.error(f"neuron: {e}") from None
    return node


def _sdnn(layer: _Layer, n: dict, bias: np.ndarray, *, last: bool, bias_input: bool = False):
    """An SDNN neuron: the input layer's ``Delta``, a hidden ``SigmaDelta``, or the last layer (a
    ``Sigma`` with ``sigma_output``)."""
    from htakl_deploy.export.nodes.sigma_delta import SigmaDeltaNode, SigmaDeltaOutput

    vth = np.asarray(n.get("vThMant", 0))
    if vth.size != 1 or not np.isfinite(vth).all() or float(vth) != int(vth):
        raise layer.error(f"neuron 'vThMant' must be one integer, got {n.get('vThMant')!r}")
    act = n.get("activation", "relu")
    act = act.decode("ascii", "replace") if isinstance(act, bytes) else str(act)
    if act != "relu" and not bias_input:
        raise layer.error(f"SDNN activation {act!r}: lava-dl's netx builds ReLU sigma-delta neurons whatever the "
                          "file says; only 'relu' is read")
    if np.abs(bias).max(initial=0) > BIAS_MANT_MAX:
        raise layer.error(f"bias beyond {BIAS_MANT_MAX} (Loihi's 13-bit bias mantissa)")
    kind = "delta" if bias_input else ("sigma" if bool(np.asarray(n.get("sigma_output", False))) else "sigma_delta")
    cls = SigmaDeltaOutput if last else SigmaDeltaNode
    try:
        return cls(int(vth), bias.astype(np.float64), kind)
    except ValueError as e:
        raise layer.error(f"neuron: {e}") from None


NEURON_FAMILIES: dict[str, Callable] = {"LOIHI": _loihi_cuba, "CUBA": _loihi_cuba, "SDNN": _sdnn}


def _neuron(layer: _Layer, n: dict | None, bias: np.ndarray, *, last: bool, bias_input: bool = False):
    if n is None:  # netx's default for a layer without a neuron: a non-leaky integrator read as v
        n = {"type": "CUBA", "iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17, "refDelay": 1}
    kind = str(n.get("type", ""))
    if isinstance(n.get("type"), bytes):
        kind = n["type"].decode("ascii", "replace")
    fn = NEURON_FAMILIES.get(kind)
    if fn is None:
        raise layer.error(f"neuron type {kind!r} is not supported (supported: {', '.join(NEURON_FAMILIES)})")
    return fn(layer, n, bias, last=last, bias_input=bias_input)


# -- layers ----------------------------------------------------------------------------------


class _Builder:
    """Nodes, edges, connections and targets as the layers are read, in file order."""

    def __init__(self, path: Path):
        self.path = path
        self.nodes: OrderedDict = OrderedDict()
        self.edges: list[tuple[str, str]] = []
        self.conns: list[QuantConnection] = []
        self.targets: dict[str, QuantTarget] = {}
        self.prev: str | None = None  # the node the next layer reads from
        self.shape: tuple[int, ...] | None = None  # its output shape
        self.metadata: dict = {}
        self.warnings: list[str] = []  # what netx itself would do silently (truncated fractions)

    def add(self, name: str, node, shape) -> None:
        self.nodes[name] = node
        if self.prev is not None:
            self.edges.append((self.prev, name))
        self.prev, self.shape = name, tuple(shape)

    def add_neuron(self, layer: _Layer, name: str, node, shape, weight_node: str | None, mant=None, exp: int = 0,
                   bits: int = 8) -> None:
        self.add(name, node, shape)
        if weight_node is None:  # the input layer: the input is its bias (LIF) or its a_in (SDNN's delta)
            self.conns.append(QuantConnection("input", name, True, np.int64(1), 0, 0, 1, 0.0))
        else:
            try:
                self.conns.append(QuantConnection(weight_node, name, False, mant, exp, 0, int(mant.size), 0.0,
                                                  weight_bits=bits))
            except ValueError as e:
                raise layer.error(str(e)) from None
        mant, exp = bias_encoding(layer, node.bias_mant(shape[0]), node.BIAS_EXP)
        self.targets[name] = QuantTarget(name, max(1, min(node.v_th_mant, 2**17 - 1)), node.du, node.dv,
                                         node.v_th_mant, mant, exp, 0.0)


def bias_encoding(layer: _Layer, bias: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """``bias << exp`` as a 13-bit mantissa and an exponent (Loihi's bias fields; what Lava computes
    with is the product): a file bias beyond 13 bits (our own netx files may hold one: a first layer
    run at 2^j × its scale) moves factors of 2 into the exponent; NetxError if it cannot, exactly."""
    bias = np.asarray(bias, dtype=np.int64)
    while np.abs(bias).max(initial=0) > BIAS_MANT_MAX:
        if np.any(bias % 2):
            raise layer.error(f"bias {int(np.abs(bias).max())} fits no 13-bit mantissa with an exponent (Loihi's "
                              f"bias fields; |bias| <= {BIAS_MANT_MAX} × 2^k)")
        bias, exp = bias // 2, exp + 1
    return bias, exp


def _bias(layer: _Layer, channels: int, warnings: list[str]) -> np.ndarray:
    b = layer.ints("bias", required=False, warnings=warnings)
    if b is None:
        return np.zeros(channels, np.int64)
    b = b.reshape(-1)
    if b.size == 1:
        return np.full(channels, int(b[0]), np.int64)
    if b.size != channels:
        raise layer.error(f"bias has {b.size} values, expected one per channel ({channels}); per-neuron biases "
                          "are not read")
    return b


def _check_shape(layer: _Layer, got: tuple[int, ...]) -> None:
    want = layer.shape()
    flat = lambda s: tuple(v for v in s if v != 1) or (1,)  # noqa: E731  (N,) == (N, 1, 1)
    if want != got and flat(want) != flat(got):
        raise layer.error(f"shape {want} does not follow from the previous layer (computed {got})")


def _read_input(b: _Builder, layer: _Layer, last: bool) -> None:
    if b.prev is not None:
        raise layer.error("an input layer after the first layer")
    shape = layer.shape()
    if len(shape) > 3:
        raise layer.error(f"input shape {shape} has more than 3 dimensions")
    b.add("input", InputNode(shape), shape)
    transform = {k: int(layer.ints(k, required=False, default=d).reshape(-1)[0]) for k, d in (("weight", 64), ("bias", 0))}
    b.metadata["input_transform"] = transform
    if layer.neuron is None:  # the next layer's synapse reads the input on chip: one step late (Link.lag)
        b.metadata["input_lag"] = 1
        return
    node = _neuron(layer, layer.neuron, np.zeros(shape[0], np.int64), last=last, bias_input=True)
    b.add_neuron(layer, f"layer{layer.index}", node, shape, None)


def _weights(layer: _Layer, ndim: int, warnings: list[str]) -> np.ndarray:
    w = layer.ints("weight", warnings=warnings)
    while w.ndim > ndim and w.shape[-1] == 1:  # slayer's trailing time axis of length 1
        w = w[..., 0]
    if w.ndim != ndim:
        raise layer.error(f"weight must have {ndim} dimensions, got shape {w.shape}")
    return w


def _conv_like(b: _Builder, layer: _Layer, last: bool, weight: np.ndarray, groups: int, stride, padding,
               dilation, kind: str) -> None:
    if b.shape is None or len(b.shape) != 3:
        raise layer.error(f"a {kind} needs a (C, H, W) input, got {b.shape}")
    if np.abs(weight).max(initial=0) > 256 or weight.min(initial=0) < -256 or weight.max(initial=0) > 255:
        raise layer.error("weights beyond Loihi's 8-bit range [-256, 255]")
    try:
        node = Conv2dNode(weight.astype(np.float64), np.zeros(weight.shape[0]), stride, padding, dilation, groups)
        shape = node.out_shape(b.shape)
    except ValueError as e:
        raise layer.error(str(e)) from None
    _check_shape(layer, shape)
    wname = f"layer{layer.index}.{kind}"
    b.add(wname, node, shape)
    bias = _bias(layer, shape[0], b.warnings)
    neuron = _neuron(layer, layer.neuron, bias, last=last)
    mixed = weight.min(initial=0) < 0 < weight.max(initial=0)
    b.add_neuron(layer, f"layer{layer.index}", neuron, shape, wname, weight, 0, 9 if mixed else 8)


def _read_conv(b: _Builder, layer: _Layer, last: bool) -> None:
    w = _weights(layer, 4, b.warnings)
    groups = int(layer.ints("groups", required=False, default=1).reshape(-1)[0])
    _conv_like(b, layer, last, w, groups, layer.pair("stride", 1), layer.pair("padding", 0),
               layer.pair("dilation", 1), "conv")


def _read_pool(b: _Builder, layer: _Layer, last: bool) -> None:
    if b.shape is None or len(b.shape) != 3:
        raise layer.error(f"a pool needs a (C, H, W) input, got {b.shape}")
    kernel = layer.pair("kernelSize", None)
    stride = layer.pair("stride", kernel)
    padding = layer.pair("padding", 0)
    c, h, w = b.shape
    if h % kernel[0] or w % kernel[1]:
        raise layer.error(f"input {h}×{w} is not a multiple of the pool kernel {kernel}: slayer pads such inputs at "
                          "the bottom/right only, which a convolution with symmetric padding cannot express")
    tap = _weights(layer, 4, b.warnings).reshape(-1)
    if tap.size != kernel[0] * kernel[1]:
        raise layer.error(f"pool weight has {tap.size} taps, kernel {kernel} needs {kernel[0] * kernel[1]}")
    weight = np.broadcast_to(tap.reshape(1, 1, *kernel), (c, 1, *kernel)).copy()
    _conv_like(b, layer, last, weight, c, stride, padding, layer.pair("dilation", 1), "pool")


def netx_dense_weights(w: np.ndarray) -> tuple[np.ndarray, int, int]:
    """What lava-dl 0.6.0's netx hands Lava's Dense for file weights ``w`` [N_out, N_in]
    (``netx.utils.optimize_weight_bits``, re-derived): ``(w << scale_bits`` after clipping
    mixed-sign weights to [-256, 254], ``weight_exp = -scale_bits``, ``num_weight_bits)``, the
    weights shifted up to fill the 8-bit range and the exponent shifting their sum back. Lava then
    keeps exactly these mantissas, so the layer computes ``Σ w·s``."""
    w = np.asarray(w, dtype=np.int64)
    hi, lo = int(w.max(initial=0)), int(w.min(initial=0))
    if (hi > 254 and lo < 0) or (lo < -256 and hi > 0):
        w = np.clip(w, -256, 254)
        hi, lo = int(w.max(initial=0)), int(w.min(initial=0))
    if hi == 0 and lo == 0:
        return w, 0, 8
    mixed = lo < 0 < hi
    if mixed:
        scale = min(127 / hi, -128 / lo)
    elif hi <= 0:
        scale = -256 / lo
    else:
        scale = 255 / hi
    scale_bits = int(np.floor(np.log2(scale))) + int(mixed)
    n = 8  # the lowest set bit over all weights, at most 8
    while n > 0 and np.any(w % (1 << n)):
        n -= 1
    n -= int(mixed)
    bits = 8 - scale_bits - n
    return w << scale_bits if scale_bits >= 0 else w >> -scale_bits, -scale_bits, bits


def _read_dense(b: _Builder, layer: _Layer, last: bool) -> None:
    if b.shape is None or len(b.shape) != 1:
        raise layer.error(f"a dense layer needs a flat input (a flatten layer before it), got {b.shape}")
    w = layer.ints("weight", warnings=b.warnings)
    n_out = int(np.prod(layer.shape()))
    w = w.reshape(n_out, -1) if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] != b.shape[0]:
        raise layer.error(f"weight {w.shape} does not take the {b.shape[0]} inputs of the previous layer")
    _check_shape(layer, (w.shape[0],))
    delay = layer.ints("delay", required=False)
    if delay is not None and delay.any():
        raise layer.error("synaptic delays are not read yet")
    mant, exp, bits = netx_dense_weights(w)
    node = DenseNode(w.astype(np.float64), np.zeros(w.shape[0]))
    wname = f"layer{layer.index}.dense"
    b.add(wname, node, (w.shape[0],))
    neuron = _neuron(layer, layer.neuron, _bias(layer, w.shape[0], b.warnings), last=last)
    b.add_neuron(layer, f"layer{layer.index}", neuron, (w.shape[0],), wname, mant, exp, bits)


def _read_flatten(b: _Builder, layer: _Layer, last: bool) -> None:
    if last:
        raise layer.error("a network cannot end with a flatten layer")
    if b.shape is None:
        raise layer.error("a flatten layer before any input")
    node = FlattenNode()
    b.add(f"layer{layer.index}.flatten", node, node.out_shape(b.shape))


def _first_input_shape(layer: _Layer) -> tuple[int, ...]:
    """The input shape of a file that starts with a dense or conv layer (no input layer): the dense
    layer's ``inFeatures`` (or its weight's columns); a conv's must be given by an input layer."""
    if layer.type == "conv":
        raise layer.error("a file starting with a conv layer needs an input layer for its input shape "
                          "(netx asks for input_shape then)")
    w = layer.ints("weight", warnings=[])
    n = layer.ints("inFeatures", required=False)
    return (int(n.reshape(-1)[0]) if n is not None else int(w.reshape(int(np.prod(layer.shape())), -1).shape[1]),)


LAYER_READERS: dict[str, Callable[[_Builder, _Layer, bool], None]] = {
    "input": _read_input,
    "conv": _read_conv,
    "dense": _read_dense,
    "flatten": _read_flatten,
    "pool": _read_pool,
}


# -- the file --------------------------------------------------------------------------------


def is_netx(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file holding a netx ``layer`` group (not a NIR graph)."""
    import h5py

    p = Path(path)
    if not p.is_file():
        return False
    try:
        with h5py.File(p, "r") as f:
            return "layer" in f and "node" not in f
    except Exception:  # not HDF5 at all
        return False


def read_netx(path: str | os.PathLike) -> QuantizedGraph:
    """The network in a netx HDF5 file as a ``QuantizedGraph`` (see the module docstring); one-line
    ``UserError`` naming the file (and the layer and its type) for anything it cannot read."""
    import h5py

    from htakl_deploy.readers import check_h5, describe_missing

    p = Path(path)
    if not p.is_file():
        raise describe_missing(p, "", "netx file")
    check_h5(p)  # no links into other files, no dataset larger than the file holds
    try:
        f = h5py.File(p, "r")
    except Exception as e:
        raise NetxError(f"{p}: not a readable netx HDF5 file: {type(e).__name__}: {e}") from None
    with f:
        group = f.get("layer")
        if not isinstance(group, h5py.Group) or not len(group):
            raise NetxError(f"{p}: not a netx file (no 'layer' group)")
        keys = sorted(group, key=lambda k: int(k) if str(k).isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise NetxError(f"{p}: layers must be named 0..{len(keys) - 1}, got {sorted(group)[:5]}")
        layers = []
        for i in range(len(keys)):
            g = group[str(i)]
            if not isinstance(g, h5py.Group):
                raise NetxError(f"{p}: layer {i} is not a group")
            try:
                layers.append(_Layer(p, i, g))
            except (OSError, KeyError, TypeError, ValueError) as e:
                raise NetxError(f"{p}: layer {i}: unreadable ({type(e).__name__}: {e})") from None
    b = _Builder(p)
    for i, layer in enumerate(layers):
        fn = LAYER_READERS.get(layer.type)
        if fn is None:
            raise layer.error(f"layer type {layer.type!r} is not supported (supported: {', '.join(LAYER_READERS)})")
        if i == 0 and layer.type != "input":  # lava-dl's tutorial networks (oxford, mnist) start with a dense
            if layer.type not in ("dense", "conv"):  # layer reading the input spikes through its synapse
                raise layer.error("the first layer must be an input, dense or conv layer")
            shape = _first_input_shape(layer)
            b.add("input", InputNode(shape), shape)
            b.metadata["input_lag"] = 1
        fn(b, layer, i == len(layers) - 1)
    if len(b.nodes) < 2 or not b.targets:
        raise NetxError(f"{p}: no layer with neurons")
    last = next(reversed(b.nodes))
    if getattr(b.nodes[last], "ROLE", None) != "output":
        raise NetxError(f"{p}: the last layer must hold neurons (got {type(b.nodes[last]).__name__})")
    try:
        graph = StudentGraph(b.nodes, b.edges, metadata={"source_netx": str(p), **b.metadata})
    except ValueError as e:
        raise NetxError(f"{p}: not a valid network: {e}") from None
    return QuantizedGraph(graph, b.conns, b.targets, NETX_INPUT_SCALE,
                          {"format": FORMAT, **b.metadata, "read_warnings": b.warnings})
