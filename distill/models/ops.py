"""Building blocks shared by the architectures: activation twins, conv-BN-act, BasicBlock.

Every block takes an ``act`` factory (a zero-argument callable returning a fresh activation
module), so the same code builds the SNN student (multi-step LIF) and its ANN twin (ReLU) with
identical module names and therefore identical ``state_dict`` keys (neither LIF nor ReLU holds
parameters or buffers). All layers are SpikingJelly multi-step layers: tensors are
``[T, B, ...]`` throughout.

Only deployable operations appear here (see docs/DESIGN.md "Deployable students"): conv, linear,
BatchNorm (folded at export), LIF with hard reset to 0, average pooling, flatten and residual
adds of currents.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from spikingjelly.activation_based import functional, layer, neuron, surrogate

ActFactory = Callable[[], nn.Module]


class _DropTritonProbe(logging.Filter):
    """SpikingJelly registers its LIF kernels with ``torch.library.triton_op`` on the first LIF
    forward; where Triton is not installed (every CPU machine) torch then logs "Triton not
    available, find_triton_kernels = []" once per kernel. The ops run their CPU implementation
    either way, so that one message is dropped; every other torch warning stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Triton not available")


logging.getLogger("torch._library.triton").addFilter(_DropTritonProbe())


def make_act_factory(spiking: bool, tau: float, v_threshold: float) -> ActFactory:
    """Return a factory of the activation: LIF (hard reset to 0) if ``spiking`` else ReLU.

    The LIF is SpikingJelly's ``H = V(1 - 1/tau) + X/tau``, spike iff ``H >= v_threshold``,
    then ``V = 0`` — the form docs/DESIGN.md maps onto Lava's LIF. ``detach_reset`` keeps the
    reset out of the surrogate gradient.
    """
    if not spiking:
        return nn.ReLU

    def lif() -> nn.Module:
        return neuron.LIFNode(
            tau=float(tau),
            v_threshold=float(v_threshold),
            v_reset=0.0,
            decay_input=True,
            detach_reset=True,
            surrogate_function=surrogate.ATan(),
            step_mode="m",
        )

    return lif


def is_block(module: nn.Module) -> bool:
    """A unit of activation checkpointing: a BasicBlock, or a conv-BN-act Sequential."""
    return isinstance(module, BasicBlock) or (
        isinstance(module, nn.Sequential) and list(module._modules) == ["conv", "bn", "act"])


def checkpointed(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]):
    """``forward`` of ``module`` run under ``torch.utils.checkpoint`` (non-reentrant: the output
    keeps its graph, so feature taps still get gradients) when training with gradients.

    A block runs all T steps in one call (multi-step mode), from neurons at rest: its neurons are
    reset before the call *and* before the recomputation in the backward pass (else the recompute
    would start from the last step's membrane). The recomputation does not touch BatchNorm's
    running statistics (batch statistics, as in the first
    pass, and no second update: momentum 0 for the recomputation)."""
    from torch.utils.checkpoint import checkpoint

    def run(x: torch.Tensor) -> torch.Tensor:
        if not (module.training and torch.is_grad_enabled()):
            return forward(x)
        calls = [0]

        def inner(z: torch.Tensor) -> torch.Tensor:
            functional.reset_net(module)
            calls[0] += 1
            if calls[0] == 1:
                return forward(z)
            bns = [(m, m.momentum, m.num_batches_tracked.clone()) for m in module.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
            for m, _, _ in bns:
                m.momentum = 0.0  # running = 1·running + 0·batch: unchanged, same saved tensors
            try:
                return forward(z)
            finally:
                for m, momentum, tracked in bns:
                    m.momentum = momentum
                    m.num_batches_tracked.copy_(tracked)

        return checkpoint(inner, x, use_reentrant=False)

    return run


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Module:
    """3×3 convolution, padding 1, no bias (a BatchNorm always follows)."""
    return layer.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, step_mode="m")


def conv_bn_act(cin: int, cout: int, act: ActFactory, stride: int = 1) -> nn.Sequential:
    """conv3x3 → BN → act, with children named ``conv``, ``bn``, ``act``."""
    return nn.Sequential(
        OrderedDict(
            conv=conv3x3(cin, cout, stride),
            bn=layer.BatchNorm2d(cout, step_mode="m"),
            act=act(),
        )
    )


def conv_out(size: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> int:
    """Spatial output size of a convolution or pooling along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def require_spatial(arch: str, hw: tuple[int, int], where: str) -> None:
    """Raise ValueError if the input is too small for ``arch`` (a feature map collapsed)."""
    if min(hw) < 1:
        raise ValueError(f"{arch}: input too small, feature map becomes {hw} at {where}")


class BasicBlock(nn.Module):
    """``act2(BN(conv(act1(BN(conv(x))))) + shortcut(x))``, input and output ``[T,B,C,H,W]``.

    The residual add happens before the second neuron (an add of currents: on Lava, two
    connections into one InPort). ``shortcut`` is the identity (``nn.Identity``, no keys) or
    conv1x1(stride) → BN when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int, act: ActFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = layer.BatchNorm2d(cout, step_mode="m")
        self.act1 = act()
        self.conv2 = conv3x3(cout, cout, 1)
        self.bn2 = layer.BatchNorm2d(cout, step_mode="m")
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=layer.Conv2d(cin, cout, 1, stride=stride, bias=False, step_mode="m"),
                    bn=layer.BatchNorm2d(cout, step_mode="m"),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = act()

    def forward(self, x_tbchw: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.conv1(x_tbchw)))
        return self.act2(self.bn2(self.conv2(h)) + self.shortcut(x_tbchw))


def make_stage(cin: int, cout: int, blocks: int, stride: int, act: ActFactory) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one carries the stride (and the shortcut conv)."""
    layers = [BasicBlock(cin, cout, stride, act)]
    layers += [BasicBlock(cout, cout, 1, act) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
