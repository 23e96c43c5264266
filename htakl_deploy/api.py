"""The Python API for notebooks: the pipeline's steps as functions that work in memory.

Import them from the package (``from htakl_deploy import train, to_plan, emulate, ...``); they
are loaded on first use, so importing ``htakl_deploy`` stays cheap. ``docs/API.md`` is a worked
example (executed by ``tests/test_api.py``).

=====================  ===========================================================================
``train``              distil a student from a config (dict or ``DistillConfig``); returns the summary
``load_student``       the trained student (a ``Classifier``) of a run directory or checkpoint
``to_graph``           a student, a NIR file or a ``nir.NIRGraph`` → ``StudentGraph`` (BN folded)
``to_plan``            a student / graph / NIR file → the deployment plan (Loihi fixed point)
``sample_batch``       ``n`` test images of a run's data set (every class in proportion), ``[T, n, C, H, W]`` + labels
``emulate``            run a plan on a batch in the bit-exact emulator → spikes, logits
``count_energy``       ACs/MACs and energy of a spike dict on a graph → the energy report dict
``render_report``      write ``report.{md,html,json}`` of a run directory; returns the report dict
``run_pipeline``       everything ``htakl-deploy run`` does, with a ``PipelineConfig``
=====================  ===========================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def train(config: Any = None, **changes: Any) -> dict[str, Any]:
    """Train (a teacher, if the method needs one and ``teacher`` is not given, then) the student.

    ``config``: a ``DistillConfig``, a dict of its fields, or None (defaults); ``changes`` override
    single fields (``train(data="digits", epochs=5)``). Writes the run directory like
    ``htakl-deploy distill`` and returns its summary (``run_dir``, accuracies, ...)."""
    from htakl_deploy.distill import dist, recipe
    from htakl_deploy.distill.config import DistillConfig, build_config

    if isinstance(config, DistillConfig):
        cfg = config.replace(**changes)
    else:
        cfg = build_config(dict(config or {}), changes)
    return recipe.run(cfg, dist.DistEnv())


def load_student(path: str | Path):
    """The student ``Classifier`` of a run directory (``student/last.pt``) or a checkpoint file."""
    from htakl_deploy.export.pipeline import load_student as _load

    model, _, _ = _load(path)
    return model


def to_graph(source):
    """A ``StudentGraph`` from a ``Classifier`` (BatchNorm folded), a ``.nir`` file or a
    ``nir.NIRGraph`` (a quantised NIR file gives its ``QuantizedGraph``)."""
    from htakl_deploy.distill.models import Classifier
    from htakl_deploy.export.fold import fold_batchnorm
    from htakl_deploy.export.graph import StudentGraph, graph_from_classifier
    from htakl_deploy.export.nir_io import from_nir, read_nir

    if isinstance(source, Classifier):
        return graph_from_classifier(fold_batchnorm(source))
    if isinstance(source, StudentGraph):
        return source
    if isinstance(source, (str, Path)):
        return from_nir(read_nir(source))
    return from_nir(source)  # a nir.NIRGraph


def to_plan(source):
    """The deployment plan (what Lava and the emulator run) of a student, graph or NIR file."""
    from htakl_deploy.export.quantize import QuantizedGraph, quantize
    from htakl_deploy.hw.plan import plan_from_quantized

    graph = to_graph(source)
    q = graph if isinstance(graph, QuantizedGraph) else quantize(graph)
    return plan_from_quantized(q)


def sample_batch(run_dir: str | Path, n: int = 32, timesteps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x [T, n, C, H, W] float32 in [0, 1], labels [n])``: ``n`` test images of the
    run's data set, direct-encoded (the image at every step; T from the run's config unless given)."""
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.data import encode

    cfg, _ = recipe.read_run(run_dir)
    test = recipe.load_test(cfg.replace(limit_test=n))
    import torch

    x, y = test.batch(torch.arange(len(test)))
    return encode(x, timesteps or cfg.timesteps, "direct").numpy().astype(np.float32), y.numpy()


def emulate(plan, x_tb, **kwargs):
    """Run ``x_tb`` (``[T, B, C, H, W]`` pixels in [0, 1]) through the bit-exact emulator;
    returns ``EmulatorResult`` (``spikes`` per LIF layer ``[T, B, ...]``, ``logits``, ...)."""
    from htakl_deploy.hw.emulator import emulate as _emulate

    return _emulate(plan, x_tb, **kwargs)


def count_energy(spikes: dict[str, np.ndarray], input_tb: np.ndarray, graph, preset: str = "paper-45nm",
                 *, neurobench: bool = True) -> dict[str, Any]:
    """Exact ACs/MACs and energy of a recording: ``spikes`` (LIF layer → 0/1 ``[T, B, ...]``),
    ``input_tb`` (what the first layer saw, e.g. ``EmulatorResult.input_int``) on ``graph`` (a
    ``StudentGraph`` or ``QuantizedGraph``), priced with an energy preset. The dict is the one
    ``htakl-deploy energy --json`` writes (``per_sample['energy_pj']``, ``layers``, ``totals``)."""
    from htakl_deploy.energy.counter import count_ops
    from htakl_deploy.energy.models import load_preset
    from htakl_deploy.energy.report import energy_report
    from htakl_deploy.energy.spikefile import SpikeRecording

    graph = getattr(graph, "graph", graph)
    layers = {k: np.asarray(v).astype(np.uint8) for k, v in spikes.items()}
    rec = SpikeRecording(layers=layers, input=np.asarray(input_tb), attrs={"layer_order": list(layers)})
    return energy_report(count_ops(graph, rec, neurobench=neurobench), load_preset(preset), backend="api")


def render_report(run_dir: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``run_dir``; return the report
    dict (its ``warnings`` are the sanity checks)."""
    from htakl_deploy.energy.document import write_report

    return write_report(run_dir)


def run_pipeline(config: Any = None, pipeline: Any = None, **changes: Any) -> dict[str, Any]:
    """``htakl-deploy run`` in a call: ``config`` (``DistillConfig`` / dict) with ``changes``, and
    ``pipeline`` (``PipelineConfig`` / dict: lava, backends, preset, ...). Returns its result."""
    from htakl_deploy.distill.config import DistillConfig, build_config
    from htakl_deploy.pipeline import run_pipeline as _run
    from htakl_deploy.runconfig import PipelineConfig

    cfg = config.replace(**changes) if isinstance(config, DistillConfig) else build_config(dict(config or {}), changes)
    settings = pipeline if isinstance(pipeline, PipelineConfig) else PipelineConfig(**dict(pipeline or {}))
    return _run(cfg, settings, progress=cfg.progress)
