"""LIF: SpikingJelly's leaky integrate-and-fire with hard reset to 0 (NIR ``LIF``).

Float (per step): ``H = V + (X − V)/τ`` (``decay_input``; else ``H = V − V/τ + X``), spike iff
``H ≥ θ``, then ``V = 0``. Loihi: no current memory (``du = 4095``: ``u`` is this step's input),
``dv = round(4096/τ)``, input gain ``1/τ`` with ``decay_input`` (else 1).
NIR: ``tau = τ·dt`` s, ``r = 1`` (``decay_input``) or ``τ`` (input added unscaled: snnTorch's
``Leaky`` export, ``r = tau/dt``), ``v_leak = v_reset = 0``; any other ``r``, and per-neuron ``r`` or
thresholds, read as an input gain folded into the weights (``from_nir``).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch
from spikingjelly.activation_based import neuron as sj_neuron

from htakl_deploy.export.nodes import InputGain, LoihiNeuron, NeuronNode, first, uniform, with_gain


def lif_float_step(v: torch.Tensor, x: torch.Tensor, *, tau: float | None, v_threshold: float,
                   v_reset: float | None = 0.0, decay_input: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One float step of SpikingJelly's LIF / IF — the only copy of the float neuron update in the
    package (the float runner, ``run_float``, and the ONNX export, ``onnx_export.UnrolledLIF``, use
    it). The same operations in the same order as SpikingJelly's reference charge, so float64 runs
    give identical spikes::

        H = V + (X - (V - V_reset)) / tau   (LIF, decay_input)   H = V - (V - V_reset)/tau + X  (not)
        H = V + X                           (IF: tau None)
        S = [H >= v_threshold]
        V = S·V_reset + (1 - S)·H           (hard reset)         V = H - S·v_threshold  (soft: None)

    Returns (spikes in x's dtype, V after reset)."""
    rest = 0.0 if v_reset is None else v_reset
    if tau is None:
        h = v + x
    elif decay_input:
        h = v + (x - (v - rest)) / tau
    else:
        h = v - (v - rest) / tau + x
    s = (h >= v_threshold).to(h.dtype)
    v = h - s * v_threshold if v_reset is None else s * v_reset + (1.0 - s) * h
    return s, v


@dataclass(eq=False)
class LIFNode(NeuronNode):
    """SpikingJelly LIF: ``H = V(1 - 1/tau) + X/tau`` (``decay_input``, else ``+ X``), spike iff
    ``H >= v_threshold``, then ``V = 0`` (``reset`` "subtract": ``V = H − v_threshold``). Per-layer scalars."""

    tau: float
    v_threshold: float
    decay_input: bool = True
    reset: str = "zero"

    NIR_TYPE = nir.LIF

    def __post_init__(self):
        self.check_reset()
        self.tau = float(self.tau)
        self.v_threshold = float(self.v_threshold)
        self.decay_input = bool(self.decay_input)
        if not self.tau > 1.0:
            raise ValueError(f"lif tau must be > 1, got {self.tau}")
        if not self.v_threshold > 0.0:
            raise ValueError(f"lif v_threshold must be > 0, got {self.v_threshold}")

    def float_step(self, x: torch.Tensor, v: torch.Tensor | None):
        """One step: (spikes, V after reset) for current ``x`` and membrane ``v`` (None: 0)."""
        return lif_float_step(torch.zeros_like(x) if v is None else v, x, tau=self.tau, v_threshold=self.v_threshold,
                              v_reset=None if self.subtract else 0.0, decay_input=self.decay_input)

    TORCH_TYPES = (sj_neuron.LIFNode,)

    @classmethod
    def from_torch(cls, path: str, m) -> "LIFNode":
        if m.v_reset is None or float(m.v_reset) != 0.0:
            raise ValueError(f"module {path!r} (LIFNode): only hard reset to 0 is deployable, got v_reset={m.v_reset}")
        return cls(m.tau, m.v_threshold, m.decay_input)

    def loihi(self) -> LoihiNeuron:
        return LoihiNeuron(self.tau if self.decay_input else 1.0, 4095, int(round(4096.0 / self.tau)), 1.0,
                           1.0 / self.tau, self.v_threshold)

    def to_nir(self, shape, dt: float) -> nir.LIF:
        return nir.LIF(tau=np.full(shape, self.tau * dt), r=np.full(shape, 1.0 if self.decay_input else self.tau),
                       v_leak=np.zeros(shape), v_threshold=np.full(shape, self.v_threshold),
                       v_reset=np.zeros(shape))

    def float_metadata(self) -> dict:
        return {"tau_float": self.tau, "v_threshold_float": self.v_threshold,
                "decay_input": np.int64(self.decay_input)}

    @classmethod
    def from_metadata(cls, meta: dict) -> "LIFNode":
        return cls(float(meta["tau_float"]), float(meta["v_threshold_float"]), bool(meta["decay_input"]))

    @classmethod
    def from_nir(cls, name: str, n: nir.LIF, dt: float) -> "LIFNode | InputGain":
        """NIR's ``LIF`` at step ``dt``: ``tau`` one per layer; ``r`` and ``v_threshold`` any, per neuron
        too. ``r = 1`` reads as ``decay_input`` and ``r = tau/dt`` (one value) as its input added
        unscaled, exactly; any other ``r`` (Rockpool writes ``(tau/dt)·e^(−dt/tau)``) and per-neuron
        thresholds are an input gain folded into the weights before the layer (``InputGain``)."""
        from htakl_deploy.errors import UserError

        tau = uniform(n.tau, "tau", name) / dt
        if uniform(n.v_leak, "v_leak", name) != 0 or uniform(n.v_reset, "v_reset", name) != 0:
            raise UserError(f"NIR node {name!r}: only v_leak = v_reset = 0 (reset to 0, or by subtraction: "
                            "--reset) is supported")
        if not tau > 1.0:
            raise UserError(f"NIR node {name!r}: tau/dt = {tau} (dt = {dt} s) must be > 1 for a leaky neuron "
                            "(is --dt right?)")
        r = np.asarray(n.r, dtype=np.float64)
        r0, one = first(r), bool(np.all(r == first(r)))
        decay_input = not (one and np.isclose(r0, tau) and not np.isclose(r0, 1.0))
        # the r the node itself means (a file's 1 or tau/dt, to rounding), the rest a gain on its input
        ref = r0 if one and (np.isclose(r0, 1.0) or not decay_input) else 1.0
        th = np.asarray(n.v_threshold, dtype=np.float64)
        node = cls(round(tau, 9), first(th), decay_input)
        return with_gain(node, np.broadcast_to(r / ref * (first(th) / th), np.broadcast_shapes(r.shape, th.shape)))
