"""CubaLIF: current-based LIF (a synaptic current with its own decay), hard reset to 0 (NIR ``CubaLIF``).

Float (per step, NIR's equations with one Euler step ``dt``; ``α = dt/τ_syn``, ``β = dt/τ_mem``)::

    I ← (1 − α)·I + α·w_in·X
    H = (1 − β)·V + β·r·I          spike iff H ≥ θ, then V = 0 (I is kept)

Loihi: exactly lava's ``u``/``v`` pair: ``u`` is ``β·r·I`` in ``v``'s units, so the current decay
``α`` becomes ``du = round(4096·α) − 1`` (Lava keeps ``4096 − (du + 1)`` 4096ths of ``u``), ``dv =
round(4096·β)``, input gain ``β·r·α·w_in``. NIR: snnTorch's ``Synaptic`` and SpikingJelly's
``CUBALIFNode`` exports write ``w_in = τ_syn/dt``, ``r = τ_mem/dt`` (input gain 1); Norse's
``LIFCell`` export writes ``w_in = r = 1``.

Bias (not exact; measured, not hidden). A constant input bias ``b`` (the conv/affine biases
before the layer) reaches the float membrane through the current: at step ``t = 1, 2, …`` it adds
``β·r·w_in·b·(1 − (1 − α)^t)`` to ``H``, ramping up to its steady value ``β·r·w_in·b``. Lava's LIF
has a bias on ``v`` only (``v ← v·(4096 − dv)/4096 + u + bias``), none on ``u``, so the quantiser
puts that steady value on ``v`` from the first step (``export.quantize``: ``bias_gain = 1/α``): the
fixed-point layer gets ``β·r·w_in·b·(1 − α)^t`` too much at step ``t`` — ``α = 1/2``: 50 %, 25 %,
12.5 %, … of the steady bias. Exact when ``α = 1`` (no current memory) or ``b = 0``; the hand-
written test graph (``tests/test_nodes.py``, α = 1/2, bias 0.1) keeps 98.3 % of the CubaLIF
spikes of the float run (8-bit rounding included). An exact mapping would need the bias on ``u``:
a population spiking every step, feeding the bias through a synapse (not built).
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import torch

from htakl_deploy.export.nodes import InputGain, LoihiNeuron, NeuronNode, first, uniform, with_gain


@dataclass(eq=False)
class CubaLIFNode(NeuronNode):
    """Current-based LIF, per-layer scalars: ``alpha = dt/tau_syn``, ``beta = dt/tau_mem`` in (0, 1]."""

    alpha: float
    beta: float
    r: float
    w_in: float
    v_threshold: float
    reset: str = "zero"

    NIR_TYPE = nir.CubaLIF

    def __post_init__(self):
        self.check_reset()
        for k in ("alpha", "beta", "r", "w_in", "v_threshold"):
            setattr(self, k, float(getattr(self, k)))
        for k in ("alpha", "beta"):
            if not 0.0 < getattr(self, k) <= 1.0:
                raise ValueError(f"cuba_lif {k} (dt/tau) must be in (0, 1], got {getattr(self, k)}")
        if not (self.r > 0 and self.w_in > 0 and self.v_threshold > 0):
            raise ValueError("cuba_lif r, w_in and v_threshold must be > 0")

    def float_step(self, x: torch.Tensor, state):
        """One step: (spikes, (I, V after reset)) for current ``x`` and state (None: 0)."""
        i, v = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
        i = (1.0 - self.alpha) * i + (self.alpha * self.w_in) * x
        h = (1.0 - self.beta) * v + (self.beta * self.r) * i
        s = (h >= self.v_threshold).to(h.dtype)
        return s, (i, h - s * self.v_threshold if self.subtract else h * (1.0 - s))

    def loihi(self) -> LoihiNeuron:
        du, dv = int(round(4096 * self.alpha)) - 1, int(round(4096 * self.beta))
        if du < 0:
            raise ValueError(f"cuba_lif current decay dt/tau_syn = {self.alpha} is below Loihi's 1/4096 step")
        return LoihiNeuron(1.0 / (self.beta * self.r * self.alpha * self.w_in), du, dv, self.alpha, self.beta,
                           self.v_threshold)

    def to_nir(self, shape, dt: float) -> nir.CubaLIF:
        full = lambda v: np.full(shape, v)  # noqa: E731
        return nir.CubaLIF(tau_syn=full(dt / self.alpha), tau_mem=full(dt / self.beta), r=full(self.r),
                           v_leak=full(0.0), v_threshold=full(self.v_threshold), v_reset=full(0.0),
                           w_in=full(self.w_in))

    def float_metadata(self) -> dict:
        return {"alpha_float": self.alpha, "beta_float": self.beta, "r_float": self.r, "w_in_float": self.w_in,
                "v_threshold_float": self.v_threshold}

    @classmethod
    def from_metadata(cls, meta: dict) -> "CubaLIFNode":
        return cls(*(float(meta[f"{k}_float"]) for k in ("alpha", "beta", "r", "w_in", "v_threshold")))

    @classmethod
    def from_nir(cls, name: str, n: nir.CubaLIF, dt: float) -> "CubaLIFNode | InputGain":
        """NIR's ``CubaLIF``: ``tau_syn``, ``tau_mem`` one per layer; per-neuron ``r``, ``w_in`` and
        thresholds fold into the weights (``InputGain``)."""
        from htakl_deploy.errors import UserError

        if uniform(n.v_leak, "v_leak", name) != 0 or uniform(n.v_reset, "v_reset", name) != 0:
            raise UserError(f"NIR node {name!r}: only v_leak = v_reset = 0 (reset to 0, or by subtraction: "
                            "--reset) is supported")
        alpha, beta = dt / uniform(n.tau_syn, "tau_syn", name), dt / uniform(n.tau_mem, "tau_mem", name)
        for what, v in (("tau_syn", alpha), ("tau_mem", beta)):
            if not 0.0 < v <= 1.0:
                raise UserError(f"NIR node {name!r}: dt/{what} = {v} (dt = {dt} s) must be in (0, 1] "
                                "(is --dt right?)")
        r, w_in, th = (np.asarray(a, dtype=np.float64) for a in (n.r, n.w_in, n.v_threshold))
        node = cls(round(alpha, 12), round(beta, 12), first(r), first(w_in), first(th))
        gain = (r * w_in) / (first(r) * first(w_in)) * (first(th) / th)
        return with_gain(node, np.broadcast_to(gain, np.broadcast_shapes(r.shape, w_in.shape, th.shape)))
