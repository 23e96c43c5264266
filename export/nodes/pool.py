"""Pool: 2-D average or sum pooling (NIR ``AvgPool2d`` / ``SumPool2d``), a route between a neuron
layer and the next synapses.

Float: ``avg_pool2d`` (padding counted in the divisor; sum = avg × kh·kw). Loihi: pools run as
*sum* pools on integer spike counts and the average's divisor ``kh·kw`` is folded into the next
connection's weights (``divisor``); the plan folds a non-overlapping, unpadded pool into the next
conv's kernel (``kernel_repeat``) and composes its 0/1 matrix otherwise (``matrix``).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import scipy.sparse as sp
import torch

from htakl_deploy.export.nodes import Node
from htakl_deploy.export.nodes.geometry import Shape, axis_reach, compose, out_len, pair
from htakl_deploy.export.nodes.intops import exact, per_step


@dataclass(eq=False)
class PoolNode(Node):
    """2-D average (``kind='avg'``, divide by kh·kw, padding counted) or sum pooling."""

    kind: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    ROLE = "route"
    NIR_TYPES = (nir.AvgPool2d, nir.SumPool2d)
    FLATTENS = False  # keeps channels: a per-channel value commutes with it

    def __post_init__(self):
        if self.kind not in ("avg", "sum"):
            raise ValueError(f"pool kind must be 'avg' or 'sum', got {self.kind!r}")
        self.kernel_size = pair(self.kernel_size, "pool kernel_size")
        self.stride = pair(self.stride, "pool stride")
        self.padding = pair(self.padding, "pool padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError("pool kernel/stride must be >= 1 and padding >= 0")

    def out_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ValueError(f"pool expects (C, H, W), got {in_shape}")
        h, w = (out_len(in_shape[1 + i], self.kernel_size[i], self.stride[i], self.padding[i]) for i in range(2))
        if min(h, w) < 1:
            raise ValueError(f"pool output collapses to {(h, w)} for input {in_shape}")
        return (in_shape[0], h, w)

    @property
    def area(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def divisor(self) -> float:
        """What the next connection's weights are divided by (the pool runs as a sum pool)."""
        return float(self.area) if self.kind == "avg" else 1.0

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        y = per_step(lambda z: torch.nn.functional.avg_pool2d(z, self.kernel_size, self.stride, self.padding), h)
        return y * self.area if self.kind == "sum" else y

    def run_int(self, h: np.ndarray) -> np.ndarray:
        """Sum pooling of integer values ``[T, B, C, H, W]``, exact."""
        return exact(lambda z: torch.nn.functional.avg_pool2d(z, self.kernel_size, self.stride, self.padding,
                                                              divisor_override=1), h)

    def matrix(self, in_shape: Shape) -> sp.csr_matrix:
        """Sum pooling as a 0/1 ``[N_out, N_in]`` matrix (torch flat order)."""
        from htakl_deploy.export.nodes.conv import conv_matrix

        c = in_shape[0]
        eye = np.zeros((c, 1, *self.kernel_size))
        eye[:, 0] = 1.0
        return conv_matrix(eye, in_shape, self.stride, self.padding, (1, 1), c)

    @property
    def overlaps(self) -> bool:
        """Whether one input position lies in several pooled positions (stride < kernel)."""
        return any(s < k for s, k in zip(self.stride, self.kernel_size))

    def kernel_repeat(self) -> tuple[int, int] | None:
        """(kh, kw) if the pool folds into a following conv's kernel (stride = kernel, no padding)."""
        if tuple(self.stride) != tuple(self.kernel_size) or any(self.padding):
            return None
        return tuple(self.kernel_size)

    def reach(self, rh: np.ndarray, rw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (compose(rh, axis_reach(rh.shape[1], kh, sh, ph, 1)),
                compose(rw, axis_reach(rw.shape[1], kw, sw, pw, 1)))

    TORCH_TYPES = (torch.nn.AvgPool2d,)

    @classmethod
    def from_torch(cls, path: str, m: torch.nn.AvgPool2d) -> "PoolNode":
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            raise ValueError(f"module {path!r} (AvgPool2d): ceil_mode/count_include_pad=False/divisor_override "
                             "unsupported")
        return cls("avg", m.kernel_size, m.stride if m.stride is not None else m.kernel_size, m.padding)

    def nir_node(self, name, graph, quantized):
        cls = nir.AvgPool2d if self.kind == "avg" else nir.SumPool2d
        return cls(kernel_size=np.array(self.kernel_size), stride=np.array(self.stride),
                   padding=np.array(self.padding))

    @classmethod
    def from_nir(cls, name: str, n, dt: float) -> "PoolNode":
        return cls("avg" if isinstance(n, nir.AvgPool2d) else "sum", n.kernel_size, n.stride, n.padding)
