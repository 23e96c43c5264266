"""Recording a Lava run into shared arrays: one write per step, one read at the end.

Lava 0.10's ``Monitor`` keeps its recording in a Var, and ``Var.get`` sends it back from the
child process one value per message (≈ 29 µs per value: 35 s of the demo's 69 s). These two
processes write each step's values straight into an array in shared memory that the parent
created before Lava forked its children (an anonymous ``MAP_SHARED`` mapping, registered here
under a key the process carries): the children inherit the mapping, so after the run the parent
reads every recording at once, with no message and no file. Lava runs its process models in
forked children (``lava_compat``); a model that does not find its array fails loudly. They only
record: the network's own Lava processes compute.

- ``SpikeRecorder``: an ``InPort`` connected to a population's ``s_out``; row ``t − 1`` of the
  file is what arrived at step ``t`` (as ``Monitor`` records an ``OutPort``).
- ``VarRecorder``: a ``RefPort`` to a Var (the readout's current ``u``), read in the management
  phase after every step, as ``Monitor`` reads a Var.

The array is ``[steps, *shape]``. This module is imported on its own by Lava's compiler (it scans
the package's directory for process models), so its imports are absolute.
"""

from __future__ import annotations

import mmap
import os
import uuid

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


_SHARED: dict[str, np.ndarray] = {}  # key → recording array (its buffer an anonymous shared mmap)


def create_recording(shape: tuple[int, ...], steps: int, dtype) -> tuple[str, np.ndarray]:
    """A zero-filled ``[steps, *shape]`` array in shared memory for a recorder, and its key.
    Create it in the parent before the run (before Lava forks); ``release`` it after."""
    dtype = np.dtype(dtype)
    n = steps * int(np.prod(shape)) * dtype.itemsize
    buf = mmap.mmap(-1, max(n, 1), flags=mmap.MAP_SHARED)
    key = f"{os.getpid()}.{uuid.uuid4().hex}"
    _SHARED[key] = np.frombuffer(buf, dtype=dtype, count=n // dtype.itemsize).reshape(steps, *shape)
    return key, _SHARED[key]


def release(key: str) -> None:
    _SHARED.pop(key, None)


class SpikeRecorder(AbstractProcess):
    """Writes what its ``a_in`` receives at step ``t`` into row ``t − 1`` of recording ``key``."""

    def __init__(self, *, shape: tuple[int, ...], key: str) -> None:
        super().__init__(shape=shape, key=key)
        self.a_in = InPort(shape=shape)


class VarRecorder(AbstractProcess):
    """Writes the value of ``var`` after step ``t`` into row ``t − 1`` of recording ``key``."""

    def __init__(self, *, var, key: str) -> None:
        super().__init__(shape=var.shape, key=key)
        self.ref = RefPort(var.shape)
        self.ref.connect_var(var)


class _SharedRows:
    def _rows(self) -> np.ndarray:
        key = self.proc_params["key"]
        if key not in _SHARED:
            raise RuntimeError(f"recording {key} not found: recorders need Lava's process models "
                               "forked from the process that built the network")
        return _SHARED[key]


# No tag: like Lava's Monitor model, one model serves fixed_pt and floating_pt runs (the ports'
# types are Monitor's).
@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
class PySpikeRecorderModel(PyLoihiProcessModel, _SharedRows):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, int)

    def run_spk(self) -> None:
        self._rows()[self.time_step - 1] = self.a_in.recv()


@implements(proc=VarRecorder, protocol=LoihiProtocol)
@requires(CPU)
class PyVarRecorderModel(PyLoihiProcessModel, _SharedRows):
    ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, int)

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        self._rows()[self.time_step - 1] = self.ref.read()
