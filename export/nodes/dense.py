"""Dense: an affine map ``y = W x + b`` (NIR ``Affine``; NIR ``Linear`` reads with a zero bias).

Loihi: 8-bit mantissas (the quantiser); the plan writes its matrix (Lava ``Dense``, or ``Sparse``
when the link needs a delay). Ops: every input reaches every output (``W``'s rows). Quantised NIR
files write ``Linear`` (the bias lives in the target neuron).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import scipy.sparse as sp
import torch

from htakl_deploy.export.nodes import Node
from htakl_deploy.export.nodes.geometry import Shape


@dataclass(eq=False)
class DenseNode(Node):
    """Affine map ``y = W x + b``, weight ``[out, in]``, bias ``[out]`` (zeros if none)."""

    weight: np.ndarray
    bias: np.ndarray

    ROLE = "synapse"
    KIND = "dense"
    LAVA_DENSE = True
    NIR_TYPES = (nir.Affine, nir.Linear)

    def __post_init__(self):
        self.weight = np.asarray(self.weight)
        self.bias = np.asarray(self.bias)
        if self.weight.ndim != 2:
            raise ValueError(f"dense weight must be [out, in], got {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"dense bias must be [{self.weight.shape[0]}], got {self.bias.shape}")

    def out_shape(self, in_shape: Shape) -> Shape:
        if in_shape != (self.weight.shape[1],):
            raise ValueError(f"dense expects ({self.weight.shape[1]},), got {in_shape}")
        return (self.weight.shape[0],)

    def apply(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[..., in]`` times ``weight`` (any values, x's dtype)."""
        return torch.nn.functional.linear(x, weight, bias)

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        w, b = (torch.as_tensor(a, dtype=h.dtype) for a in (self.weight, self.bias))
        return self.apply(h, w, b)

    def kernel(self, weight: np.ndarray, f_weight: np.ndarray) -> None:
        return None  # a matrix, not a convolution

    def matrix(self, weight: np.ndarray, in_shape: Shape) -> sp.csr_matrix:
        return sp.csr_matrix(weight)

    def fanout(self, reach: tuple[np.ndarray, np.ndarray] | None, in_shape: Shape) -> np.ndarray:
        n_out = self.weight.shape[0]
        return np.asarray(n_out if reach is None else np.outer(reach[0].any(1), reach[1].any(1)) * n_out)

    def dense_ops(self, in_shape: Shape) -> int:
        return int(self.weight.size)

    TORCH_TYPES = (torch.nn.Linear,)

    @classmethod
    def from_torch(cls, path: str, m: torch.nn.Linear) -> "DenseNode":
        from htakl_deploy.export.nodes.conv import to_numpy

        return cls(to_numpy(m.weight), to_numpy(m.bias, m.weight, m.out_features))

    def nir_node(self, name, graph, quantized) -> nir.Affine | nir.Linear:
        if quantized is None:
            return nir.Affine(weight=self.weight, bias=self.bias)
        c = next(c for c in quantized.connections if c.node == name)
        meta = {"weight_exp": np.int64(c.weight_exp)}
        if c.weight_bits != 8:  # Lava's num_weight_bits (a netx file's dense layer)
            meta["weight_bits"] = np.int64(c.weight_bits)
        return nir.Linear(weight=c.weight_mant.astype(np.int32), metadata=meta)

    @classmethod
    def from_nir(cls, name: str, n: nir.Affine | nir.Linear, dt: float) -> "DenseNode":
        w = np.asarray(n.weight)
        return cls(w, np.asarray(n.bias) if isinstance(n, nir.Affine) else np.zeros(w.shape[0]))
