"""Neuron node families: one module per family, each holding everything about it.

A family is a dataclass subclassing ``NeuronNode`` (its parameters, validated) that implements:

- ``run_float(x_tb)``: its float semantics on currents ``[T, B, ...]`` → spikes (``export.graph.
  run_float`` calls it);
- ``loihi()``: how it runs on lava-nc's fixed-point LIF (``LoihiNeuron``: decays and the gain from
  a float current to ``v``) — the quantiser (``export.quantize``), the deployment plan
  (``hw.plan``: Lava float and fixed-point parameters) and so the emulator and the Lava builder
  need nothing else; the update itself is ``hw.lif_ref.lif_int_step`` for every family;
- ``to_nir(shape)`` / ``from_nir(name, node, dt)`` and ``NIR_TYPE``: its NIR mapping both ways
  (``export.nir_io`` builds its tables from ``FAMILIES``), with ``float_metadata()`` /
  ``from_metadata(meta)`` keeping the exact float parameters in a quantised file;
- op counting needs nothing per family: a neuron's spikes drive its outgoing connections
  (``energy.counter``).

Adding a neuron type = one module here plus its entry in ``FAMILIES`` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoihiNeuron:
    """A neuron on lava-nc's LIF. Fixed point, per step: ``u ← u·(4096 − (du + 1))/4096 + a``,
    ``v ← v·(4096 − dv)/4096 + u + b``, spike when ``v > vth``, then ``v = 0`` (``hw.lif_ref``);
    floating point (Lava's ``floating_pt`` model): the same with decays ``f_du``, ``f_dv``.
    ``input_divisor``: the float current ``x`` arriving at the node enters ``u`` as
    ``x / input_divisor`` in units of the node's float membrane (the quantiser's gain is
    ``S / (v_threshold · input_divisor)``)."""

    input_divisor: float
    du: int
    dv: int
    f_du: float
    f_dv: float
    v_threshold: float

    def __post_init__(self):
        for k in ("du", "dv"):
            if not 0 <= getattr(self, k) <= 4095:
                raise ValueError(f"{k} = {getattr(self, k)} outside Loihi's 12-bit [0, 4095]")
        if not (self.input_divisor > 0 and np.isfinite(self.input_divisor)):
            raise ValueError(f"input divisor {self.input_divisor} must be a positive number")


class NeuronNode:
    """Base of every spiking neuron node (see the module docstring); per-layer scalars, hard
    reset to 0, shape-preserving."""

    NIR_TYPE: type = None

    def out_shape(self, in_shape):
        return in_shape


def uniform(arr, what: str, name: str) -> float:
    """The one value of a per-neuron NIR parameter (UserError naming the node if it varies)."""
    from htakl_deploy.errors import UserError

    a = np.asarray(arr, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(a == a[0]):
        raise UserError(f"NIR node {name!r}: {what} must be uniform across the layer")
    return float(a[0])


def _families() -> tuple[type, ...]:
    from htakl_deploy.export.nodes.cuba_lif import CubaLIFNode
    from htakl_deploy.export.nodes.if_node import IFNode
    from htakl_deploy.export.nodes.lif import LIFNode

    return (LIFNode, IFNode, CubaLIFNode)


FAMILIES: tuple[type, ...] = _families()  # every neuron family, each NIR_TYPE mapped both ways
