"""Conv1d: a 1-D convolution over ``(C, L)`` (stride, padding, dilation, groups), NIR ``Conv1d``.

Float: ``torch.nn.functional.conv1d``. Loihi: the same 8-bit mantissas as any synapse (the
quantiser); the plan writes its matrix — the convolution of a ``(C, 1, L)`` map with the kernel
``[Cout, Cin/groups, 1, k]`` (``conv.conv_matrix``) — which Lava runs as ``Sparse`` (and, from the
input, the off-chip input link), the emulator as a sparse product. Neuron layers after it are
``(C, L)`` populations. Ops: a source spike reaches the outputs whose taps cover it along ``L``
(``geometry.axis_reach``), times ``Cout / groups``.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import scipy.sparse as sp
import torch

from htakl_deploy.export.nodes import Node
from htakl_deploy.export.nodes.conv import conv_from_nir, conv_matrix, nir_weights
from htakl_deploy.export.nodes.geometry import Shape, axis_reach, out_len
from htakl_deploy.export.nodes.intops import per_step


def _one(v, what: str) -> int:
    a = np.asarray(v).reshape(-1)
    if a.size != 1:
        raise ValueError(f"conv1d {what} must be one integer, got {v!r}")
    return int(a[0])


@dataclass(eq=False)
class Conv1dNode(Node):
    """1-D convolution, weight ``[Cout, Cin/groups, k]``, bias ``[Cout]`` (zeros if none)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    ROLE = "synapse"
    KIND = "conv"
    LAVA_DENSE = False
    NIR_TYPES = (nir.Conv1d,)

    def __post_init__(self):
        self.weight = np.asarray(self.weight)
        self.bias = np.asarray(self.bias)
        if self.weight.ndim != 3:
            raise ValueError(f"conv1d weight must be [Cout, Cin, k], got {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"conv1d bias must be [{self.weight.shape[0]}], got {self.bias.shape}")
        self.stride, self.padding, self.dilation, self.groups = (
            _one(getattr(self, k), k) for k in ("stride", "padding", "dilation", "groups"))
        if min(self.stride, self.dilation, self.groups) < 1 or self.padding < 0:
            raise ValueError("conv1d stride/dilation/groups must be >= 1 and padding >= 0")
        if self.weight.shape[0] % self.groups:
            raise ValueError(f"conv1d Cout={self.weight.shape[0]} not divisible by groups={self.groups}")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 2 or in_shape[0] != self.weight.shape[1] * self.groups:
            raise ValueError(f"conv1d expects (C={self.weight.shape[1] * self.groups}, L), got {in_shape}")
        n = out_len(in_shape[1], self.weight.shape[2], self.stride, self.padding, self.dilation)
        if n < 1:
            raise ValueError(f"conv1d output collapses to {n} for input {in_shape}")
        return (self.weight.shape[0], n)

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution of ``x`` ``[N, C, L]`` with ``weight`` (any values, x's dtype)."""
        return torch.nn.functional.conv1d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        w, b = (torch.as_tensor(a, dtype=h.dtype) for a in (self.weight, self.bias))
        return per_step(lambda z: self.apply(z, w, b), h)

    def kernel(self, weight: np.ndarray, f_weight: np.ndarray) -> None:
        return None  # runs from its matrix (Lava Sparse), see the module docstring

    def matrix(self, weight: np.ndarray, in_shape: Shape) -> sp.csr_matrix:
        c, n = in_shape
        return conv_matrix(np.asarray(weight)[:, :, None, :], (c, 1, n), (1, self.stride), (0, self.padding),
                           (1, self.dilation), self.groups)

    def _axis(self, n: int) -> np.ndarray:
        return axis_reach(n, self.weight.shape[2], self.stride, self.padding, self.dilation)

    def fanout(self, reach, in_shape: Shape) -> np.ndarray:
        """Outputs each source position drives (sources are ``(C, L)``: no pools before it)."""
        return self._axis(in_shape[1]).sum(1) * (self.weight.shape[0] // self.groups)

    def dense_ops(self, in_shape: Shape) -> int:
        return int(self.weight.shape[0]) * int(self.weight.shape[1]) * int(self._axis(in_shape[1]).sum())

    def nir_node(self, name, graph, quantized) -> nir.Conv1d:
        in_shape = graph.shapes[graph.predecessors(name)[0]]
        weight, bias, meta = nir_weights(self, name, quantized)  # grouped: ungrouped form (conv.expand_groups)
        return nir.Conv1d(input_shape=int(in_shape[1]), weight=weight, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=1, bias=bias, metadata=meta)

    @classmethod
    def from_nir(cls, name: str, n: nir.Conv1d, dt: float) -> "Conv1dNode":
        return conv_from_nir(cls, name, n)
