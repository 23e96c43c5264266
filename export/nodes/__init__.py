"""Node types: one module per family, each holding everything about it.

Every node of a ``StudentGraph`` (``export.graph``) is a dataclass subclassing ``Node``; its
``ROLE`` says where it sits in the connection walk (``export.graph.connections``):

=========  ===================================================  ================================
role       what it is                                           families (modules here)
=========  ===================================================  ================================
input      the graph's analog input                             ``InputNode`` (io.py)
synapse    a linear map with weights and bias                   ``Conv2dNode`` (conv.py),
                                                                ``Conv1dNode`` (conv1d.py),
                                                                ``DenseNode`` (dense.py)
route      moves a neuron's values to the next synapses         ``PoolNode`` (pool.py),
           (folded into them on Loihi)                          ``FlattenNode`` (flatten.py)
neuron     a spiking neuron layer (lava-nc's LIF)               ``LIFNode`` (lif.py), ``IFNode``
                                                                (if_node.py), ``CubaLIFNode``
                                                                (cuba_lif.py), ``LoihiCubaNode``
                                                                (loihi_cuba.py: netx's LOIHI/CUBA),
                                                                ``SigmaDeltaNode`` (sigma_delta.py:
                                                                netx's SDNN, graded spikes)
output     the logits: the readout population                   ``OutputNode`` (io.py),
                                                                ``LoihiCubaOutput`` (loihi_cuba.py),
                                                                ``SigmaDeltaOutput`` (sigma_delta.py)
=========  ===================================================  ================================

What every node type holds (the callers dispatch through these methods, never on the type):

- its parameters, validated in ``__post_init__``; ``out_shape(in_shape)``;
- float semantics ``run_float(h_tb)`` on ``[T, B, ...]`` (``export.graph.run_float``);
- its NIR mapping both ways: ``NIR_TYPES`` (the NIR classes read as this type), ``read_nir(name,
  n, dt)`` and ``nir_node(name, graph, quantized)`` (``export.nir_io`` builds its tables from
  ``NODE_TYPES``);
- by role, what the quantiser, the integer runner, the deployment plan and the op counter need:

  * synapse: ``weight``, ``bias``, ``KIND`` (the connection kind), ``apply(x, weight)`` (the map
    on ``[N, ...]`` with any weights: float weights, 8-bit mantissas in the integer run, 0/1 for
    NeuroBench counts), ``kernel(weight, f_weight)`` (a convolution spec for the plan, or None),
    ``matrix(weight, in_shape)`` (scipy ``[N_out, N_in]``), ``LAVA_DENSE`` (a matrix link may be
    Lava's ``Dense``), ``fanout(reach, in_shape)`` and ``dense_ops(in_shape)`` (op counting);
  * route: ``divisor`` (folded into the next weights), ``run_int(h_tb)``, ``matrix(in_shape)``
    (its 0/1 map), ``kernel_repeat()`` (the kernel it folds into a following conv as, or None),
    ``reach(rh, rw)`` (which positions it connects, per axis);
  * neuron and output: ``loihi()`` (a ``LoihiNeuron``: decays and input gain, from which the
    quantiser, the plan and so the emulator and the Lava builder take everything) and
    ``int_step(u, v, a, target, bias)`` (one fixed-point step; neurons: ``hw.lif_ref.lif_int_step``).

Adding a node type = one module here, its entry in ``NODE_TYPES`` (neurons: ``FAMILIES``) and its
tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NIR_DT = 1e-4  # the step (s) our NIR files assume (SpikingJelly's and snnTorch's exporters' default)
RESETS = ("zero", "subtract")  # a neuron's reset after a spike: to 0, or by subtracting the threshold
ROLES = ("input", "synapse", "route", "neuron", "output")


@dataclass(frozen=True)
class LoihiNeuron:
    """A neuron on lava-nc's LIF. Fixed point, per step: ``u ← u·(4096 − (du + 1))/4096 + a``,
    ``v ← v·(4096 − dv)/4096 + u + b``, spike when ``v > vth``, then ``v = 0`` (``hw.lif_ref``);
    floating point (Lava's ``floating_pt`` model): the same with decays ``f_du``, ``f_dv``.
    ``input_divisor``: the float current ``x`` arriving at the node enters ``u`` as
    ``x / input_divisor`` in units of the node's float membrane (the quantiser's gain is
    ``S / (v_threshold · input_divisor)``)."""

    input_divisor: float
    du: int
    dv: int
    f_du: float
    f_dv: float
    v_threshold: float

    def __post_init__(self):
        # du = iDecay - 1 and dv = vDecay, Loihi's decays in 4096ths: iDecay 0 (du = -1) keeps all of u,
        # vDecay 4096 none of v (lava-dl's netx writes and runs both; lava-nc computes with them as integers)
        for k, lo, hi in (("du", -1, 4095), ("dv", 0, 4096)):
            if not lo <= getattr(self, k) <= hi:
                raise ValueError(f"{k} = {getattr(self, k)} outside Loihi's [{lo}, {hi}]")
        if not (self.input_divisor > 0 and np.isfinite(self.input_divisor)):
            raise ValueError(f"input divisor {self.input_divisor} must be a positive number")


class Node:
    """Base of every node type (see the module docstring)."""

    ROLE: str = ""
    NIR_TYPES: tuple[type, ...] = ()

    def out_shape(self, in_shape):  # pragma: no cover - every family defines it
        raise NotImplementedError

    @classmethod
    def read_nir(cls, name: str, n, dt: float) -> "Node":
        return cls.from_nir(name, n, dt)


class NeuronNode(Node):
    """Base of every spiking neuron node; per-layer scalars, shape-preserving. A family gives
    ``NIR_TYPE``, ``to_nir(shape, dt)`` / ``from_nir``, ``float_metadata()`` / ``from_metadata`` (the
    exact float parameters kept in a quantised file), ``float_step`` (one float step; ``run_float``
    loops it, and a recurrent layer is stepped with it) and ``loihi()``; the rest is shared here.

    ``reset`` (a field of every family, ``RESETS``): "zero" (lava-nc's LIF) or "subtract" (the
    threshold is subtracted from ``v`` after a spike: Loihi 2 runs it as a programmable neuron,
    ``hw.lava_procs.loihi_lif``). NIR 1.0.8 cannot say which; a node's metadata ``reset`` (written
    by us) or ``export --reset`` chooses."""

    ROLE = "neuron"
    NIR_TYPE: type = None
    NIR_THRESHOLD = "v_threshold"  # the NIR_TYPE's field that holds the integer threshold when quantised
    reset: str = "zero"  # a family without the choice (a dataclass field in those that have it)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.NIR_TYPE is not None and "NIR_TYPES" not in cls.__dict__:
            cls.NIR_TYPES = (cls.NIR_TYPE,)

    def out_shape(self, in_shape):
        return in_shape

    def run_float(self, x_tb):
        """Spikes ``[T, B, ...]`` (x's dtype) for currents ``x_tb``, state starting at 0: the family's
        ``float_step`` (one step: ``x, state → spikes, state``; ``state`` None before the first)."""
        out, state = torch.empty_like(x_tb), None
        for t in range(x_tb.shape[0]):
            out[t], state = self.float_step(x_tb[t], state)
        return out

    @property
    def subtract(self) -> bool:
        return self.reset == "subtract"

    def check_reset(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"{type(self).__name__} reset must be one of {RESETS}, got {self.reset!r}")

    def int_step(self, u, v, a, target, bias):
        """One fixed-point step of the layer (lava-nc's LIF; reset as ``reset`` says): (spikes, u, v)."""
        from htakl_deploy.hw.lif_ref import lif_int_step

        return lif_int_step(u, v, a, du=target.du, dv=target.dv, bias_v=bias, vth=target.vth, subtract=self.subtract)

    def nir_node(self, name, graph, quantized):
        """Its family's NIR node; quantised, the integer threshold and the Loihi fields (plus the
        exact float parameters) in metadata."""
        import dataclasses

        shape = graph.shapes[name]
        n = self.to_nir(shape, NIR_DT)
        if self.subtract:  # NIR 1.0.8 has no reset mode: ours travels in the node's metadata
            n = dataclasses.replace(n, metadata={**(n.metadata or {}), "reset": self.reset})
        if quantized is None:
            return n
        t = quantized.targets[name]
        meta = {"du": np.int64(t.du), "dv": np.int64(t.dv), "vth": np.int64(t.vth), "scale_S": np.int64(t.scale),
                "bias_mant": t.bias_mant, "bias_exp": np.int64(t.bias_exp), **self.float_metadata(),
                **identity_meta(name, quantized), **({"reset": self.reset} if self.subtract else {})}
        return dataclasses.replace(n, **{self.NIR_THRESHOLD: np.full(shape, t.vth, dtype=np.int64)}, metadata=meta)

    @classmethod
    def read_nir(cls, name: str, n, dt: float) -> "NeuronNode":
        from htakl_deploy.errors import UserError

        meta = n.metadata or {}
        # quantised: the exact float parameters are kept in metadata
        node = cls.from_metadata(meta) if "v_threshold_float" in meta else cls.from_nir(name, n, dt)
        reset = meta.get("reset", "zero")
        reset = reset.decode() if isinstance(reset, bytes) else str(reset)
        if reset not in RESETS:
            raise UserError(f"NIR node {name!r}: metadata reset {reset!r}, expected one of {', '.join(RESETS)}")
        (node.node if isinstance(node, InputGain) else node).reset = reset
        return node


def identity_meta(name: str, quantized) -> dict:
    """NIR metadata of the identity skips into target ``name`` (mantissa and exponent per source)."""
    meta = {}
    for c in quantized.connections:
        if c.target == name and c.identity:
            meta[f"identity_weight_mant.{c.node}"] = np.int64(c.weight_mant)
            meta[f"identity_weight_exp.{c.node}"] = np.int64(c.weight_exp)
    return meta


def uniform(arr, what: str, name: str) -> float:
    """The one value of a per-neuron NIR parameter (UserError naming the node and the count of
    distinct values if it varies: a Loihi population has one decay, one reset)."""
    from htakl_deploy.errors import UserError

    a = np.asarray(arr, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise UserError(f"NIR node {name!r}: {what} is empty")
    if not np.all(a == a[0]):
        raise UserError(f"NIR node {name!r}: {what} has {len(np.unique(a))} distinct values across the layer's "
                        f"{a.size} neurons; a Loihi neuron layer takes one {what} (per-neuron gains and thresholds "
                        "fold into the weights, per-neuron time constants do not)")
    return float(a[0])


@dataclass(eq=False)
class InputGain:
    """While reading NIR: a neuron layer whose per-neuron input gains and thresholds differ — ``node``
    holds the reference values (the first neuron's), ``gain`` (the neuron shape) each neuron's input
    gain relative to it, its threshold folded in (``r_i/r_0 · θ_0/θ_i``: the layer's equations are
    linear in ``v`` and its input, and a reset to 0 or by subtraction scales with them). ``nir_io``
    folds ``gain`` into the synapses before the layer (a Scale on each incoming edge)."""

    node: "NeuronNode"
    gain: np.ndarray


def with_gain(node: "NeuronNode", gain: np.ndarray) -> "NeuronNode | InputGain":
    """``node``, or ``InputGain(node, gain)`` where some neuron's gain is not exactly 1."""
    gain = np.asarray(gain, dtype=np.float64)
    return node if np.all(gain == 1.0) else InputGain(node, gain)


def first(arr) -> float:
    """A per-neuron NIR parameter's reference value: its first neuron's."""
    return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])


def _families() -> tuple[type, ...]:
    from htakl_deploy.export.nodes.cuba_lif import CubaLIFNode
    from htakl_deploy.export.nodes.if_node import IFNode
    from htakl_deploy.export.nodes.lif import LIFNode
    from htakl_deploy.export.nodes.loihi_cuba import LoihiCubaNode
    from htakl_deploy.export.nodes.sigma_delta import SigmaDeltaNode

    return (LIFNode, IFNode, CubaLIFNode, LoihiCubaNode, SigmaDeltaNode)


FAMILIES: tuple[type, ...] = _families()  # every neuron family, each NIR_TYPE mapped both ways


def _node_types() -> tuple[type, ...]:
    from htakl_deploy.export.nodes.conv import Conv2dNode
    from htakl_deploy.export.nodes.conv1d import Conv1dNode
    from htakl_deploy.export.nodes.dense import DenseNode
    from htakl_deploy.export.nodes.flatten import FlattenNode
    from htakl_deploy.export.nodes.io import InputNode, OutputNode
    from htakl_deploy.export.nodes.loihi_cuba import LoihiCubaOutput
    from htakl_deploy.export.nodes.pool import PoolNode
    from htakl_deploy.export.nodes.sigma_delta import SigmaDeltaOutput

    return (InputNode, Conv2dNode, Conv1dNode, DenseNode, PoolNode, FlattenNode, *FAMILIES, OutputNode,
            LoihiCubaOutput, SigmaDeltaOutput)


NODE_TYPES: tuple[type, ...] = _node_types()  # every node type a StudentGraph may hold


def of_role(*roles: str) -> tuple[type, ...]:
    """The node types with one of ``roles`` (for ``isinstance`` checks outside the walk)."""
    return tuple(t for t in NODE_TYPES if t.ROLE in roles)
