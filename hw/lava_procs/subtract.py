"""Reset by subtraction: ``LIFReset`` whose spiking neurons lose the threshold from ``v`` instead of
being set to 0 — what Loihi 2 runs as a programmable (microcoded) neuron, and what snnTorch's
``reset_mechanism="subtract"`` and the NIR paper's ``braille_noDelay_noBias_subtract`` graph mean.

lava-nc 0.10's LIF models reset to 0 only. ``LIFResetSubtract`` is ``LIFReset`` (same variables,
same per-sample ``reset_interval``) with two models written out from lava's abstract LIF models
(lava's concrete ``PyLifResetModel*`` classes cannot be reused for another process: its
``implements`` refuses them):

- ``fixed_pt``: lava's bit-accurate dynamics (``AbstractPyLifModelFixed.subthr_dynamics``), then
  ``v -= vth << 6`` for the neurons that spiked — ``hw.lif_ref.lif_update(..., subtract=True)``,
  the emulator's step, checked spike for spike against this model (tests/test_wild.py);
- ``floating_pt``: lava's float dynamics, then ``v -= vth``.

Imported on its own by Lava's compiler (it scans this package's directory): absolute imports.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat
from lava.proc.lif.process import LIFReset


class LIFResetSubtract(LIFReset):
    """``LIFReset`` with reset by subtraction: after a spike ``v`` keeps what exceeded the threshold."""


class _PerSample:
    """``LIFReset``'s step: zero ``u`` and ``v`` at each sample's first step, then the model's
    dynamics, spikes and (its) reset."""

    def _start(self, proc_params) -> None:
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval

    def _prepare(self) -> None:  # the fixed-point model scales its bias and threshold first
        pass

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
        self._prepare()
        self.subthr_dynamics(activation_in=a_in_data)
        s_out = self.spiking_activation()
        self.reset_voltage(spike_vector=s_out)
        self.s_out.send(s_out)


@implements(proc=LIFResetSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLifResetSubtractModelBitAcc(_PerSample, AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0
        self._start(proc_params)

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[spike_vector] -= self.effective_vth

    def _prepare(self) -> None:
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()


@implements(proc=LIFResetSubtract, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLifResetSubtractModelFloat(_PerSample, AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._start(proc_params)

    def spiking_activation(self):
        return self.v > self.vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[spike_vector] -= self.vth
