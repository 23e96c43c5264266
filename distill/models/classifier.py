"""``Classifier``: the one model class every architecture builds (SNN student or ANN twin).

A classifier is an ordered list of named layers (its direct children) run one after another
on ``[T, B, ...]`` tensors. The names are the contract: they are the ``state_dict`` prefixes,
the feature taps (``forward_features``) and the per-layer keys of ``dense_ops_per_sample``.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn
from spikingjelly.activation_based import functional


class Classifier(nn.Module):
    """Image classifier over time: input ``[T, B, C, H, W]`` → per-timestep logits ``[T, B, K]``.

    Attributes:
        spec: JSON-able kwargs that rebuild the model: ``build_model(**model.spec)``.
        in_shape: ``(C, H, W)`` the model accepts.
        num_classes: K.
        spiking: True for the LIF student, False for the ReLU twin (the teacher, fed T=1).
        tap_names: module names usable with ``forward_features``: the stem (if any) and each
            feature stage, in order; the last one is the last feature stage before
            pooling/classifier (the Grad-CAM layer).
    """

    def __init__(self, layers: "OrderedDict[str, nn.Module]", *, spec: dict, tap_names: Sequence[str]) -> None:
        super().__init__()
        for name, module in layers.items():
            self.add_module(name, module)
        self.spec = dict(spec)
        self.in_shape: tuple[int, int, int] = tuple(int(v) for v in spec["in_shape"])  # type: ignore[assignment]
        self.num_classes = int(spec["num_classes"])
        self.spiking = bool(spec["spiking"])
        self.tap_names = tuple(tap_names)
        modules = dict(self.named_modules())
        missing = [t for t in self.tap_names if t not in modules]
        if missing:
            raise ValueError(f"tap names {missing} are not modules of the classifier")

    # -- running -----------------------------------------------------------------------------

    def _check_input(self, x_tbchw: torch.Tensor) -> None:
        if (
            not isinstance(x_tbchw, torch.Tensor)
            or x_tbchw.dim() != 5
            or tuple(x_tbchw.shape[2:]) != self.in_shape
            or x_tbchw.shape[0] < 1
            or x_tbchw.shape[1] < 1
        ):
            got = tuple(x_tbchw.shape) if isinstance(x_tbchw, torch.Tensor) else type(x_tbchw).__name__
            raise ValueError(
                f"expected input [T, B, C, H, W] with (C,H,W)={self.in_shape}, got {got}"
            )

    def forward(self, x_tbchw: torch.Tensor) -> torch.Tensor:
        """Logits ``[T, B, num_classes]``; neuron state is reset first, so calls are independent."""
        self._check_input(x_tbchw)
        functional.reset_net(self)
        x = x_tbchw
        for module in self._modules.values():
            x = module(x)
        return x

    @contextmanager
    def tapped(self, taps: Sequence[str], *, as_leaf: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Within the block, every forward records the outputs ``[T, B, ...]`` of the named
        sub-modules in the yielded dict (name → tensor). Works through wrappers such as DDP.

        With ``as_leaf=True`` each tapped output is replaced by a detached copy that requires
        grad: the rest of the forward builds its graph from there, so ``autograd.grad(score,
        captured[name])`` costs one backward through the layers after the tap only (Grad-CAM).
        """
        if isinstance(taps, str):
            taps = [taps]
        modules = dict(self.named_modules())
        unknown = [t for t in taps if t == "" or t not in modules]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; usual taps are {list(self.tap_names)}")
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name in taps:
            def hook(_m, _inp, out, name=name):
                if as_leaf:
                    out = out.detach().requires_grad_(True)
                captured[name] = out
                return out
            handles.append(modules[name].register_forward_hook(hook))
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    def forward_features(
        self, x_tbchw: torch.Tensor, taps: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits ``[T, B, K]`` and the outputs ``[T, B, ...]`` of the named sub-modules.

        ``taps`` may name any sub-module (e.g. ``"stage3"`` or ``"stage3.1.act2"``); usual
        choices are in ``tap_names``. The captured tensors are the live outputs (not copies,
        not detached), so gradients w.r.t. them work (Grad-CAM).
        """
        if isinstance(taps, str):
            taps = [taps]
        with self.tapped(taps) as captured:
            logits = self(x_tbchw)
        return logits, {name: captured[name] for name in taps}

    # -- memory -----------------------------------------------------------------------------

    def set_activation_checkpointing(self, on: bool = True) -> "Classifier":
        """Recompute each block in the backward pass instead of keeping its inside (opt-in,
        ``--checkpoint-activations``): only the blocks' inputs stay in memory during a training
        forward. Blocks = ``ops.BasicBlock``s and conv-BN-act units; their ``forward`` is wrapped
        (``ops.checkpointed``), so module names, state_dict keys and forward hooks (feature taps)
        are unchanged. Active only in training mode with gradients enabled; loss and gradients
        are those of the plain forward (tests/test_models.py)."""
        from .ops import checkpointed, is_block

        for m in self.modules():
            if is_block(m):
                if on and "forward" not in m.__dict__:
                    m.forward = checkpointed(m, type(m).forward.__get__(m))
                elif not on and "forward" in m.__dict__:
                    del m.forward
        self.checkpoint_activations = bool(on)
        return self

    # -- accounting --------------------------------------------------------------------------

    def num_params(self) -> int:
        """Number of parameters (trainable or not; BN running statistics are buffers, excluded)."""
        return sum(p.numel() for p in self.parameters())

    def dense_ops_per_sample(self) -> dict:
        """Dense MACs of every Conv/Linear layer, per timestep, for one sample.

        Counted from the layer shapes seen in a forward on a dummy ``[1, 1, C, H, W]`` input:
        conv ``Cout·Hout·Wout·(Cin/groups)·kh·kw``, linear ``out·in`` (biases and BN not
        counted). Returns ``{"per_layer": {name: macs}, "total": int}``. The model's mode and
        neuron state are left as they were (state is reset afterwards).
        """
        per_layer: dict[str, int] = {}
        handles = []
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                def hook(mod, _inp, out, name=name):
                    per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                    per_layer[name] = int(out.shape[-3] * out.shape[-2] * out.shape[-1] * per_out)
            elif isinstance(m, nn.Linear):
                def hook(mod, _inp, out, name=name):
                    per_layer[name] = int(mod.out_features * mod.in_features)
            else:
                continue
            handles.append(m.register_forward_hook(hook))
        was_training = self.training
        param = next(self.parameters())
        dummy = torch.zeros((1, 1, *self.in_shape), dtype=param.dtype, device=param.device)
        try:
            self.eval()
            with torch.no_grad():
                self(dummy)
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
            functional.reset_net(self)
        return {"per_layer": per_layer, "total": int(sum(per_layer.values()))}

    def extra_repr(self) -> str:
        return f"spec={self.spec}"


def make_spec(arch: str, in_shape, num_classes, spiking, tau, v_threshold) -> dict:
    """Validate the build arguments and return the JSON-able spec (``in_shape`` as a list)."""
    try:
        shape = [int(v) for v in in_shape]
    except (TypeError, ValueError):
        raise ValueError(f"in_shape must be (C, H, W) integers, got {in_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1 or any(float(a) != b for a, b in zip(in_shape, shape)):
        raise ValueError(f"in_shape must be (C, H, W) positive integers, got {in_shape!r}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(spiking, bool):
        raise ValueError(f"spiking must be True or False, got {spiking!r}")
    if not float(tau) > 1.0:
        raise ValueError(f"tau must be > 1 (LIF decay 1/tau), got {tau!r}")
    if not float(v_threshold) > 0.0:
        raise ValueError(f"v_threshold must be > 0, got {v_threshold!r}")
    return {
        "arch": arch,
        "in_shape": shape,
        "num_classes": int(num_classes),
        "spiking": spiking,
        "tau": float(tau),
        "v_threshold": float(v_threshold),
    }
