"""Flatten: all non-batch dimensions into one (NIR ``Flatten``), a route before a dense layer.

NIR files: we write ``Flatten(start_dim=−len(input shape), end_dim=−1)``, the one convention NIR's
type check and snnTorch's / Norse's importers agree on (``export.nir_io``); we read ``start_dim``
0, 1 or ``−len(input)`` with ``end_dim = −1`` (all mean "all but batch").
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
class FlattenNode(Node):
    """Flatten all non-batch dimensions (torch ``start_dim=1`` on ``[B, ...]``)."""

    ROLE = "route"
    NIR_TYPES = (nir.Flatten,)
    FLATTENS = True  # a per-channel value becomes one value per element behind it
    divisor = 1.0
    overlaps = False

    def out_shape(self, in_shape: Shape) -> Shape:
        return (int(np.prod(in_shape)),)

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        return h.flatten(2)

    def run_int(self, h: np.ndarray) -> np.ndarray:
        return h.reshape(*h.shape[:2], -1)

    def matrix(self, in_shape: Shape) -> sp.csr_matrix:
        return sp.identity(int(np.prod(in_shape)), dtype=np.int64, format="csr")

    def kernel_repeat(self) -> None:
        return None  # a kernel does not flatten

    def reach(self, rh: np.ndarray, rw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rh, rw  # positions keep their identity; the next dense layer reads them all

    TORCH_TYPES = (torch.nn.Flatten,)  # SpikingJelly's Flatten is a subclass

    @classmethod
    def from_torch(cls, path: str, m: torch.nn.Flatten) -> "FlattenNode":
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"module {path!r} (Flatten): only start_dim=1, end_dim=-1 is supported")
        return cls()

    def nir_node(self, name, graph, quantized) -> nir.Flatten:
        in_shape = graph.shapes[graph.predecessors(name)[0]]
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=-len(in_shape), end_dim=-1)

    @classmethod
    def from_nir(cls, name: str, n: nir.Flatten, dt: float) -> "FlattenNode":
        from htakl_deploy.errors import UserError

        in_type = (n.input_type or {}).get("input") if isinstance(n.input_type, dict) else None
        all_dims = (0, 1) if in_type is None else (0, 1, -len(np.asarray(in_type).reshape(-1)))
        if int(n.start_dim) not in all_dims or int(n.end_dim) != -1:
            raise UserError(f"NIR node {name!r}: only Flatten of all non-batch dims is supported "
                            f"(start_dim {' or '.join(map(str, all_dims))}, end_dim -1), got {n.start_dim}, {n.end_dim}")
        return cls()
