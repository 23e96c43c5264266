"""lava-nc's fixed_pt ``LIFReset`` with Loihi's refractory delay (netx's ``refDelay``).

lava-nc 0.10 has a refractory LIF in floating point only (``LIFRefractory``), and lava-dl's netx
does not pass ``refDelay`` on. ``LIFResetRefractory`` is ``LIFReset`` plus ``ref_delay``: after a
spike at step ``t`` the neuron's ``v`` stays 0 and it cannot fire for steps ``t + 1 … t + ref_delay
− 1``; ``u`` integrates as always — ``hw.lif_ref.refractory_hold``'s rule (the emulator's), written
out here in numpy as Lava's models are (tests/test_netx_in.py compares the two). ``ref_delay = 1`` is plain ``LIFReset`` (the builder uses that process then).

Imported on its own by Lava's compiler (it scans this package's directory): absolute imports.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.magma.core.model.py.ports import PyOutPort
from lava.proc.lif.models import AbstractPyLifModelFixed
from lava.proc.lif.process import LIFReset


class LIFResetRefractory(LIFReset):
    """``LIFReset`` whose neurons are held for ``ref_delay - 1`` steps after each spike."""

    def __init__(self, *, ref_delay: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.proc_params["ref_delay"] = int(ref_delay)
        self.ref = Var(shape=kwargs["shape"], init=0)


@implements(proc=LIFResetRefractory, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLifResetRefractoryModelBitAcc(AbstractPyLifModelFixed):
    """lava-nc's ``PyLifResetModelBitAcc`` (whose class cannot be subclassed into another process's
    model: Lava's ``implements`` refuses it) with the refractory hold."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    ref: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=6)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.ref_delay = proc_params["ref_delay"]

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def spiking_activation(self):
        return self.v > self.effective_vth

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
            self.ref *= 0
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in_data)
        held = self.ref > 0  # written out here, as Lava's own models are: the worker imports no torch
        s_out = self.spiking_activation() & ~held
        self.reset_voltage(spike_vector=s_out)
        self.v[held] = 0
        self.ref[:] = np.where(held, self.ref - 1, s_out * (self.ref_delay - 1))
        self.s_out.send(s_out)
