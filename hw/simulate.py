"""``htakl-deploy simulate``: run an exported Lava artefact on a data split, record every spike.

Backends (a table, ``BACKENDS``):

- ``lava-fixed_pt``    lava-nc's ``Loihi2SimCfg`` with the bit-accurate ``fixed_pt`` models;
- ``lava-floating_pt`` the same process graph with Lava's float models and float weights;
- ``emulator``         ``hw.emulator``: the fixed_pt integer maths, vectorised over samples;
- ``torch-float``      the float student (``student_float.nir`` next to the artefact) in
                       PyTorch float64, time-step aligned: what training-time tools report.

Class decision (all backends, documented in the README): the student's last layer has no
neuron, so there is no output spike count to read; the readout population integrates nothing
and its current ``u`` is read each step — ``logits_t = (u_t + bias)/(64·S)`` — and the class is
the argmax of the logits' mean over the T steps, as in training (``distill.train.predict``).

Outputs in ``OUT`` (default ``RUN_DIR/simulate/<backend>``), written atomically:
``spikes.h5`` (every population's spikes ``[T, samples, ...]`` in torch layout, the 8-bit input,
labels, predictions; ``energy.spikefile`` format) and ``simulate.json`` (accuracy, wall time,
samples/s, and the agreement with the emulator — spike for spike — and with the float student).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from htakl_deploy.atomic import write_json
from htakl_deploy.distill.config import config_from_dict
from htakl_deploy.distill.data import encode
from htakl_deploy.distill.recipe import load_data
from htakl_deploy.errors import UserError
from htakl_deploy.energy.spikefile import write_spikes
from htakl_deploy.hw.emulator import EmulatorResult, emulate
from htakl_deploy.hw.plan import DeploymentPlan, load_plan

ARTEFACT_NAME = "student.lava.npz"


def _lava(precision: str):
    def run(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress) -> EmulatorResult:
        from htakl_deploy.hw.lava_net import run_lava

        return run_lava(plan, x_tb, backend=precision, progress=progress)

    return run


def _emulator(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress) -> EmulatorResult:
    result = emulate(plan, x_tb)
    if progress is not None:
        progress(x_tb.shape[1])
    return result


def _torch_float(plan: DeploymentPlan, artefact: Path, x_tb: np.ndarray, progress) -> EmulatorResult:
    spikes, logits = float_student_spikes(artefact, x_tb)
    if progress is not None:
        progress(x_tb.shape[1])
    return EmulatorResult(spikes, None, logits, x_tb.astype(np.float32))


BACKENDS: dict[str, Callable[[DeploymentPlan, Path, np.ndarray, Any], EmulatorResult]] = {
    "lava-fixed_pt": _lava("fixed_pt"),
    "lava-floating_pt": _lava("floating_pt"),
    "emulator": _emulator,
    "torch-float": _torch_float,
}


def resolve_artefact(path: str | Path) -> Path:
    """A ``student.lava.npz`` file, or a run/export directory holding one."""
    p = Path(path)
    for cand in (p, p / ARTEFACT_NAME, p / "export" / ARTEFACT_NAME):
        if cand.is_file():
            return cand
    raise UserError(f"ARTEFACT {path}: no {ARTEFACT_NAME} there; create it with "
                    f"`htakl-deploy export RUN_DIR --target lava`")


def read_artefact(path: Path) -> DeploymentPlan:
    try:
        return load_plan(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"ARTEFACT {path}: not a readable Lava artefact ({e})") from None


def load_samples(plan: DeploymentPlan, samples: int | None, timesteps: int,
                 data_root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` test images of the artefact's data set (default: the test images
    the run was evaluated on), direct-encoded ``[T, B, ...]``."""
    cfg_dict = plan.metadata.get("config")
    if not cfg_dict:
        raise UserError("ARTEFACT has no training config: re-export it with `htakl-deploy export --target lava`")
    cfg = config_from_dict(cfg_dict)
    if data_root:
        cfg = cfg.replace(data_root=data_root)
    cfg = cfg.replace(limit_train=cfg.batch_size, limit_test=samples or cfg.limit_test)
    _, test = load_data(cfg)
    x, y = test.batch(torch.arange(len(test)))
    return encode(x, timesteps, "direct").double().numpy(), y.numpy()


def spike_agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    per_layer = {k: float((a[k] == b[k]).mean()) for k in a}
    total = sum(int((a[k] == b[k]).sum()) for k in a) / max(sum(a[k].size for k in a), 1)
    return {"all": total, **per_layer}


def float_student_spikes(artefact: Path, x_tb: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Spikes and logits of the float student (``student_float.nir`` next to the artefact)."""
    from htakl_deploy.export.graph import LIFNode, StudentGraph, run_float
    from htakl_deploy.export.nir_io import from_nir, read_nir

    path = artefact.parent / "student_float.nir"
    graph = from_nir(read_nir(path)) if path.exists() else None
    if not isinstance(graph, StudentGraph):
        raise UserError(f"{path}: the float student's NIR file is missing or not a float graph; "
                        "re-export with `htakl-deploy export RUN_DIR --target lava`")
    out, vals = run_float(graph, torch.from_numpy(x_tb), record=True)
    spikes = {k: vals[k].numpy() > 0.5 for k, node in graph.nodes.items() if isinstance(node, LIFNode)}
    return spikes, out.numpy()


def simulate(artefact: str | Path, *, backend: str = "lava-fixed_pt", samples: int | None = None,
             timesteps: int | None = None, out_dir: str | Path | None = None, data_root: str | None = None,
             progress: Callable[[int], None] | None = None, compare: bool = True) -> dict[str, Any]:
    if backend not in BACKENDS:
        raise UserError(f"--backend: got {backend!r}, expected one of {', '.join(BACKENDS)}")
    if samples is not None and samples < 1:
        raise UserError(f"--samples: got {samples}, expected an integer >= 1")
    if timesteps is not None and timesteps < 1:
        raise UserError(f"--timesteps: got {timesteps}, expected an integer >= 1")
    path = resolve_artefact(artefact)
    plan = read_artefact(path)
    t = timesteps or int(plan.metadata.get("timesteps", 4))
    x_tb, labels = load_samples(plan, samples, t, data_root)
    out = Path(out_dir) if out_dir else path.parent.parent / "simulate" / backend
    t0 = time.perf_counter()
    result = BACKENDS[backend](plan, path, x_tb, progress)
    wall_s = time.perf_counter() - t0
    pred = result.logits.mean(0).argmax(-1)
    report: dict[str, Any] = {
        "backend": backend, "artefact": str(path), "samples": int(len(labels)), "timesteps": t,
        "accuracy": float((pred == labels).mean()), "wall_s": wall_s,
        "samples_per_s": len(labels) / wall_s if wall_s > 0 else None, "spikes_file": "spikes.h5",
        "readout": "argmax over classes of the mean over T of (u + bias)/(64·S), u = readout current",
        "firing_rate": {k: float(v.mean()) for k, v in result.spikes.items()},
    }
    if compare and backend.startswith("lava"):
        emu = emulate(plan, x_tb)
        report["agreement"] = {"vs": "emulator", "spike_agreement": spike_agreement(result.spikes, emu.spikes),
                               "decision_agreement": float((emu.logits.mean(0).argmax(-1) == pred).mean()),
                               "readout_identical": bool(np.array_equal(emu.readout_u, result.readout_u))}
    if compare and backend != "torch-float" and (path.parent / "student_float.nir").exists():
        f_spikes, f_logits = float_student_spikes(path, x_tb)
        f_pred = f_logits.mean(0).argmax(-1)
        report["float_student"] = {"accuracy": float((f_pred == labels).mean()),
                                   "decision_agreement": float((f_pred == pred).mean()),
                                   "spike_agreement": spike_agreement(f_spikes, result.spikes)}
    x_rec = result.input_int if backend == "torch-float" else result.input_int.astype(np.uint8)
    write_spikes(out / "spikes.h5", layers={k: v.astype(np.uint8) for k, v in result.spikes.items()},
                 input=x_rec, labels=labels, predictions=pred,
                 attrs={"backend": backend, "artefact": str(path), "timesteps": t,
                        "input_scale": plan.input_scale, "readout": report["readout"]})
    write_json(out / "simulate.json", report)
    report["out_dir"] = str(out)
    return report
