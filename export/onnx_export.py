"""ONNX export of a ``Classifier``: the ANN teacher per image, the float SNN student over T steps.

Graphs (input ``x``, output ``logits``; the batch axis ``B`` is dynamic)::

    ANN (spiking=False):  x [B, C, H, W]     → logits [B, K]      (the twin run with T = 1)
    SNN (spiking=True):   x [T, B, C, H, W]  → logits [T, B, K]   (per-step logits, T fixed)

**T is fixed at export.** SpikingJelly's multi-step neurons loop over T (on CPU inside a custom
op, ``sj_lif::forward``, that the legacy exporter cannot translate), so before export each
neuron is swapped for a plain-PyTorch ``UnrolledLIF`` with the same update, and tracing unrolls
its loop ``timesteps`` times. The ONNX input declares T as a static dimension: onnxruntime
rejects any other T. Export again for another T. SpikingJelly's stateless multi-step layers
are swapped for ``PerFrame`` (theirs would freeze B in the traced graph); see ``EXPORT_RULES``.

Exporter: torch 2.13's default ``torch.onnx.export(dynamo=True)`` needs the ``onnxscript``
package (0.7.2 with ``onnx-ir`` 1.1.0 was tried outside the venv: it exports these models,
SpikingJelly's custom op included, with ``dynamic_shapes`` for B), which the project does not
depend on. The legacy TorchScript exporter (``dynamo=False``, deprecated since torch 2.9 but
present in 2.13) needs nothing more and is used here, with ``dynamic_axes`` for B, opset 17.
BatchNorm is exported as-is (eval statistics); fold it first (``export.fold.fold_batchnorm``)
for a smaller graph.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn
from spikingjelly.activation_based import layer, neuron
from spikingjelly.activation_based.base import StepModule

from htakl_deploy.atomic import atomic_path
from htakl_deploy.distill.models.classifier import Classifier
from htakl_deploy.export.graph import lif_float_step

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "logits"


class UnrolledLIF(nn.Module):
    """Multi-step LIF/IF on ``[T, B, ...]`` in plain PyTorch ops, state starting at rest.

    Each step is ``export.graph.lif_float_step``: SpikingJelly's arithmetic in the same order, so
    in PyTorch the spikes are bit-identical (tested). In onnxruntime the conv sums round
    differently (~1e-7), so a potential within that of the threshold could flip a spike (not seen
    in the tests).

    Stateless between calls: V starts at ``V_reset`` (0 for soft reset) on every forward.
    """

    def __init__(self, *, tau: float | None, v_threshold: float, v_reset: float | None,
                 decay_input: bool = True) -> None:
        super().__init__()
        self.tau = None if tau is None else float(tau)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.decay_input = bool(decay_input)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        rest = 0.0 if self.v_reset is None else self.v_reset
        # Not full_like: the legacy tracer records its shape as a constant, freezing B.
        v = x_seq[0] * 0.0 + rest
        spikes = []
        for x in x_seq:  # unrolled by tracing: T is fixed in the exported graph
            s, v = lif_float_step(v, x, tau=self.tau, v_threshold=self.v_threshold, v_reset=self.v_reset,
                                  decay_input=self.decay_input)
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"decay_input={self.decay_input}")


class PerFrame(nn.Module):
    """A per-frame layer on ``[T, B, ...]``: merge T and B, apply, split with B inferred (-1).

    SpikingJelly's own multi-step wrapper splits with the traced ``(T, B)`` as constants,
    which would freeze the batch size in the exported graph.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x_tb: torch.Tensor) -> torch.Tensor:
        return self.layer(x_tb.flatten(0, 1)).unflatten(0, (x_tb.shape[0], -1))


def _from_lif(m: neuron.LIFNode) -> nn.Module:
    return UnrolledLIF(tau=m.tau, v_threshold=m.v_threshold, v_reset=m.v_reset, decay_input=m.decay_input)


def _from_if(m: neuron.IFNode) -> nn.Module:
    return UnrolledLIF(tau=None, v_threshold=m.v_threshold, v_reset=m.v_reset)


def _per_frame(m: nn.Module) -> nn.Module:
    single = copy.deepcopy(m)
    single.step_mode = "s"
    return PerFrame(single)


# SpikingJelly module type → exportable replacement (exact types: a subclass may change the
# dynamics). Neurons become UnrolledLIF; stateless multi-step layers, which apply the same
# single-step layer to every frame, become PerFrame. Any other SpikingJelly step module
# raises, naming the module. Plain torch modules (ReLU, Identity) are kept as they are.
EXPORT_RULES: dict[type, Callable[[nn.Module], nn.Module]] = {
    neuron.LIFNode: _from_lif,
    neuron.IFNode: _from_if,
    **{t: _per_frame for t in (
        layer.Conv1d, layer.Conv2d, layer.Conv3d, layer.Linear, layer.Flatten,
        layer.BatchNorm1d, layer.BatchNorm2d, layer.BatchNorm3d,
        layer.AvgPool1d, layer.AvgPool2d, layer.AvgPool3d,
        layer.AdaptiveAvgPool1d, layer.AdaptiveAvgPool2d, layer.AdaptiveAvgPool3d,
        layer.MaxPool1d, layer.MaxPool2d, layer.MaxPool3d,
    )},
}


def exportable_copy(model: Classifier) -> Classifier:
    """Deep copy of ``model`` in eval mode with every SpikingJelly module replaced by its
    ``EXPORT_RULES`` equivalent. Raises ValueError naming any SpikingJelly module without a
    rule or not in multi-step mode."""
    out = copy.deepcopy(model).eval()
    for name, m in list(out.named_modules()):
        if not isinstance(m, StepModule):
            continue
        rule = EXPORT_RULES.get(type(m))
        if rule is None:
            raise ValueError(f"cannot export {name!r}: no ONNX rule for {type(m).__name__}")
        if getattr(m, "step_mode", None) != "m":
            raise ValueError(f"cannot export {name!r}: step_mode must be 'm' (multi-step)")
        parent_path, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_path) if parent_path else out, child, rule(m))
    return out


class TeacherGraph(nn.Module):
    """ANN twin as a per-image classifier: ``[B, C, H, W]`` → logits ``[B, K]``."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_bchw: torch.Tensor) -> torch.Tensor:
        return self.model(x_bchw.unsqueeze(0))[0]


class StudentGraph(nn.Module):
    """SNN student over T steps: ``[T, B, C, H, W]`` → per-step logits ``[T, B, K]``."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_tbchw: torch.Tensor) -> torch.Tensor:
        return self.model(x_tbchw)


def export_onnx(model: Classifier, path: str | os.PathLike, timesteps: int, *, batch_size: int = 1) -> Path:
    """Write ``model`` to the ONNX file ``path`` (atomically) and return the path.

    An ANN twin (``model.spiking`` False) becomes ``x [B, C, H, W] → logits [B, K]`` and
    ``timesteps`` must be 1; an SNN student becomes ``x [T, B, C, H, W] → logits [T, B, K]``
    with ``T = timesteps`` fixed in the graph. ``B`` is a dynamic axis (``batch_size`` is only
    the size traced with). The model is copied; its mode and state are untouched. The written
    file passes ``onnx.checker.check_model``. Raises ValueError for bad arguments or a neuron
    without an export rule.
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"export_onnx expects a Classifier, got {type(model).__name__}")
    if isinstance(timesteps, bool) or int(timesteps) != timesteps or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    if not model.spiking and timesteps != 1:
        raise ValueError(f"the ANN teacher is exported per image: timesteps must be 1, got {timesteps}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = Path(path)
    net = exportable_copy(model).float().cpu()
    if model.spiking:
        graph: nn.Module = StudentGraph(net)
        example = torch.zeros((int(timesteps), int(batch_size), *model.in_shape))
        dynamic = {INPUT_NAME: {1: "batch"}, OUTPUT_NAME: {1: "batch"}}
    else:
        graph = TeacherGraph(net)
        example = torch.zeros((int(batch_size), *model.in_shape))
        dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The legacy exporter warns that it is deprecated; Classifier's input check reads
        # shapes as Python values (TracerWarning) — constant for the traced T, C, H, W.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph, (example,), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
        )
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return path
