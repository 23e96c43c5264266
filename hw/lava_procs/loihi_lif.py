"""lava-nc's ``LIFReset`` with what Loihi 2 adds to it: a refractory delay (netx's ``refDelay``) and
reset by subtraction (a programmable, microcoded neuron on Loihi 2) — one process, one step.

lava-nc 0.10's LIF models reset to 0 and have a refractory delay in floating point only
(``LIFRefractory``); lava-dl's netx does not pass ``refDelay`` on. ``LIFResetLoihi`` is
``LIFReset`` (same variables, same per-sample ``reset_interval``) plus

- ``ref_delay``: after a spike at step ``t`` the neuron's ``v`` stays 0 and it cannot fire for steps
  ``t + 1 … t + ref_delay − 1``; ``u`` integrates as always (``hw.lif_ref.refractory_hold``'s rule,
  tests/test_netx_in.py);
- ``reset``: ``"zero"`` (lava's) or ``"subtract"``: the spiking neurons lose the threshold from ``v``
  (``hw.lif_ref.lif_update(..., subtract=True)``: what snnTorch's ``reset_mechanism="subtract"`` and
  the NIR paper's ``braille_noDelay_noBias_subtract`` graph mean; tests/test_wild.py).

Two models written out from lava's abstract LIF models (lava's concrete ``PyLifResetModel*`` classes
cannot be reused for another process: its ``implements`` refuses them), in numpy as Lava's own are
(the worker imports no torch): ``fixed_pt``, bit-accurate, both features; ``floating_pt``, reset by
subtraction only (a refractory delay is refused by the builder, ``hw.lava_net``). The builder uses
lava's plain ``LIFReset`` where neither applies.

Imported on its own by Lava's compiler (it scans this package's directory): absolute imports.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIFReset

RESETS = ("zero", "subtract")


class LIFResetLoihi(LIFReset):
    """``LIFReset`` with a refractory delay and a reset mode (see the module docstring)."""

    def __init__(self, *, ref_delay: int = 1, reset: str = "zero", **kwargs) -> None:
        if reset not in RESETS or int(ref_delay) < 1:
            raise ValueError(f"reset {reset!r} not in {RESETS} or ref_delay {ref_delay} < 1")
        super().__init__(**kwargs)
        self.proc_params["ref_delay"] = int(ref_delay)
        self.proc_params["subtract"] = reset == "subtract"
        self.ref = Var(shape=kwargs["shape"], init=0)


class _Step:
    """``LIFReset``'s step: zero ``u``, ``v`` (and the refractory count) at each sample's first step,
    then the model's dynamics, spikes, the hold and the reset."""

    def _start(self, proc_params) -> None:
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.ref_delay = proc_params["ref_delay"]
        self.subtract = proc_params["subtract"]

    def _prepare(self) -> None:  # the fixed-point model scales its bias and threshold first
        pass

    def _vth(self):
        return self.vth

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
            self.ref *= 0
        self._prepare()
        self.subthr_dynamics(activation_in=a_in_data)
        held = self.ref > 0
        s_out = (self.v > self._vth()) & ~held
        if self.subtract:
            self.v[s_out] -= self._vth()
        else:
            self.v[s_out] = 0
        self.v[held] = 0
        self.ref[:] = np.where(held, self.ref - 1, s_out * (self.ref_delay - 1))
        self.s_out.send(s_out)


@implements(proc=LIFResetLoihi, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLifResetLoihiModelBitAcc(_Step, AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    ref: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=6)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0
        self._start(proc_params)

    def _vth(self):
        return self.effective_vth

    def _prepare(self) -> None:
        self.scale_bias()
        if not self.isthrscaled:
            self.effective_vth = np.left_shift(self.vth, self.vth_shift)
            self.isthrscaled = True


@implements(proc=LIFResetLoihi, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLifResetLoihiModelFloat(_Step, AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)
    ref: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._start(proc_params)
