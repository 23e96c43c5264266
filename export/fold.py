"""BatchNorm folding: every BN that directly follows a conv/linear is merged into that layer.

With the BN's running statistics (eval semantics), ``bn(conv(x))`` equals ``conv'(x)`` where,
per output channel ``c`` and ``s_c = gamma_c / sqrt(var_c + eps)``::

    W'_c = s_c · W_c          b'_c = s_c · (b_c − mean_c) + beta_c     (b_c = 0 if no bias)

The BN is then replaced by ``nn.Identity`` (same module path, no parameters), so the folded
model keeps its layer names and taps. Its ``spec`` still describes the unfolded architecture:
``build_model(**spec)`` rebuilds a model *with* BN, whose ``state_dict`` differs.

Which layer a BN follows is read from the data flow, not from module order: one probe forward
on a ``[1, 1, C, H, W]`` input records, for every leaf module, the tensor object it returned;
a BN whose input is the output of a conv/linear (a key of ``FOLD_RULES``) is paired with it.
This covers ``nn.Sequential`` stages as well as ``BasicBlock`` (``bn1``/``bn2`` and the
shortcut's ``bn``) without knowing their ``forward``. Assumed, not checked: the conv's output
feeds nothing but its BN (true of every block in ``distill.models``).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from htakl_deploy.distill.models.classifier import Classifier

FoldFn = Callable[[nn.Module, _BatchNorm], None]


def _fold_into_weight_and_bias(layer: nn.Module, bn: _BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``layer.weight`` ``[Cout, ...]`` and its bias ``[Cout]``.

    Computed in float64 and cast back, so float32 models lose no more than one rounding.
    """
    weight = layer.weight
    cout = weight.shape[0]
    if bn.num_features != cout:
        raise ValueError(f"BatchNorm has {bn.num_features} features but the layer before it has {cout} outputs")
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    new_weight = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    new_bias = (bias - mean) * scale + beta
    with torch.no_grad():
        weight.copy_(new_weight.to(weight.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(dtype=weight.dtype, device=weight.device))
        else:
            layer.bias.copy_(new_bias.to(layer.bias.dtype))


# Layer type → function folding a following BN into it. Looked up along the type's MRO, so
# SpikingJelly's multi-step ``layer.Conv2d``/``layer.Linear`` (subclasses) are covered.
FOLD_RULES: dict[type, FoldFn] = {
    nn.Conv1d: _fold_into_weight_and_bias,
    nn.Conv2d: _fold_into_weight_and_bias,
    nn.Conv3d: _fold_into_weight_and_bias,
    nn.Linear: _fold_into_weight_and_bias,
}


def _fold_rule(module: nn.Module) -> FoldFn | None:
    for cls in type(module).__mro__:
        if cls in FOLD_RULES:
            return FOLD_RULES[cls]
    return None


def _bn_producers(model: Classifier) -> dict[str, str | None]:
    """Map each BN's module path to the path of the leaf module whose output it consumes
    (``None`` if its input came from a functional op or the model input).

    Raises ValueError naming any BN the probe forward never reached.
    """
    modules = dict(model.named_modules())
    bns = {name for name, m in modules.items() if isinstance(m, _BatchNorm)}
    # id(tensor) → (producer path, tensor); holding the tensor keeps ids unique.
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    consumed_by: dict[str, str | None] = {}
    handles = []

    def record_output(name: str):
        def hook(_m, _inp, out):
            if isinstance(out, torch.Tensor):
                # First producer wins: an nn.Identity after a conv returns the same object.
                produced.setdefault(id(out), (name, out))
        return hook

    def record_input(name: str):
        def pre_hook(_m, inp):
            x = inp[0] if inp else None
            entry = produced.get(id(x)) if isinstance(x, torch.Tensor) else None
            consumed_by[name] = entry[0] if entry is not None and entry[1] is x else None
        return pre_hook

    for name, m in modules.items():
        if name and not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(record_output(name)))
        if name in bns:
            handles.append(m.register_forward_pre_hook(record_input(name)))
    param = next(model.parameters())
    probe = torch.zeros((1, 1, *model.in_shape), dtype=param.dtype, device=param.device)
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    unreached = sorted(bns - set(consumed_by))
    if unreached:
        raise ValueError(f"cannot fold BatchNorm {unreached[0]!r}: it is not used in the forward pass")
    return consumed_by


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


def fold_batchnorm(model: Classifier) -> Classifier:
    """Return a deep copy of ``model`` with every BN folded into the conv/linear before it.

    The input model is left untouched. The copy is returned in eval mode (folding uses the
    running statistics, i.e. inference semantics); in eval mode its outputs equal the
    original's up to float rounding. Raises ValueError naming the BN's module path if a BN
    does not directly follow a layer in ``FOLD_RULES`` (e.g. it follows a neuron, a pooling,
    a residual add or the input), if two BNs read the same layer, or if a BN has no running
    statistics (``track_running_stats=False``: it always normalises with batch statistics).
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"fold_batchnorm expects a Classifier, got {type(model).__name__}")
    folded = copy.deepcopy(model)
    folded.eval()
    modules = dict(folded.named_modules())
    for name, m in modules.items():
        if isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None):
            raise ValueError(f"cannot fold BatchNorm {name!r}: it has no running statistics")
    producers = _bn_producers(folded)
    owner: dict[str, str] = {}
    for bn_name in sorted(producers):
        src = producers[bn_name]
        rule = _fold_rule(modules[src]) if src is not None else None
        if rule is None:
            after = "the model input or a functional op (e.g. a residual add)" if src is None else (
                f"{src!r} ({type(modules[src]).__name__})")
            raise ValueError(f"cannot fold BatchNorm {bn_name!r}: it follows {after}, not a conv/linear layer")
        if src in owner:
            raise ValueError(f"cannot fold BatchNorm {bn_name!r}: {src!r} already feeds BatchNorm {owner[src]!r}")
        owner[src] = bn_name
    for src, bn_name in owner.items():
        _fold_rule(modules[src])(modules[src], modules[bn_name])
        _set_module(folded, bn_name, nn.Identity())
    return folded
