"""IF: integrate-and-fire without leak, hard reset to 0 (NIR ``IF``).

Float (per step): ``H = V + g·X`` with ``g = r·dt`` (NIR's ``dv/dt = r·I``, one Euler step),
spike iff ``H ≥ θ``, then ``V = 0``. Loihi: ``du = 4095``, ``dv = 0`` (no leak), input gain
``g``. NIR: SpikingJelly's ``IFNode`` export writes ``r = 1/dt`` (so ``g = 1``: ``H = V + X``).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch

from htakl_deploy.export.nodes import InputGain, LoihiNeuron, NeuronNode, first, uniform, with_gain
from htakl_deploy.export.nodes.lif import lif_float_step


@dataclass(eq=False)
class IFNode(NeuronNode):
    """Non-leaky integrate-and-fire: ``H = V + gain·X``, spike iff ``H >= v_threshold``, ``V = 0``."""

    gain: float
    v_threshold: float
    reset: str = "zero"

    NIR_TYPE = nir.IF

    def __post_init__(self):
        self.check_reset()
        self.gain, self.v_threshold = float(self.gain), float(self.v_threshold)
        if not (self.gain > 0 and np.isfinite(self.gain)):
            raise ValueError(f"if gain (r·dt) must be > 0, got {self.gain}")
        if not self.v_threshold > 0.0:
            raise ValueError(f"if v_threshold must be > 0, got {self.v_threshold}")

    def float_step(self, x: torch.Tensor, v: torch.Tensor | None):
        """One step: (spikes, V after reset) for current ``x`` and membrane ``v`` (None: 0)."""
        x = x if self.gain == 1.0 else self.gain * x
        return lif_float_step(torch.zeros_like(x) if v is None else v, x, tau=None, v_threshold=self.v_threshold,
                              v_reset=None if self.subtract else 0.0)

    def loihi(self) -> LoihiNeuron:
        return LoihiNeuron(1.0 / self.gain, 4095, 0, 1.0, 0.0, self.v_threshold)

    def to_nir(self, shape, dt: float) -> nir.IF:
        return nir.IF(r=np.full(shape, self.gain / dt), v_threshold=np.full(shape, self.v_threshold),
                      v_reset=np.zeros(shape))

    def float_metadata(self) -> dict:
        return {"gain_float": self.gain, "v_threshold_float": self.v_threshold}

    @classmethod
    def from_metadata(cls, meta: dict) -> "IFNode":
        return cls(float(meta["gain_float"]), float(meta["v_threshold_float"]))

    @classmethod
    def from_nir(cls, name: str, n: nir.IF, dt: float) -> "IFNode | InputGain":
        """NIR's ``IF``: gain ``r·dt``; per-neuron ``r`` and thresholds fold into the weights (``InputGain``)."""
        from htakl_deploy.errors import UserError

        if uniform(n.v_reset, "v_reset", name) != 0:
            raise UserError(f"NIR node {name!r}: only v_reset = 0 (reset to 0, or by subtraction: --reset) is supported")
        r, th = np.asarray(n.r, dtype=np.float64), np.asarray(n.v_threshold, dtype=np.float64)
        node = cls(round(first(r) * dt, 12), first(th))
        return with_gain(node, np.broadcast_to(r / first(r) * (first(th) / th), np.broadcast_shapes(r.shape, th.shape)))
