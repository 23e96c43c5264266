"""The graph's ends: ``InputNode`` (analog values in) and ``OutputNode`` (the logits: the readout
population, optionally a leaky integrator — NIR's ``LI`` in front of the ``Output``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import nir
import numpy as np
import torch

from htakl_deploy.export.nodes import NIR_DT, LoihiNeuron, Node, identity_meta, uniform
from htakl_deploy.export.nodes.geometry import Shape, as_shape


@dataclass(eq=False)
class InputNode(Node):
    """Graph input: analog values (pixels in [0, 1] for images), shape ``(C, H, W)`` or ``(N,)``."""

    shape: Shape

    ROLE = "input"
    NIR_TYPES = (nir.Input,)

    def __post_init__(self):
        self.shape = as_shape(self.shape, "input")

    def out_shape(self, in_shape: Shape | None) -> Shape:
        return self.shape

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def nir_node(self, name, graph, quantized) -> nir.Input:
        return nir.Input(input_type={"input": np.array(self.shape)})

    @classmethod
    def from_nir(cls, name: str, n: nir.Input, dt: float) -> "InputNode":
        return cls(np.asarray(n.input_type["input"]))


@dataclass(eq=False)
class OutputNode(Node):
    """Graph output: the logits, whatever flows in, summed. Read as it arrives each step by
    default; ``beta < 1`` (or ``r != 1``) makes it a leaky integrator, NIR's ``LI`` in front of the
    Output: ``y_t = (1 − β)·y_{t−1} + β·r·x_t``. On Loihi it is the readout population's current
    ``u`` with ``du = round(4096·β) − 1`` (β = 1: ``du = 4095``, no memory)."""

    beta: float = 1.0
    r: float = 1.0

    ROLE = "output"
    NIR_TYPES = (nir.Output,)

    def __post_init__(self):
        self.beta, self.r = float(self.beta), float(self.r)
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"output (LI readout) beta = dt/tau must be in (0, 1], got {self.beta}")
        if not (self.r > 0 and np.isfinite(self.r)):
            raise ValueError(f"output (LI readout) r must be > 0, got {self.r}")
        if self.du < 0:
            raise ValueError(f"output (LI readout) beta = {self.beta} is below Loihi's 1/4096 decay step")

    @property
    def leaky(self) -> bool:
        return self.beta != 1.0 or self.r != 1.0

    @property
    def du(self) -> int:
        return int(round(4096 * self.beta)) - 1

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def run_float(self, h: torch.Tensor) -> torch.Tensor:
        if not self.leaky:
            return h
        y, out = torch.zeros_like(h[0]), torch.empty_like(h)
        for t in range(h.shape[0]):
            y = (1.0 - self.beta) * y + (self.beta * self.r) * h[t]
            out[t] = y
        return out

    def loihi(self) -> LoihiNeuron:
        """The readout's current ``u``: input gain ``β·r``, current decay ``du``, no membrane (its
        ``v`` is never read; threshold 1 so the quantiser's gain is ``S·β·r``)."""
        return LoihiNeuron(1.0 / (self.beta * self.r), self.du, 0, self.beta, 1.0, 1.0)

    def int_step(self, u, v, a, target, bias):
        """The readout's current ``u`` (Lava's LIF ``u`` update), read with the bias added."""
        from htakl_deploy.hw.lif_ref import trunc_decay

        u = trunc_decay(u, 4096 - (target.du + 1)) + (a << 6)
        return u + bias, u, v

    def nir_node(self, name, graph, quantized) -> nir.Output:
        meta = {}
        if quantized is not None:
            t = quantized.targets[name]
            meta = {"scale_S": np.int64(t.scale), "bias_mant": t.bias_mant, "bias_exp": np.int64(t.bias_exp),
                    "du": np.int64(t.du), **identity_meta(name, quantized)}
        return nir.Output(output_type={"output": np.array(graph.shapes[name])}, metadata=meta)

    def nir_li(self, shape) -> nir.LI:
        """The leak as NIR's ``LI`` node (written in front of the ``Output``)."""
        return nir.LI(tau=np.full(shape, NIR_DT / self.beta), r=np.full(shape, self.r), v_leak=np.zeros(shape))

    @classmethod
    def from_nir(cls, name: str, n: nir.Output, dt: float) -> "OutputNode":
        return cls()


@dataclass(eq=False)
class LIReadout:
    """A NIR ``LI`` while reading: it must feed the Output alone (then it becomes the Output's
    leak, ``merge_li_readout``)."""

    beta: float
    r: float

    NIR_TYPES = (nir.LI,)

    @classmethod
    def read_nir(cls, name: str, n: nir.LI, dt: float) -> "LIReadout":
        from htakl_deploy.errors import UserError

        if uniform(n.v_leak, "v_leak", name) != 0:
            raise UserError(f"NIR node {name!r}: only v_leak = 0 is supported for an LI readout")
        beta = dt / uniform(n.tau, "tau", name)
        if not 0.0 < beta <= 1.0:
            raise UserError(f"NIR node {name!r}: dt/tau = {beta} (dt = {dt} s) must be in (0, 1] (is --dt right?)")
        return cls(round(beta, 12), uniform(n.r, "r", name))


class CubaLIReadout(LIReadout):
    """A NIR ``CubaLI`` while reading, mapped exactly where it is one leaky integrator: with
    ``tau_mem = dt`` (β = 1) its ``v = r·I`` and ``I ← (1 − α)·I + α·w_in·x``, the LI readout
    ``(α, r·w_in)``. With ``tau_mem > dt`` it filters twice, and the readout is Lava's current ``u``
    alone: refused naming the node."""

    NIR_TYPES = (nir.CubaLI,)

    @classmethod
    def read_nir(cls, name: str, n: nir.CubaLI, dt: float) -> "LIReadout":
        from htakl_deploy.errors import UserError

        if uniform(n.v_leak, "v_leak", name) != 0:
            raise UserError(f"NIR node {name!r}: only v_leak = 0 is supported for a CubaLI readout")
        alpha, beta = dt / uniform(n.tau_syn, "tau_syn", name), dt / uniform(n.tau_mem, "tau_mem", name)
        if not np.isclose(beta, 1.0, rtol=1e-9, atol=0):
            raise UserError(f"NIR node {name!r}: a CubaLI readout maps to Loihi only with tau_mem = dt (then it is an "
                            f"LI on its current), got dt/tau_mem = {beta} (dt = {dt} s: is --dt right?)")
        if not 0.0 < alpha <= 1.0:
            raise UserError(f"NIR node {name!r}: dt/tau_syn = {alpha} (dt = {dt} s) must be in (0, 1] (is --dt right?)")
        return LIReadout(round(alpha, 12), uniform(n.r, "r", name) * uniform(n.w_in, "w_in", name))


def merge_li_readout(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """An LI whose only successor is the Output, and the Output's only input, becomes the Output's
    leak (``OutputNode(beta, r)``); an LI anywhere else is refused naming it."""
    from htakl_deploy.errors import UserError

    for name, node in list(nodes.items()):
        if not isinstance(node, LIReadout):
            continue
        succ = [b for a, b in edges if a == name]
        out = succ[0] if len(succ) == 1 else None
        if out is None or not isinstance(nodes[out], OutputNode) or [a for a, b in edges if b == out] != [name]:
            raise UserError(f"NIR node {name!r} (LI/CubaLI): a leaky integrator is supported only as the readout, "
                            "the Output's one input")
        nodes[out] = OutputNode(node.beta, node.r)
        edges = [(a, out) if b == name else (a, b) for a, b in edges if a != name]
        del nodes[name]
    return nodes, edges


def merge_neuron_readout(nodes: OrderedDict, edges: list[tuple[str, str]]):
    """A neuron that is itself the graph's output (a netx last layer, read as its ``v`` or spikes: its
    node has the output role) is written with NIR's ``Output`` after it; reading back, that ``Output``
    is dropped again."""
    for name, node in list(nodes.items()):
        if not isinstance(node, OutputNode):
            continue
        preds = [a for a, b in edges if b == name]
        if len(preds) == 1 and getattr(nodes[preds[0]], "ROLE", None) == "output":
            edges = [e for e in edges if e[1] != name]
            del nodes[name]
    return nodes, edges
