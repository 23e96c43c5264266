"""NIR graphs from snnTorch and Norse through their own exporters, where those fall short (issue 14).

Measured with snnTorch 1.0.0, Norse 1.1.0, nirtorch 2.6 and NIR 1.0.8 (the versions the Makefile
installs; nirtorch 2.6 is PyPI's newest, and both frameworks ask for an unpinned ``nirtorch``):

snnTorch, conv + dense: ``snntorch.export_nir.export_to_nir`` works as it is, given two of its own
arguments — ``ignore_dims=[0]`` (it calls ``nir_graph.infer_types()`` at the end, and NIR's shape
inference reads shapes without the batch dimension: without it ``IndexError: tuple index out of
range`` in ``calculate_conv_output``) and per-neuron ``beta``/``threshold`` tensors on each
``snn.Leaky`` (a scalar beta becomes a LIF of input type ``[]`` and the type check stops at
``0.output: [[8 8 8]] -> 1.input: []``). :func:`snntorch_export` is that call, nothing else.
The same call writes a dense-only net (Flatten → Linear → Leaky → … from the pixels) as it is;
without ``ignore_dims=[0]`` that one fails too, in the type check (``type mismatch: 0.output:
[[128]] -> 1.input: [[64]]``: the Flatten of a batch of 2 counted the batch in).

snnTorch, residual joins: ``export_to_nir`` traces with nirtorch's old module-hook tracer
(``extract_nir_graph``), which does not see a ``+`` between two modules: the join's input
becomes a stray ``Input`` node and the skip edge is lost. :func:`snntorch_export_traced` runs
snnTorch's own per-module conversion (``snntorch.export_nir._extract_snntorch_module``, the
function ``export_to_nir`` hands to nirtorch) under nirtorch's ``torch.fx`` tracer
(``nirtorch.torch_to_nir``), which turns ``a + b`` into two edges into the next node; it then sets
the ``Input`` type from the sample's shape and runs ``infer_types`` as ``export_to_nir`` does.

Norse: ``norse.torch.to_nir`` is ``nirtorch.extract_nir_graph(module, _extract_norse_module,
sample)``, and ``_extract_norse_module`` knows Conv2d, Linear and Norse's cells but not
``torch.nn.AvgPool2d`` or ``torch.nn.Flatten``: it returns ``None`` for them, nirtorch keeps a
``None`` node and ``nir.write`` fails (``'NoneType' object has no attribute 'to_dict'``); a conv
net cannot reach a dense layer without a Flatten, and a dense-only net (Flatten → Linear →
LIFBoxCell → …) fails the same way at its first node (measured: ``norse.torch.to_nir`` writes
``'0': None``). It also leaves ``Conv2d.input_shape = None`` (NIR cannot save it) and keeps the
batch dimension in the Input/Output types.
:func:`norse_export` makes the same ``extract_nir_graph`` call with Norse's function, adding
(1) AvgPool2d and Flatten mappings for those two stock torch layers only (Norse's own mapping runs
first for everything else), (2) ``ignore_dims=[0]`` and (3) ``infer_types()``, both as snnTorch's
exporter does. Norse writes ``tau = dt/tau_mem_inv`` (= dt·τ, not τ; its ``dt`` defaults to
1e-3 s): the decay per step ``dt·tau_mem_inv`` is recovered with ``--dt`` = dt² (1e-6 for the
default) — see docs/NIR.md.

None of these writes a NIR node by hand for a layer the framework converts itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _stock_pool_flatten(module: Any):
    """NIR nodes for ``torch.nn.AvgPool2d`` and ``torch.nn.Flatten`` (batch-less dims, as snnTorch's
    exporter writes them), None for anything else."""
    import nir
    import torch

    if isinstance(module, torch.nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None:
            raise ValueError(f"{module}: ceil_mode / divisor_override have no NIR AvgPool2d equivalent")
        pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
        return nir.AvgPool2d(kernel_size=pair(module.kernel_size),
                             stride=pair(module.kernel_size if module.stride is None else module.stride),
                             padding=pair(module.padding))
    if isinstance(module, torch.nn.Flatten):
        shift = lambda d: d - 1 if d > 0 else d  # noqa: E731
        return nir.Flatten(input_type=None, start_dim=shift(module.start_dim), end_dim=shift(module.end_dim))
    return None


def snntorch_export(net, sample):
    """snnTorch's own exporter with the arguments a conv net needs (see the module docstring)."""
    from snntorch.export_nir import export_to_nir

    return export_to_nir(net, sample, ignore_dims=[0])


def _traced(net, sample, convert, kinds, **kwargs):
    """``nirtorch.torch_to_nir`` with ``convert`` for each of ``kinds``; the Input type from the
    sample (without its batch dimension) and ``infer_types``, as ``export_to_nir`` ends."""
    import nir
    import nirtorch

    g = nirtorch.torch_to_nir(net, {k: convert for k in kinds}, default_dict=None, type_check=False, **kwargs)
    shape = np.array(sample.shape[1:])
    for node in g.nodes.values():
        if isinstance(node, nir.Input):
            node.input_type, node.output_type = {"input": shape}, {"output": shape}
    g.infer_types()
    return g


def snntorch_export_traced(net, sample):
    """snnTorch's per-module conversion under nirtorch's fx tracer, for graphs with ``+`` joins."""
    import snntorch as snn
    import torch
    from snntorch.export_nir import _extract_snntorch_module

    kinds = (torch.nn.Conv2d, torch.nn.AvgPool2d, torch.nn.Flatten, torch.nn.Linear, snn.Leaky, snn.Synaptic)
    return _traced(net, sample, _extract_snntorch_module, kinds)


def norse_export(net, sample, dt: float = 1e-3):
    """Norse's own module conversion through the call ``norse.torch.to_nir`` makes, plus the
    pool/flatten mappings, ``ignore_dims`` and type inference it lacks (see the module docstring)."""
    from nirtorch import extract_nir_graph
    from norse.torch.utils.export_nir import _extract_norse_module

    def convert(module):
        node = _extract_norse_module(module, dt=dt)
        return node if node is not None else _stock_pool_flatten(module)

    g = extract_nir_graph(net, convert, sample, model_name="norse", ignore_dims=[0])
    g.infer_types()
    return g


def norse_export_traced(net, sample, dt: float = 1e-3):
    """Norse's per-module conversion (plus pool/flatten) under nirtorch's fx tracer, for graphs
    with ``+`` joins; ``net.forward(x, state=None)`` returns ``(output, state)`` and each Norse
    cell's ``(spikes, state)`` is split by nirtorch's ``stateful_modules``."""
    import norse.torch as nt
    import torch
    from norse.torch.utils.export_nir import _extract_norse_module

    def convert(module):
        node = _extract_norse_module(module, dt=dt)
        return node if node is not None else _stock_pool_flatten(module)

    kinds = (torch.nn.Conv2d, torch.nn.AvgPool2d, torch.nn.Flatten, torch.nn.Linear, nt.LIFBoxCell)
    return _traced(net, sample, convert, kinds, stateful_modules={nt.LIFBoxCell}, concrete_args={"state": None})


__all__ = ["norse_export", "norse_export_traced", "snntorch_export", "snntorch_export_traced"]
