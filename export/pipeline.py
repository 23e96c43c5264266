"""``htakl-deploy export``: a trained student → BN folded → graph → Loihi fixed point → files.

Targets (a table from name to function; each writes into ``out_dir`` and returns its report):

- ``nir``: ``student_float.nir`` and ``student_quant.nir`` (integer parameters, Loihi fields in
  node metadata), ``quant_report.json`` (per connection: scale S, weight_exp, clipped weights,
  max |error|), and the float vs integer accuracy on the data set's test split — the integer
  numbers come from *running* the quantised network (``quantize.run_int``), not the float one.
- ``onnx``: ``student_T{T}.onnx`` (the float SNN unrolled over T) and, when the run directory
  holds one, ``teacher.onnx``; each checked with onnxruntime against PyTorch.

- ``lava``: ``student.lava.npz``, the self-contained artefact ``htakl-deploy simulate`` loads
  (``hw.plan``: populations, links, delays, weights in integer and float form, the training
  config). It is built *from the NIR files* (``student_quant.nir`` read back for the integer
  parameters, ``student_float.nir`` for the float ones), so NIR is the interchange; then the
  lava-nc process graph is built and a few test images are run through Lava ``fixed_pt`` and
  the emulator, which must agree spike for spike (``lava_check`` in the report).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from htakl_deploy.atomic import check_writable_dir, write_json
from htakl_deploy.distill.checkpoint import load_checkpoint, resolve_checkpoint
from htakl_deploy.distill.config import MAX_TIMESTEPS, config_from_dict, data_config
from htakl_deploy.distill.data.inputfile import Inputs, from_dataset
from htakl_deploy.distill.models import Classifier
from htakl_deploy.distill.recipe import load_test, model_from_checkpoint
from htakl_deploy.distill.train import predict
from htakl_deploy.errors import UserError
from htakl_deploy.rundir import claim
from htakl_deploy.export.fold import fold_batchnorm
from htakl_deploy.export.graph import graph_from_classifier, samples_per_batch
from htakl_deploy.export.nir_io import read_nir, write_nir
from htakl_deploy.export.onnx_export import export_onnx
from htakl_deploy.export.quantize import logits_from_int, quantize, run_int


def is_nir_file(path: str | Path) -> bool:
    """True for a graph file: a ``.nir`` file or a lava-dl netx file (an HDF5 file with a ``layer``
    group, whatever its suffix) — export/simulate/energy/map/run take either (``nir_in.read_graph``)."""
    from htakl_deploy.export.netx_in import is_netx

    p = Path(path)
    return not p.is_dir() and (p.suffix.lower() in (".nir", ".net") or is_netx(p))


def load_student(path: str | Path) -> tuple[Classifier, dict[str, Any], Path]:
    ckpt_path = resolve_checkpoint(path, "student", flag="CHECKPOINT")
    ckpt = load_checkpoint(ckpt_path, flag="CHECKPOINT", role="student")
    if not isinstance(ckpt.get("config"), dict):
        raise UserError(f"CHECKPOINT: {ckpt_path} carries no training config (not written by `htakl-deploy distill`)")
    config_from_dict(ckpt["config"], f"CHECKPOINT: {ckpt_path}: its config")  # valid before any work
    model = model_from_checkpoint(ckpt, ckpt_path, "CHECKPOINT")
    model.eval()
    return model, ckpt, ckpt_path


def compare_float_int(model: Callable[[torch.Tensor], torch.Tensor], q, data: Inputs,
                      batch_size: int = 256) -> dict[str, Any]:
    """Float student (``model``: float64 ``[T, B, ...]`` → logits ``[T, B, K]``, in the dtype it runs in)
    vs integer network on every sample of ``data`` (a data set's images, direct
    encoding, or the user's inputs: ``distill.data.inputfile``); accuracies None without labels."""
    float_logits, int_logits = [], []
    batch_size = samples_per_batch(q.graph, data.timesteps, batch_size)  # long sequences: fewer at a time
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x_tb = torch.from_numpy(data.batch(start, start + batch_size))
            float_logits.append(model(x_tb).numpy())
            int_logits.append(logits_from_int(q, run_int(q, x_tb)))
    pred_float = predict(torch.from_numpy(np.concatenate(float_logits, 1)))
    pred_int = predict(torch.from_numpy(np.concatenate(int_logits, 1)))
    y = None if data.labels is None else torch.from_numpy(data.labels)
    return {
        "samples": len(data), "timesteps": data.timesteps, "inputs": data.source,
        "float_acc": None if y is None else float((pred_float == y).double().mean()),
        "int_acc": None if y is None else float((pred_int == y).double().mean()),
        "decision_agreement": float((pred_float == pred_int).double().mean()),
        "eval_s": time.perf_counter() - t0,
    }


def export_nir(model: Classifier, ckpt: dict[str, Any], out_dir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    folded = fold_batchnorm(model)
    graph = graph_from_classifier(folded)
    q = quantize(graph)
    float_path = write_nir(graph, out_dir / "student_float.nir")
    quant_path = write_nir(graph, out_dir / "student_quant.nir", quantized=q)
    for path in (float_path, quant_path):  # what we wrote must read back
        read_nir(path)
    write_json(out_dir / "quant_report.json", q.report())
    report: dict[str, Any] = {"float_nir": str(float_path), "quant_nir": str(quant_path),
                              "quant_report": str(out_dir / "quant_report.json"),
                              "clipped_weights": int(sum(r["n_clipped"] for r in q.report())),
                              "warnings": q.warnings()}
    if opts["evaluate"]:
        cfg = data_config(ckpt["config"], "CHECKPOINT's config", opts["data_root"])
        # the test images the run was evaluated on, unless --samples says otherwise
        test = load_test(cfg.replace(limit_test=opts["samples"] or cfg.limit_test))
        report["accuracy"] = compare_float_int(lambda x: model(x.float()), q,  # images: float32, exact
                                               from_dataset(test, opts["timesteps"] or cfg.timesteps))
    return report


def plan_from_nir(folder: Path):
    """The deployment plan of the NIR graphs an export writes in ``folder`` — the float student
    (``student_float.nir``) and its quantised twin (``student_quant.nir``) — with integer and
    float weights: what the Lava artefact is written from, and where ``simulate --backend
    lava-floating_pt`` takes the float weights the artefact does not hold. UserError otherwise."""
    from htakl_deploy.export.nir_io import from_nir
    from htakl_deploy.export.quantize import QuantizedGraph
    from htakl_deploy.hw.plan import plan_from_quantized

    graphs = []
    for name in ("student_quant.nir", "student_float.nir"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing; re-export with `htakl-deploy export RUN_DIR --target lava`")
        graphs.append(from_nir(read_nir(folder / name)))
    q, graph = graphs
    if not isinstance(q, QuantizedGraph):
        raise UserError(f"{folder / 'student_quant.nir'}: not a quantised NIR graph")
    if isinstance(graph, QuantizedGraph):
        raise UserError(f"{folder / 'student_float.nir'}: a quantised graph, expected the float student")
    try:
        return plan_from_quantized(QuantizedGraph(graph, q.connections, q.targets, q.input_scale, q.metadata))
    except ValueError as e:
        raise UserError(f"cannot deploy this student to Lava: {e}") from None


def export_lava(model: Classifier, ckpt: dict[str, Any], out_dir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from htakl_deploy.hw.simulate import ARTEFACT_NAME, load_samples

    warnings: list[str] = []
    if not (out_dir / "student_quant.nir").exists() or not (out_dir / "student_float.nir").exists():
        warnings = export_nir(model, ckpt, out_dir, {**opts, "evaluate": False})["warnings"]
    plan = plan_from_nir(out_dir)
    timesteps = opts["timesteps"] or ckpt["config"]["timesteps"]
    # the artefact is portable: its config names no data folder (simulate takes --data-root)
    plan.metadata.update({"config": {**ckpt["config"], "data_root": None}, "timesteps": timesteps,
                          "model_spec": model.spec,
                          "source_nir": "student_quant.nir"})
    path = plan.save(out_dir / ARTEFACT_NAME)
    report: dict[str, Any] = {
        "artefact": str(path), "warnings": warnings,
        "populations": {n: {"shape": list(p.shape), "depth": p.depth} for n, p in plan.populations.items()},
        "links": [{"name": k.name, "kind": k.kind, "src": k.src, "dst": k.dst, "delay": k.delay,
                   "weight_exp": k.weight_exp} for k in plan.links],
    }
    if opts["lava_check"]:
        x_tb, _ = load_samples(plan, opts["lava_check"], timesteps, opts["data_root"])
        report["lava_check"] = lava_check(plan, x_tb)
    return report


def lava_check(plan, x_tb: np.ndarray) -> dict[str, Any]:
    """Run ``x_tb`` through Lava ``fixed_pt`` and the emulator; RuntimeError unless they agree
    spike for spike and on every readout value."""
    from htakl_deploy.hw.emulator import emulate
    from htakl_deploy.hw.lava_net import run_lava
    from htakl_deploy.hw.simulate import spike_agreement

    t0 = time.perf_counter()
    lava = run_lava(plan, x_tb, backend="fixed_pt")
    emu = emulate(plan, x_tb)
    agree = spike_agreement(lava.spikes, emu.spikes)
    check = {"samples": int(x_tb.shape[1]), "spike_agreement": agree,
             "spikes": int(sum(np.count_nonzero(v) for v in emu.spikes.values())),
             "readout_identical": bool(np.array_equal(lava.readout_u, emu.readout_u)),
             "lava_s": time.perf_counter() - t0}
    if agree["all"] != 1.0 or not check["readout_identical"]:
        raise RuntimeError(f"Lava and the emulator disagree on {x_tb.shape[1]} samples: {agree}")
    return check


def onnx_max_error(model: Classifier, path: Path, x: torch.Tensor) -> float:
    """Max |onnxruntime − PyTorch| on ``x`` (``[T,B,C,H,W]`` for students, ``[B,C,H,W]`` for ANNs)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(x) if model.spiking else model(x.unsqueeze(0))[0]
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(got - want.numpy()).max())


def _teacher_checkpoint(ckpt: dict[str, Any], run_dir: Path | None) -> Path | None:
    """The teacher trained in the run directory, else the one the run was given if that lies
    inside the run directory: a checkpoint's saved config never points the tool at other files."""
    if run_dir is None:
        return None
    if (run_dir / "teacher" / "last.pt").exists():
        return run_dir / "teacher" / "last.pt"
    given = ckpt["config"].get("teacher")
    if not isinstance(given, str):
        return None
    path = resolve_checkpoint(given, "teacher")
    inside = path.resolve().is_relative_to(run_dir.resolve())
    return path if inside else None


def export_onnx_target(model: Classifier, ckpt: dict[str, Any], out_dir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    timesteps = opts["timesteps"] or ckpt["config"]["timesteps"]
    example = torch.rand(timesteps, 2, *model.in_shape, generator=torch.Generator().manual_seed(0))
    path = export_onnx(model, out_dir / f"student_T{timesteps}.onnx", timesteps)
    report: dict[str, Any] = {"student": str(path), "student_max_abs_err": onnx_max_error(model, path, example)}
    teacher_path = _teacher_checkpoint(ckpt, opts["run_dir"])
    if teacher_path is not None and teacher_path.exists():
        teacher_ckpt = load_checkpoint(teacher_path, flag="CHECKPOINT's teacher", role="teacher")
        teacher = model_from_checkpoint(teacher_ckpt, teacher_path, "CHECKPOINT's teacher").eval()
        path = export_onnx(teacher, out_dir / "teacher.onnx", 1)
        report["teacher"] = str(path)
        report["teacher_max_abs_err"] = onnx_max_error(teacher, path, example[0])
    return report


def export_netx(model: Classifier, ckpt: dict[str, Any], out_dir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from htakl_deploy.export.nir_io import from_nir

    warnings: list[str] = []
    if not (out_dir / "student_quant.nir").exists():
        warnings = export_nir(model, ckpt, out_dir, {**opts, "evaluate": False})["warnings"]
    report = write_netx_target(from_nir(read_nir(out_dir / "student_quant.nir")), out_dir)
    return {**report, "warnings": warnings + report["warnings"]}


def write_netx_target(q, out_dir: Path) -> dict[str, Any]:
    """``student.netx.h5`` (lava-dl netx HDF5) of a quantised graph; UserError naming the layer
    netx cannot express. Layers netx holds but does not run bit-exactly (``netx_hdf5``'s
    ``inexact_why``) are listed in ``inexact_layers`` and, one line each, in ``warnings``."""
    from htakl_deploy.export.netx_hdf5 import read_netx_summary, write_netx

    try:
        path = write_netx(q, out_dir / NETX_NAME)
    except ValueError as e:
        raise UserError(f"--target netx: {e}") from None
    layers = read_netx_summary(path)["layers"]
    inexact = [{"nodes": layer["attrs"].get("nodes"), "why": layer["attrs"].get("inexact_why", "")}
               for layer in layers if layer["type"] in ("conv", "dense") and not layer["attrs"].get("exact", True)]
    return {"netx": str(path), "layers": [layer["type"] for layer in layers], "inexact_layers": inexact,
            "warnings": [f"netx: layer {layer['nodes']} is not bit-exact in lava-dl's netx: {layer['why']}"
                         for layer in inexact]}


TARGETS: dict[str, Callable[[Classifier, dict, Path, dict], dict[str, Any]]] = {
    "nir": export_nir,
    "onnx": export_onnx_target,
    "lava": export_lava,
    "netx": export_netx,
}
NETX_NAME = "student.netx.h5"


def run_export(checkpoint: str | Path, targets: list[str], out_dir: str | Path | None = None, *,
               timesteps: int | None = None, samples: int | None = None,
               data_root: str | None = None, evaluate: bool = True, lava_check: int = 4,
               data: str | None = None, dt_s: float | None = None, calibration: str | None = None,
               input_file: str | None = None, reset: list[str] | None = None, strict: bool = False) -> dict[str, Any]:
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UserError(f"--target: got {unknown[0]!r}, expected one of {', '.join(TARGETS)}")
    if timesteps is not None and not 1 <= timesteps <= MAX_TIMESTEPS:
        raise UserError(f"--timesteps: got {timesteps}, expected an integer in 1..{MAX_TIMESTEPS}")
    if lava_check < 0:
        raise UserError(f"--lava-check: got {lava_check}, expected an integer >= 0")
    if samples is not None and samples < 1:
        raise UserError(f"--samples: got {samples}, expected an integer >= 1")
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")
    if data_root is not None and not Path(data_root).is_dir():
        raise UserError(f"--data-root: {data_root} is not a folder")
    if is_nir_file(checkpoint):
        from htakl_deploy.export.nir_in import export_from_nir

        return export_from_nir(Path(checkpoint), targets, out_dir, timesteps=timesteps, samples=samples,
                               data=data, data_root=data_root, evaluate=evaluate, lava_check=lava_check, dt_s=dt_s,
                               calibration=calibration, input_file=input_file, reset=reset, strict=strict)
    if data is not None or dt_s is not None or calibration is not None or input_file is not None or reset or strict:
        raise UserError("--data, --input, --dt, --reset, --strict and --calibration apply to a NIR file (MODEL.nir) "
                        "only: a checkpoint knows its data set and neurons")
    model, ckpt, ckpt_path = load_student(checkpoint)
    run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else None
    out = Path(out_dir) if out_dir else ckpt_path.parent.parent / "export"
    check_writable_dir(out, "--out" if out_dir else "CHECKPOINT's export folder")
    if (evaluate and "nir" in targets) or ("lava" in targets and lava_check):  # test images needed:
        # found (or refused) before anything is written
        data_config(ckpt["config"], f"CHECKPOINT: {ckpt_path}: its config", data_root)
    before = set(out.iterdir()) if out.is_dir() else set()
    opts = {"timesteps": timesteps, "samples": samples, "data_root": data_root,
            "evaluate": evaluate, "run_dir": run_dir, "lava_check": lava_check}
    report: dict[str, Any] = {"checkpoint": str(ckpt_path), "model_spec": model.spec}
    # one writer per folder (a folder this command created is removed again if it fails)
    with claim(out, "--out" if out_dir else "CHECKPOINT's export folder"):
        try:
            for target in targets:
                t0 = time.perf_counter()
                report[target] = TARGETS[target](model, ckpt, out, opts)
                report[target]["wall_s"] = time.perf_counter() - t0
        except UserError:  # refused part-way (e.g. a student Lava cannot take): leave no partial set behind
            for p in set(out.iterdir()) - before:
                p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)
            raise
        # quantisation warnings (QuantizedGraph.warnings), once, for the caller to show
        report["warnings"] = list(dict.fromkeys(w for t in targets for w in report[t].pop("warnings", [])))
        write_json(out / "export_report.json", report)
    return report
