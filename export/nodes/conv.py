"""Conv2d: a 2-D convolution (stride, padding, dilation, groups), NIR ``Conv2d``.

Float: ``torch.nn.functional.conv2d`` (cross-correlation). Loihi: 8-bit mantissas per connection
(the quantiser); the plan runs it as a kernel (Lava ``Conv`` or, from the kernel, ``Sparse``), the
emulator convolves. Ops: a source spike reaches, per axis, the outputs whose taps cover it
(``geometry.axis_reach``), times ``Cout / groups``.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import scipy.sparse as sp
import torch

from htakl_deploy.export.nodes import Node
from htakl_deploy.export.nodes.geometry import Shape, axis_reach, compose, out_len, pair
from htakl_deploy.export.nodes.intops import per_step


@dataclass(eq=False)
class Conv2dNode(Node):
    """2-D convolution, weight ``[Cout, Cin/groups, kh, kw]``, bias ``[Cout]`` (zeros if none)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    ROLE = "synapse"
    KIND = "conv"
    LAVA_DENSE = False
    NIR_TYPES = (nir.Conv2d,)

    def __post_init__(self):
        self.weight = np.asarray(self.weight)
        self.bias = np.asarray(self.bias)
        if self.weight.ndim != 4:
            raise ValueError(f"conv2d weight must be [Cout, Cin, kh, kw], got {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"conv2d bias must be [{self.weight.shape[0]}], got {self.bias.shape}")
        self.stride = pair(self.stride, "conv2d stride")
        self.padding = pair(self.padding, "conv2d padding")
        self.dilation = pair(self.dilation, "conv2d dilation")
        self.groups = int(self.groups)
        if min(self.stride) < 1 or min(self.padding) < 0 or min(self.dilation) < 1 or self.groups < 1:
            raise ValueError("conv2d stride/dilation/groups must be >= 1 and padding >= 0")
        if self.weight.shape[0] % self.groups:
            raise ValueError(f"conv2d Cout={self.weight.shape[0]} not divisible by groups={self.groups}")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3 or in_shape[0] != self.weight.shape[1] * self.groups:
            raise ValueError(f"conv2d expects (C={self.weight.shape[1] * self.groups}, H, W), got {in_shape}")
        h, w = (out_len(in_shape[1 + i], self.weight.shape[2 + i], self.stride[i], self.padding[i], self.dilation[i])
                for i in range(2))
        if min(h, w) < 1:
            raise ValueError(f"conv2d output collapses to {(h, w)} for input {in_shape}")
        return (self.weight.shape[0], h, w)

    # -- float and integer semantics ------------------------------------------------------

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution of ``x`` ``[N, C, H, W]`` with ``weight`` (any values, x's dtype)."""
        return torch.nn.functional.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        w, b = (torch.as_tensor(a, dtype=h.dtype) for a in (self.weight, self.bias))
        return per_step(lambda z: self.apply(z, w, b), h)

    # -- deployment plan -------------------------------------------------------------------

    def kernel(self, weight: np.ndarray, f_weight: np.ndarray) -> dict | None:
        """The plan's convolution spec (the emulator convolves; Lava builds ``Conv`` or ``Sparse``)."""
        return {"weight": weight, "f_weight": f_weight, "stride": tuple(self.stride),
                "padding": tuple(self.padding), "dilation": tuple(self.dilation), "groups": int(self.groups)}

    def matrix(self, weight: np.ndarray, in_shape: Shape) -> sp.csr_matrix:
        return conv_matrix(weight, in_shape, self.stride, self.padding, self.dilation, self.groups)

    # -- op counting -----------------------------------------------------------------------

    def axes(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        kh, kw = self.weight.shape[2:]
        return (axis_reach(h, kh, self.stride[0], self.padding[0], self.dilation[0]),
                axis_reach(w, kw, self.stride[1], self.padding[1], self.dilation[1]))

    def fanout(self, reach: tuple[np.ndarray, np.ndarray], in_shape: Shape) -> np.ndarray:
        """Outputs each source position drives (``reach``: the source's (H, W) → this conv's input)."""
        rh, rw = reach
        ch, cw = self.axes(rh.shape[1], rw.shape[1])
        return np.outer(compose(rh, ch).sum(1), compose(rw, cw).sum(1)) * (self.weight.shape[0] // self.groups)

    def dense_ops(self, in_shape: Shape) -> int:
        ch, cw = self.axes(in_shape[1], in_shape[2])
        return int(self.weight.shape[0]) * int(self.weight.shape[1]) * int(ch.sum()) * int(cw.sum())

    # -- from a torch module (export.graph.graph_from_classifier) ---------------------------

    TORCH_TYPES = (torch.nn.Conv2d,)

    @classmethod
    def from_torch(cls, path: str, m: torch.nn.Conv2d) -> "Conv2dNode":
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"module {path!r} (Conv2d): only numeric zero padding is supported")
        return cls(to_numpy(m.weight), to_numpy(m.bias, m.weight, m.out_channels), m.stride, m.padding,
                   m.dilation, m.groups)

    # -- NIR -------------------------------------------------------------------------------

    def nir_node(self, name, graph, quantized) -> nir.Conv2d:
        in_shape = graph.shapes[graph.predecessors(name)[0]]
        weight, bias, meta = nir_weights(self, name, quantized)
        return nir.Conv2d(input_shape=np.array(in_shape[1:]), weight=weight, stride=np.array(self.stride),
                          padding=np.array(self.padding), dilation=np.array(self.dilation),
                          groups=1, bias=bias, metadata=meta)

    @classmethod
    def from_nir(cls, name: str, n: nir.Conv2d, dt: float) -> "Conv2dNode":
        return conv_from_nir(cls, name, n)


def nir_weights(node, name: str, quantized) -> tuple[np.ndarray, np.ndarray, dict]:
    """A conv node's NIR ``weight``, ``bias`` and metadata: float, or the 8-bit mantissas (bias 0:
    it lives in the neuron) with ``weight_exp``; grouped kernels in ``expand_groups``' form."""
    weight, bias, meta = node.weight, node.bias, {}
    if quantized is not None:
        c = next(c for c in quantized.connections if c.node == name)
        weight, bias = c.weight_mant.astype(np.int32), np.zeros(node.bias.shape, np.int32)
        meta = {"weight_exp": np.int64(c.weight_exp)}
        if c.weight_bits != 8:  # Lava's num_weight_bits (a netx file's odd mixed-sign weights)
            meta["weight_bits"] = np.int64(c.weight_bits)
    weight, meta = expand_groups(weight, node.groups, meta)
    return weight, bias, meta


def conv_from_nir(cls, name: str, n):
    """A conv node of type ``cls`` from a NIR Conv1d/Conv2d (numeric padding only; groups restored)."""
    from htakl_deploy.errors import UserError

    if isinstance(n.padding, str):
        raise UserError(f"NIR node {name!r}: string padding {n.padding!r} is not supported")
    weight, groups = compact_groups(name, np.asarray(n.weight), int(n.groups), n.metadata)
    return cls(weight, np.asarray(n.bias), n.stride, n.padding, n.dilation, groups)


def expand_groups(weight: np.ndarray, groups: int, meta: dict) -> tuple[np.ndarray, dict]:
    """A grouped kernel ``[Cout, Cin/groups, ...]`` as the equal ungrouped one ``[Cout, Cin, ...]``
    (zeros outside each output's group) with ``metadata['groups']``: NIR 1.0.8's type inference
    reads a conv's input channels as ``weight.shape[1]`` whatever ``groups`` is, so a grouped conv
    fails plain ``nir.read``; the ungrouped form is the same map for every reader, and ours
    (``compact_groups``) restores the groups."""
    if groups == 1:
        return weight, meta
    cout, cg = weight.shape[:2]
    full = np.zeros((cout, cg * groups, *weight.shape[2:]), weight.dtype)
    for o in range(cout):
        g = o // (cout // groups)
        full[o, g * cg:(g + 1) * cg] = weight[o]
    return full, {**meta, "groups": np.int64(groups)}


def compact_groups(name: str, weight: np.ndarray, groups: int, meta: dict | None) -> tuple[np.ndarray, int]:
    """The grouped kernel back from ``expand_groups``' form (``metadata['groups']`` on a
    ``groups = 1`` node); UserError naming the node if a weight lies outside its group."""
    from htakl_deploy.errors import UserError

    g = int((meta or {}).get("groups", 1))
    if g == 1 or groups != 1:
        return weight, groups
    cout, cin = weight.shape[:2]
    if cout % g or cin % g:
        raise UserError(f"NIR node {name!r}: metadata groups = {g} does not divide its {cout}×{cin} channels")
    cg = cin // g
    out = np.stack([weight[o, (o // (cout // g)) * cg:(o // (cout // g) + 1) * cg] for o in range(cout)])
    if not np.allclose(expand_groups(out, g, {})[0], weight, rtol=0, atol=0):
        raise UserError(f"NIR node {name!r}: metadata groups = {g} but weights lie outside the groups")
    return out, g


def to_numpy(t: torch.Tensor | None, like: torch.Tensor | None = None, n: int | None = None) -> np.ndarray:
    """A module's parameter as a numpy copy (zeros of ``like``'s dtype, length ``n``, if absent)."""
    if t is None:
        return np.zeros(n, dtype=like.detach().cpu().numpy().dtype)
    return t.detach().cpu().numpy().copy()


def conv_matrix(weight: np.ndarray, in_shape, stride, padding, dilation, groups: int) -> sp.csr_matrix:
    """The convolution ``y = conv2d(x, weight)`` as a sparse ``[N_out, N_in]`` matrix (torch flat order)."""
    c, h, w = in_shape
    cout, cg, kh, kw = weight.shape
    idx = torch.arange(1, c * h * w + 1, dtype=torch.float64).reshape(1, c, h, w)
    cols = torch.nn.functional.unfold(idx, (kh, kw), dilation=dilation, padding=padding, stride=stride)[0]
    cols = cols.round().long().numpy() - 1  # [C·kh·kw, L], −1 where padding
    n_pos = cols.shape[1]
    kk = kh * kw
    per_group = cout // groups
    rows_l, cols_l, vals_l = [], [], []
    for o in range(cout):  # loop over output channels only; positions and taps are vectorised
        g = o // per_group
        src = cols[g * cg * kk:(g + 1) * cg * kk]  # [cg·kk, L]
        vals = np.broadcast_to(weight[o].reshape(-1, 1), src.shape)
        keep = (src >= 0) & (vals != 0)
        rows_l.append((o * n_pos + np.broadcast_to(np.arange(n_pos), src.shape))[keep])
        cols_l.append(src[keep])
        vals_l.append(vals[keep])
    n_in = c * h * w
    return sp.csr_matrix((np.concatenate(vals_l), (np.concatenate(rows_l), np.concatenate(cols_l))),
                         shape=(cout * n_pos, n_in))
