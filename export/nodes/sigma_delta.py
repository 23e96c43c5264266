"""SDNN: sigma-delta neurons with graded spikes, as lava-dl's netx files hold them (``neuron/type``
'SDNN', ``vThMant``, the layer's ``bias``; ``sigma_output`` on a last layer). Intel's PilotNet SDNN.

Fixed point, per step (lava-nc's ``fixed_pt`` ``Delta`` / ``SigmaDelta`` / ``Sigma`` models, which
lava-dl's netx builds with ``spike_exp = state_exp = 6``; ``e = spike_exp + state_exp``)::

    delta  (the input layer):   a = a_in << e                    the input, as integers
    sigma-delta:                σ ← σ + a_in;  a = ReLU(σ + bias << e)
    both:                       d = a − a_prev + r               r: the residue
                                s = d if |d| ≥ vThMant << e else 0
                                r ← d − s;  a_prev ← a;  out = s >> state_exp     (a graded spike)
    sigma (a ``sigma_output`` last layer):  σ ← σ + a_in;  out = σ

Every value is an int32 in Lava (``sd_int_step`` wraps where Lava's arrays would). A neuron sends a
message only when ``out ≠ 0``; its payload is the graded value (lava-dl: 16 message bits, the
``messageBits`` field or netx's default). netx ignores ``reset_interval`` for SDNN (it warns); our
plan resets the state at each sample's first step (``Population.neuron``), so samples are
independent, as for every other family.

Float: the same without the shifts (``e`` = 0, thresholds and biases as the file's integers in
units of 2^6 — slayer's ``sigma_delta`` neuron, ``threshold = vThMant / 64``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from htakl_deploy.export.nodes import LoihiNeuron, NeuronNode

SPIKE_EXP = 6  # netx's default ``spike_exp`` (hdf5.Network(spike_exp=6))
STATE_EXP = 6  # netx's fixed ``state_exp``
KINDS = ("delta", "sigma_delta", "sigma")
MESSAGE_BITS = 16  # netx's default graded-spike payload for SDNN layers


def _i32(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def sd_int_step(kind: str, state: dict, a_in: np.ndarray, *, vth: int, bias_v, spike_exp: int = SPIKE_EXP,
                state_exp: int = STATE_EXP) -> np.ndarray:
    """One fixed-point step of a sigma-delta population (lava-nc's models, see the module docstring):
    updates ``state`` (``sigma``, ``act``, ``residue``: int64 arrays, zeros at a sample's start) in
    place and returns the graded output (``sigma`` for a ``sigma`` readout). ``bias_v`` = ``bias <<
    (spike_exp + state_exp)``."""
    e = spike_exp + state_exp
    a_in = np.asarray(a_in, dtype=np.int64)
    if kind == "sigma":
        state["sigma"] = _i32(state["sigma"] + a_in)
        return state["sigma"]
    if kind == "delta":
        act = _i32(a_in << e)
    else:
        state["sigma"] = _i32(state["sigma"] + a_in)
        act = np.maximum(_i32(state["sigma"] + bias_v), 0)
    delta = _i32(act - state["act"] + state["residue"])
    s = np.where(np.abs(delta) >= (int(vth) << e), delta, 0)
    state["residue"] = _i32(delta - s)
    state["act"] = act
    return s >> state_exp


def sd_run(kind: str, a_tb: np.ndarray, *, vth: int, bias_v, spike_exp: int = SPIKE_EXP,
           state_exp: int = STATE_EXP, want_state: bool = False):
    """All steps of ``a_tb`` ``[T, B, ...]`` from a zero state: outputs ``[T, B, ...]`` (and, with
    ``want_state``, ``sigma`` and ``act`` per step)."""
    shape = a_tb.shape[1:]
    state = {k: np.zeros(shape, np.int64) for k in ("sigma", "act", "residue")}
    out = np.zeros(a_tb.shape, np.int64)
    sig, act = (np.zeros(a_tb.shape, np.int64), np.zeros(a_tb.shape, np.int64)) if want_state else (None, None)
    for t in range(a_tb.shape[0]):
        out[t] = sd_int_step(kind, state, a_tb[t], vth=vth, bias_v=bias_v, spike_exp=spike_exp, state_exp=state_exp)
        if want_state:
            sig[t], act[t] = state["sigma"], state["act"]
    return (out, sig, act) if want_state else out


@dataclass(eq=False)
class SigmaDeltaNode(NeuronNode):
    """A netx SDNN layer: ``kind`` 'delta' (the input layer: the graph's input enters its ``a_in``) or
    'sigma_delta'; ``bias`` per channel in the file's units (× 2^e in Lava)."""

    v_th_mant: int
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1))
    kind: str = "sigma_delta"

    FAMILY = "sigma_delta"
    BIAS_EXP = SPIKE_EXP + STATE_EXP  # Lava's SigmaDelta scales the bias by 2^(spike_exp + state_exp)
    NIR_TYPE = nir.Threshold  # the nearest NIR node; the exact fields travel in metadata
    NIR_THRESHOLD = "threshold"
    NIR_TYPES = ()
    OWN_BIAS = True
    MESSAGE_BITS = MESSAGE_BITS  # its spikes carry payloads of this many bits

    def __post_init__(self):
        if not (float(self.v_th_mant) == int(self.v_th_mant) and 0 <= int(self.v_th_mant) < 2**23):
            raise ValueError(f"v_th_mant = {self.v_th_mant} must be an integer in [0, 2^23)")
        self.v_th_mant = int(self.v_th_mant)
        self.bias = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def bias_input(self) -> bool:
        return False

    @property
    def neuron_model(self) -> str:
        """Its model in the deployment plan (``hw.plan.NEURONS``)."""
        return self.kind

    @property
    def input_current(self) -> bool:
        """The delta input layer: the graph's input is its ``a_in`` (lava-dl's tests feed
        ``in_layer.neuron.a_in``)."""
        return self.kind == "delta"

    @property
    def du(self) -> int:  # no LIF dynamics: placeholders for the quantised target
        return 4095

    @property
    def dv(self) -> int:
        return 0

    @property
    def ref_delay(self) -> int:
        return 1

    def bias_mant(self, channels: int) -> np.ndarray:
        b = np.broadcast_to(self.bias, (channels,)) if self.bias.size == 1 else self.bias
        return np.asarray(b, dtype=np.int64)

    def loihi(self) -> LoihiNeuron:
        """Gain 1 (its weights are the file's integers); du/dv unused (no LIF dynamics)."""
        return LoihiNeuron(1.0, 4095, 0, 1.0, 0.0, float(max(self.v_th_mant, 1)))

    def int_step(self, u, v, a, target, bias):
        raise ValueError("a sigma-delta layer runs in the emulator (hw.emulator), not in the timestep-aligned "
                         "integer runner")

    def run_float(self, x_tb: torch.Tensor) -> torch.Tensor:
        """The float model: thresholds and biases in units of 2^6 of the integers (no truncation)."""
        shape = x_tb.shape[2:]
        b = torch.as_tensor(self.bias, dtype=x_tb.dtype) / 64.0
        b = b.reshape(-1, *([1] * (len(shape) - 1))) if len(shape) > 1 and b.numel() > 1 else b
        vth = self.v_th_mant / 64.0
        sigma = torch.zeros_like(x_tb[0])
        act = torch.zeros_like(x_tb[0])
        residue = torch.zeros_like(x_tb[0])
        out = torch.empty_like(x_tb)
        for t in range(x_tb.shape[0]):
            if self.kind == "sigma":
                sigma = sigma + x_tb[t]
                out[t] = sigma
                continue
            if self.kind == "delta":
                new = x_tb[t]
            else:
                sigma = sigma + x_tb[t]
                new = torch.relu(sigma + b)
            d = new - act + residue
            s = torch.where(d.abs() >= vth, d, torch.zeros_like(d))
            residue, act = d - s, new
            out[t] = s
        return out

    def to_nir(self, shape, dt: float) -> nir.Threshold:
        return nir.Threshold(threshold=np.full(shape, self.v_th_mant / 64.0), metadata=self.float_metadata())

    def float_metadata(self) -> dict:
        return {"family": self.FAMILY, "v_th_mant": np.int64(self.v_th_mant),
                "bias_float": np.asarray(self.bias, dtype=np.float64), "kind": self.kind,
                "v_threshold_float": float(self.v_th_mant)}

    @classmethod
    def from_metadata(cls, meta: dict) -> "SigmaDeltaNode":
        kind = meta["kind"]
        return cls(int(meta["v_th_mant"]), np.asarray(meta["bias_float"], dtype=np.float64),
                   kind.decode() if isinstance(kind, bytes) else str(kind))

    @classmethod
    def from_nir(cls, name: str, n, dt: float) -> "SigmaDeltaNode":
        return cls.from_metadata(n.metadata or {})

    @classmethod
    def read_nir(cls, name: str, n, dt: float) -> "SigmaDeltaNode":
        from htakl_deploy.errors import UserError

        try:
            return cls.from_metadata(n.metadata or {})
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"NIR node {name!r}: damaged {cls.FAMILY} metadata ({e})") from None


@dataclass(eq=False)
class SigmaDeltaOutput(SigmaDeltaNode):
    """A netx SDNN network's last layer as the graph's output: read as its graded spikes
    ('sigma_delta') or, with ``sigma_output``, as its ``sigma`` each step (kind 'sigma', PilotNet
    SDNN's steering output)."""

    ROLE = "output"
    FAMILY = "sigma_delta_output"
    NIR_TYPES = ()

    @property
    def read(self) -> str:
        return "sigma" if self.kind == "sigma" else "spikes"
