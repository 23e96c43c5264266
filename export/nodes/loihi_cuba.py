"""LOIHI / CUBA: Loihi's current-based neuron, integers first, as lava-dl's netx files hold it
(``neuron/type`` 'LOIHI' or 'CUBA', ``iDecay``, ``vDecay``, ``vThMant``, ``refDelay``, the layer's
``bias``; docs/NETX.md).

Fixed point, per step (lava-nc's ``fixed_pt`` LIF, which Intel's PilotNet LIF traces show to be
Loihi 2's arithmetic, docs/NETX.md)::

    u ← tr(u·(4096 − iDecay)) + (a << 6)            tr: ·/4096 truncated toward zero
    v ← tr(v·(4096 − vDecay)) + u + (bias << 6)     clipped to 24 bits
    spike iff v > vThMant << 6, then v = 0           (refDelay: ``hw.lif_ref.refractory_hold``)

lava-dl 0.6.0's netx builds lava-nc ``LIF(du = iDecay − 1, dv = vDecay, vth = vThMant, bias_exp = 6)``:
so ``du = iDecay − 1`` here too (iDecay 4096: ``u`` is this step's input alone; iDecay 0: ``u``
keeps everything, what Intel's PilotNet tutorial sets on its input layer), ``dv = vDecay``.

Float: the same update without truncation, in Lava's ``floating_pt`` units (``u``, ``v`` and the
threshold divided by 64; decays ``iDecay/4096``, ``vDecay/4096``) — slayer's CUBA neuron with
``current_decay = iDecay/4096``, ``voltage_decay = vDecay/4096``, ``threshold = vThMant``; the
layer's float weights are its integer weights, its bias is the file's. The bias is the neuron's
own (it enters ``v``, not ``u``: slayer adds it after the current's integration), so the synapse
nodes before it carry none.

``bias_input``: the netx input layer — its ``a_in`` is never connected; the graph's input is its
bias (Intel's PilotNet LIF: ``bias_mant = image``), added to ``v`` each step as ``x << 6``.
``LoihiCubaOutput``: the same neuron as the graph's output (a netx network's last layer), read
as its ``v`` or its spikes (``read``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from htakl_deploy.export.nodes import NIR_DT, LoihiNeuron, NeuronNode

BIAS_SHIFT = 6  # netx's bias_exp: the file's bias is in units of 64 (Lava's v)
MAX_REF_DELAY = 63  # Loihi's refractory delay field is 6 bits
READS = ("v", "spikes")


@dataclass(eq=False)
class LoihiCubaNode(NeuronNode):
    """Loihi CUBA neuron (see the module docstring). ``bias``: per channel, in the file's units
    (``bias_mant`` with ``bias_exp`` 6)."""

    i_decay: int
    v_decay: int
    v_th_mant: int
    ref_delay: int = 1
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1))
    bias_input: bool = False

    FAMILY = "loihi_cuba"  # tag in NIR metadata: read back as this family, not as a plain CubaLIF
    BIAS_EXP = BIAS_SHIFT
    NIR_TYPE = nir.CubaLIF
    NIR_TYPES = ()  # nir.CubaLIF reads as CubaLIFNode unless the family tag says otherwise
    OWN_BIAS = True

    def __post_init__(self):
        for k, lo, hi in (("i_decay", 0, 4096), ("v_decay", 0, 4096), ("v_th_mant", 1, 2**17),
                          ("ref_delay", 1, MAX_REF_DELAY)):
            value = getattr(self, k)
            if not (float(value) == int(value) and lo <= int(value) <= hi):
                raise ValueError(f"{k} = {value} must be an integer in [{lo}, {hi}]")
            setattr(self, k, int(value))
        self.bias = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        self.bias_input = bool(self.bias_input)

    # -- parameters --------------------------------------------------------------------------

    @property
    def du(self) -> int:
        return self.i_decay - 1

    @property
    def dv(self) -> int:
        return self.v_decay

    def bias_mant(self, channels: int) -> np.ndarray:
        """The integer bias per channel (``bias_exp`` = 6)."""
        b = np.broadcast_to(self.bias, (channels,)) if self.bias.size == 1 else self.bias
        return np.asarray(b, dtype=np.int64)

    def loihi(self) -> LoihiNeuron:
        """Input gain 1 and threshold ``vThMant`` with ``S = vThMant``: the quantiser's gain is 1, the
        integer weights are the float ones."""
        return LoihiNeuron(1.0, self.du, self.dv, self.i_decay / 4096.0, self.v_decay / 4096.0,
                           float(self.v_th_mant))

    def int_step(self, u, v, a, target, bias):
        from htakl_deploy.hw.lif_ref import lif_int_step

        if self.ref_delay != 1:
            raise ValueError("the timestep-aligned integer runner has no refractory state: use the emulator")
        return lif_int_step(u, v, a, du=target.du, dv=target.dv, bias_v=bias, vth=target.vth)

    # -- float semantics ---------------------------------------------------------------------

    def _float_states(self, x_tb: torch.Tensor):
        """(spikes, v after reset) ``[T, B, ...]`` in Lava's floating_pt units."""
        shape = x_tb.shape[2:]
        b = torch.as_tensor(self.bias, dtype=x_tb.dtype)
        b = b.reshape(-1, *([1] * (len(shape) - 1))) if len(shape) > 1 and b.numel() > 1 else b
        keep_u, keep_v = 1.0 - self.i_decay / 4096.0, 1.0 - self.v_decay / 4096.0
        u = torch.zeros_like(x_tb[0])
        v = torch.zeros_like(x_tb[0])
        held = torch.zeros(x_tb.shape[1:], dtype=torch.int64)
        spikes, vs = torch.empty_like(x_tb), torch.empty_like(x_tb)
        for t in range(x_tb.shape[0]):
            if self.bias_input:  # the input is the bias: u stays 0
                v = keep_v * v + b + x_tb[t]
            else:
                u = keep_u * u + x_tb[t]
                v = keep_v * v + u + b
            s = (v > self.v_th_mant) & (held == 0)
            v = torch.where(s | (held > 0), torch.zeros_like(v), v)
            held = torch.where(held > 0, held - 1, s.to(torch.int64) * (self.ref_delay - 1))
            spikes[t], vs[t] = s.to(x_tb.dtype), v
        return spikes, vs

    def run_float(self, x_tb: torch.Tensor) -> torch.Tensor:
        return self._float_states(x_tb)[0]

    # -- NIR ---------------------------------------------------------------------------------

    def to_nir(self, shape, dt: float) -> nir.CubaLIF:
        """NIR's CubaLIF with one Euler step per ``dt`` (``α = iDecay/4096``, ``β = vDecay/4096``,
        ``w_in = 1/α``, ``r = 1/β``, ``v_leak = bias/β``): infinite where a decay is 0 (no leak), which
        NIR's equations express only as a limit; the exact integers travel in the metadata."""
        a, bt = self.i_decay / 4096.0, self.v_decay / 4096.0
        inv = lambda x: np.inf if x == 0 else 1.0 / x  # noqa: E731
        full = lambda x: np.full(shape, x, dtype=np.float64)  # noqa: E731
        b = np.broadcast_to(self.bias.reshape(-1, *([1] * (len(shape) - 1))) if self.bias.size > 1 else self.bias,
                            shape)
        return nir.CubaLIF(tau_syn=full(dt * inv(a)), tau_mem=full(dt * inv(bt)), r=full(inv(bt)),
                           v_leak=b * inv(bt) if bt else np.zeros(shape), v_threshold=full(float(self.v_th_mant)),
                           v_reset=full(0.0), w_in=full(inv(a)), metadata=self.float_metadata())

    def float_metadata(self) -> dict:
        return {"family": self.FAMILY, "i_decay": np.int64(self.i_decay), "v_decay": np.int64(self.v_decay),
                "v_th_mant": np.int64(self.v_th_mant), "ref_delay": np.int64(self.ref_delay),
                "bias_float": np.asarray(self.bias, dtype=np.float64), "bias_input": np.int64(self.bias_input),
                "v_threshold_float": float(self.v_th_mant)}

    @classmethod
    def from_metadata(cls, meta: dict) -> "LoihiCubaNode":
        return cls(int(meta["i_decay"]), int(meta["v_decay"]), int(meta["v_th_mant"]), int(meta["ref_delay"]),
                   np.asarray(meta["bias_float"], dtype=np.float64), bool(int(meta["bias_input"])),
                   **cls._extra_from_metadata(meta))

    @classmethod
    def _extra_from_metadata(cls, meta: dict) -> dict:
        return {}

    @classmethod
    def from_nir(cls, name: str, n, dt: float) -> "LoihiCubaNode":
        return cls.from_metadata(n.metadata or {})

    @classmethod
    def read_nir(cls, name: str, n, dt: float) -> "LoihiCubaNode":
        from htakl_deploy.errors import UserError

        try:
            return cls.from_metadata(n.metadata or {})
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"NIR node {name!r}: damaged {cls.FAMILY} metadata ({e})") from None


@dataclass(eq=False)
class LoihiCubaOutput(LoihiCubaNode):
    """A netx network's last layer as the graph's output: the same neuron, read as its ``v`` each
    step (a non-spiking readout: PilotNet's ``vThMant = 2^17 − 1``) or as its spikes."""

    read: str = "v"

    ROLE = "output"
    FAMILY = "loihi_cuba_output"
    NIR_TYPES = ()

    def __post_init__(self):
        super().__post_init__()
        if self.read not in READS:
            raise ValueError(f"read must be one of {READS}, got {self.read!r}")

    def run_float(self, x_tb: torch.Tensor) -> torch.Tensor:
        spikes, v = self._float_states(x_tb)
        return v if self.read == "v" else spikes

    def float_metadata(self) -> dict:
        return {**super().float_metadata(), "family": self.FAMILY, "read": self.read}

    @classmethod
    def _extra_from_metadata(cls, meta: dict) -> dict:
        read = meta.get("read", "v")
        return {"read": read.decode() if isinstance(read, bytes) else str(read)}


FAMILY_TAGS = {c.FAMILY: c for c in (LoihiCubaNode, LoihiCubaOutput)}
__all__ = ["LoihiCubaNode", "LoihiCubaOutput", "FAMILY_TAGS", "BIAS_SHIFT", "NIR_DT"]
