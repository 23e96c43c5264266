"""Feeding the graph's input into a population's bias, step by step (a netx input layer).

lava-dl's netx input layer is a LIF population whose ``a_in`` is never connected: the input is its
bias (Intel's PilotNet LIF sets ``bias_mant = image``). ``BiasWriter`` writes row ``t`` of its data
(``[*shape, steps]``, the population's ``bias_mant`` for each step) into the population's
``bias_mant`` through a ``RefPort`` in the management phase after step ``t``, so step ``t + 1``
integrates it (lava-nc's LIF recomputes ``bias_mant << bias_exp`` at every step); row 0 is the
population's initial ``bias_mant``. Samples can so run back to back in one Lava run, as the input
currents of other networks do through a ``RingBuffer``.

Each write is waited for (``PyRefPort.wait``: a read of the same Var, answered after the write is
set). A Lava process model sets a Var from a RefPort only while it polls its VarPorts in a
management phase, and each channel's messages are queued by a thread of their own: without the
wait, the writer reported the step done, the runtime started the next step, and a population
whose VarPort thread had not yet queued the write (a loaded machine) ran that step on the old
bias — one step late, now and then (``tests/test_netx_in.py`` delays those messages to check it).
With it, the next step cannot start before the population holds the bias: the step it lands at
no longer depends on timing. The cost is one round trip more each step (the bias read back).

Imported on its own by Lava's compiler (it scans this package's directory): absolute imports.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class BiasWriter(AbstractProcess):
    """Writes ``data[..., t]`` into ``var`` after step ``t`` (steps beyond the data: nothing)."""

    def __init__(self, *, var, data: np.ndarray) -> None:
        super().__init__(shape=var.shape)
        self.data = Var(shape=data.shape, init=data)
        self.ref = RefPort(var.shape)
        self.ref.connect_var(var)


# No tag: one model serves fixed_pt and floating_pt runs (the values are the population's own type).
@implements(proc=BiasWriter, protocol=LoihiProtocol)
@requires(CPU)
class PyBiasWriterModel(PyLoihiProcessModel):
    data: np.ndarray = LavaPyType(np.ndarray, float)
    ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, float)

    def post_guard(self) -> bool:
        return self.time_step < self.data.shape[-1]

    def run_post_mgmt(self) -> None:
        self.ref.write(self.data[..., self.time_step])
        self.ref.wait()  # set in the population before this step ends (see the module docstring)
