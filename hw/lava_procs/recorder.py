"""Recording a Lava run into file-backed arrays: one write per step, one read at the end.

Lava 0.10's ``Monitor`` keeps its recording in a Var, and ``Var.get`` sends it back from the
child process one value per message (≈ 29 µs per value: 35 s of the demo's 69 s). These two
processes write each step's values straight into a ``.npy`` file that the parent created and
mapped (``numpy.lib.format.open_memmap``); their process models run in Lava's forked children,
which map the same file, so after the run the parent reads every recording at once, with no
message at all. They only record: the network's own Lava processes compute.

- ``SpikeRecorder``: an ``InPort`` connected to a population's ``s_out``; row ``t − 1`` of the
  file is what arrived at step ``t`` (as ``Monitor`` records an ``OutPort``).
- ``VarRecorder``: a ``RefPort`` to a Var (the readout's current ``u``), read in the management
  phase after every step, as ``Monitor`` reads a Var.

The file is ``[steps, *shape]``. This module is imported on its own by Lava's compiler (it scans
the package's directory for process models), so its imports are absolute.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


def create_recording(path: str, shape: tuple[int, ...], steps: int, dtype) -> np.memmap:
    """The zero-filled ``[steps, *shape]`` file a recorder writes (created by the parent)."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(steps, *shape))


class SpikeRecorder(AbstractProcess):
    """Writes what its ``a_in`` receives at step ``t`` into row ``t − 1`` of the file ``path``."""

    def __init__(self, *, shape: tuple[int, ...], path: str) -> None:
        super().__init__(shape=shape, path=str(path))
        self.a_in = InPort(shape=shape)


class VarRecorder(AbstractProcess):
    """Writes the value of ``var`` after step ``t`` into row ``t − 1`` of the file ``path``."""

    def __init__(self, *, var, path: str) -> None:
        super().__init__(shape=var.shape, path=str(path))
        self.ref = RefPort(var.shape)
        self.ref.connect_var(var)


class _FileRows:
    def _rows(self) -> np.memmap:
        rows = getattr(self, "_memmap", None)
        if rows is None:
            rows = self._memmap = np.load(self.proc_params["path"], mmap_mode="r+")
        return rows


# No tag: like Lava's Monitor model, one model serves fixed_pt and floating_pt runs (the ports'
# types are Monitor's).
@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
class PySpikeRecorderModel(PyLoihiProcessModel, _FileRows):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, int)

    def run_spk(self) -> None:
        self._rows()[self.time_step - 1] = self.a_in.recv()


@implements(proc=VarRecorder, protocol=LoihiProtocol)
@requires(CPU)
class PyVarRecorderModel(PyLoihiProcessModel, _FileRows):
    ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, int)

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        self._rows()[self.time_step - 1] = self.ref.read()
