"""``htakl-deploy export MODEL.nir``: a float NIR graph from any framework → Loihi fixed point; a
lava-dl netx file (MODEL.net) takes the same path, read by ``export.netx_in`` (``read_graph``).

The file is read with ``nir.read`` and converted node by node (``nir_io.FROM_NIR``: unknown
types, cycles, shape mismatches and NaN/inf parameters are one-line ``UserError`` s naming the
node), quantised exactly as our own students are (``quantize.quantize``: the scales come from
the weights alone — see that module — so no calibration data is needed), and written as the same
artefacts a trained run gets: ``student_float.nir``, ``student_quant.nir``, ``quant_report.json``,
``student.lava.npz`` (target ``lava``), ``student.netx.h5`` (target ``netx``) and
``export_report.json``.

Everything that can be refused is checked before the output folder is created, and a folder
this command created is removed again if a later step fails: a refused graph leaves nothing.

Time: NIR's neurons have continuous time constants; the step ``dt`` an exporter divided by is
not in the file. ``--dt`` gives it (default 1e-4 s, what SpikingJelly's and snnTorch's exporters
use; Norse 1.1.0's writes ``tau = dt/tau_mem_inv`` with its dt = 1e-3 s, see docs/NIR.md). With
``--data NAME`` the float graph and the integer network are compared on that data set's test split
(direct encoding, ``--timesteps`` steps), with ``--input FILE`` on the user's own inputs (event
frames, sequences or static inputs: ``distill.data.inputfile``), and the Lava check runs their
first samples; without either it runs uniform random inputs in [0, 1].
``--calibration SRC`` (a data set name, or inputs as ``--input`` reads them) adds the 24-bit
headroom of every layer and the float-vs-integer agreement on those inputs
(``export.calibration``; the scales stay the weights').
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from htakl_deploy.atomic import write_json
from htakl_deploy.errors import UserError
from htakl_deploy.rundir import claim
from htakl_deploy.export.graph import StudentGraph, run_float
from htakl_deploy.export.nir_io import DT, from_nir, read_nir, type_check_failure, write_nir
from htakl_deploy.export.quantize import QuantizedGraph, quantize, run_int

NETX_FORMAT = "lava-dl-netx"  # export.netx_in.FORMAT (a QuantizedGraph read from a netx file)

NIR_TARGETS = ("nir", "lava", "netx")
DEFAULT_TIMESTEPS = 4
ACTIVITY_SAMPLES = 4  # samples the export's silence check runs (at least the Lava check's)


def read_graph(path: str | Path, dt_s: float | None = None) -> StudentGraph | QuantizedGraph:
    """A graph file as our description: a NIR graph (``nir_io.from_nir``: a ``StudentGraph``, or a
    ``QuantizedGraph`` for a quantised file of ours) or a lava-dl netx file (``netx_in.read_netx``: a
    ``QuantizedGraph``, its integers as they are; ``dt`` does not apply, netx counts steps). The one
    entry every subcommand taking a graph file goes through. A NIR file that fails NIR's own type
    check is read all the same, with a warning in the graph's metadata naming the mismatch."""
    from htakl_deploy.export.netx_in import is_netx, read_netx

    if is_netx(path) or Path(path).suffix.lower() == ".net":  # .net: lava-dl's name for netx files
        return read_netx(path)
    dt = DT if dt_s is None else float(dt_s)
    if not dt > 0 or not np.isfinite(dt):
        raise UserError(f"--dt: got {dt_s}, expected a positive number of seconds")
    got = from_nir(read_nir(path), dt=dt)
    failed = type_check_failure(path)
    if failed:
        (got.graph if isinstance(got, QuantizedGraph) else got).metadata.setdefault("warnings", []).append(failed)
    return got


def load_nir_graph(path: str | Path, dt_s: float | None = None,
                   reset: list[str] | None = None) -> tuple[StudentGraph, QuantizedGraph]:
    """The float graph of a graph file (NIR or netx, ``read_graph``) and its fixed-point version
    (UserError naming the node or layer for anything that cannot be imported or quantised). A
    quantised NIR file of ours and a netx file are used as they are. ``reset``: ``--reset`` choices
    (``set_resets``)."""
    got = read_graph(path, dt_s)
    set_resets(got.graph if isinstance(got, QuantizedGraph) else got, reset)
    if isinstance(got, QuantizedGraph):
        return got.graph, got
    try:
        return got, quantize(got)
    except ValueError as e:
        raise UserError(f"{path}: cannot map this graph to Loihi fixed point: {e}") from None


def set_resets(graph: StudentGraph, specs: list[str] | None) -> None:
    """Apply ``--reset`` choices: ``MODE`` (every neuron layer) or ``LAYER=MODE``, MODE "zero" or
    "subtract" (NIR 1.0.8 cannot record it; our files keep it in node metadata). UserError naming the
    flag for an unknown mode or layer."""
    from htakl_deploy.export.nodes import RESETS

    neurons = [n for n, v in graph.nodes.items() if v.ROLE == "neuron"]
    for spec in specs or ():
        name, _, mode = str(spec).rpartition("=")
        if mode not in RESETS:
            raise UserError(f"--reset {spec}: mode {mode!r}, expected {' or '.join(RESETS)} (as MODE or LAYER=MODE)")
        if name and name not in neurons:
            raise UserError(f"--reset {spec}: no neuron layer {name!r} in the graph (its neuron layers: "
                            f"{', '.join(neurons)})")
        for n in [name] if name else neurons:
            graph.nodes[n].reset = mode


def _inputs(graph: StudentGraph, data: str | None, data_root: str | None, samples: int | None,
            input_file: str | None = None, timesteps: int | None = None):
    """What the float graph and the integer network are compared on (and the Lava check runs): the
    test split of ``data`` (checked against the graph's input shape; direct encoding over
    ``timesteps``) or the user's ``input_file`` (``distill.data.inputfile``), as ``Inputs``; or None."""
    from htakl_deploy.distill.data.inputfile import from_dataset, open_inputs

    if data is not None and input_file is not None:
        raise UserError("--data and --input: give one (a data set's test images, or your own inputs)")
    want = graph.shapes[graph.input_name]
    if input_file is not None:
        inputs = open_inputs(input_file, want, timesteps=timesteps, default_timesteps=DEFAULT_TIMESTEPS)
        return inputs.head(samples) if samples else inputs
    if data is None:
        return None
    from htakl_deploy.distill.data.registry import load_dataset

    kwargs = {} if data_root is None else {"root": data_root}
    _, test = load_dataset(data, **kwargs)
    test = test.subset(samples or len(test))  # the evaluation order, as `simulate` reads the split
    if tuple(test.in_shape) != tuple(want):
        raise UserError(f"--data {data}: images are {tuple(test.in_shape)}, the NIR graph's input is {want}")
    return from_dataset(test, timesteps or DEFAULT_TIMESTEPS)


def export_from_nir(path: Path, targets: list[str], out_dir: str | Path | None = None, *,
                    timesteps: int | None = None, samples: int | None = None, data: str | None = None,
                    data_root: str | None = None, evaluate: bool = True, lava_check: int = 4,
                    dt_s: float | None = None, calibration: str | None = None,
                    input_file: str | None = None, reset: list[str] | None = None,
                    strict: bool = False) -> dict[str, Any]:
    """Export a NIR file (see the module docstring); returns the report also written as
    ``export_report.json``."""
    from htakl_deploy.export.netx_hdf5 import _layers
    from htakl_deploy.hw.plan import plan_from_quantized

    unknown = [t for t in targets if t not in NIR_TARGETS]
    if unknown:
        raise UserError(f"--target: got {unknown[0]!r}; a NIR file exports to {', '.join(NIR_TARGETS)} "
                        "(ONNX needs a trained checkpoint)")
    for flag, value, low in (("--timesteps", timesteps, 1), ("--samples", samples, 1), ("--lava-check", lava_check, 0)):
        if value is not None and value < low:
            raise UserError(f"{flag}: got {value}, expected an integer >= {low}")
    graph, q = load_nir_graph(path, dt_s, reset)
    plan = None
    if "lava" in targets:
        try:
            plan = plan_from_quantized(q)
        except ValueError as e:
            raise UserError(f"{path}: cannot deploy this graph to Lava: {e}") from None
    if "netx" in targets:
        try:
            _layers(q, strict=False)
        except ValueError as e:
            raise UserError(f"--target netx: {e}") from None
    with ExitStack() as opened:  # input files stay open while they stream; closed however this ends
        test = _inputs(graph, data, data_root, samples, input_file, timesteps)
        if test is not None:
            opened.callback(test.close)
        t_steps = test.timesteps if test is not None else (timesteps or DEFAULT_TIMESTEPS)
        calib = None
        if calibration is not None:  # read and checked before anything is written
            from htakl_deploy.export.calibration import load_calibration

            calib = load_calibration(calibration, graph.shapes[graph.input_name], t_steps, data_root=data_root)
            opened.callback(calib.close)
        out = Path(out_dir) if out_dir else path.parent / f"{path.stem}-export"
        with claim(out, "--out"):  # one writer per folder; a folder this command created goes if it fails
            return _write(path, out, targets, graph, q, plan, test, t_steps, data, data_root, evaluate,
                          lava_check, DT if dt_s is None else float(dt_s), calibration, calib, strict)


def _check_inputs(test, n: int, t_steps: int, in_shape) -> tuple[np.ndarray, str]:
    """The first ``n`` samples to check with: the data set's or the user's, else uniform random inputs
    in [0, 1] (seed 0) shown every step; and words saying which."""
    if test is not None:
        x = test.batch(0, n)
        return x, f"on {x.shape[1]} samples of {test.source}"
    gen = np.random.default_rng(0)
    return np.repeat(gen.random((1, n, *in_shape)), t_steps, axis=0), f"on {n} random inputs"


def activity(graph, q, x_tb: np.ndarray, where: str, strict: bool = False) -> tuple[dict, list[str]]:
    """(report, warnings): spikes per neuron layer of the deployed integer network (``run_int``, the
    emulator's spikes; for a netx file, which holds integers only, the emulator's) and of the float
    graph on ``x_tb``; a layer or network that never spikes is a
    warning naming it (``hw.activity``), an error with ``strict``."""
    from htakl_deploy.hw.activity import check_silence

    if q.metadata.get("format") == NETX_FORMAT:  # integers only (sigma-delta layers too): the emulator's spikes
        from htakl_deploy.hw.emulator import emulate
        from htakl_deploy.hw.plan import plan_from_quantized

        plan = plan_from_quantized(q)
        got = emulate(plan, x_tb).spikes
        counts = {n: int(np.count_nonzero(got[n])) for n, p in plan.populations.items() if not p.readout}
        f_counts = None
    else:
        neurons = [n for n, v in graph.nodes.items() if v.ROLE == "neuron"]
        _, vals = run_int(q, x_tb, record=True)
        counts = {n: int(vals[n].sum()) for n in neurons}
        del vals
        with torch.no_grad():
            _, fvals = run_float(graph, torch.from_numpy(x_tb), record=True)
        f_counts = {n: int(fvals[n].sum()) for n in neurons}
    warnings = check_silence(counts, where, strict)
    if warnings and f_counts is not None and not any(f_counts.values()):
        warnings[0] += "; the float graph is silent there too"
    return {"inputs": where, "spikes": counts, "float_spikes": f_counts}, warnings


def _write(path, out, targets, graph, q, plan, test, t_steps, data, data_root, evaluate, lava_check,
           dt, calibration=None, calib=None, strict: bool = False) -> dict[str, Any]:
    from htakl_deploy.export.pipeline import compare_float_int, lava_check as run_lava_check, write_netx_target
    from htakl_deploy.hw.simulate import ARTEFACT_NAME

    report: dict[str, Any] = {"source_nir": str(path), "dt_s": dt, "timesteps": t_steps, "data": data,
                              "resets": {n: v.reset for n, v in graph.nodes.items() if v.ROLE == "neuron"},
                              "warnings": list(graph.metadata.get("warnings", [])) + q.warnings()}
    if calib is not None:
        from htakl_deploy.export.calibration import calibrate

        report["calibration"], calib_warnings = calibrate(graph, q, calib)
        report["calibration"]["source"] = str(calibration)
        report["warnings"] = report["warnings"] + calib_warnings
    x_chk, where = _check_inputs(test or calib, max(lava_check, ACTIVITY_SAMPLES), t_steps,
                                 graph.shapes[graph.input_name])
    report["activity"], silent = activity(graph, q, x_chk, where, strict)
    report["warnings"] = report["warnings"] + silent
    if "nir" in targets or "lava" in targets:
        float_path = write_nir(graph, out / "student_float.nir")
        quant_path = write_nir(graph, out / "student_quant.nir", quantized=q)
        write_json(out / "quant_report.json", q.report())
        report["nir"] = {"float_nir": str(float_path), "quant_nir": str(quant_path),
                         "quant_report": str(out / "quant_report.json"),
                         "clipped_weights": int(sum(r["n_clipped"] for r in q.report()))}
        if evaluate and test is not None and q.metadata.get("format") == NETX_FORMAT:
            report["nir"]["accuracy"] = None  # a netx file holds integers only: its float graph is the same numbers
            report["warnings"].append("a netx file holds its network in integers only: no float-vs-integer comparison "
                                      "(the Lava check compares Lava with the emulator)")
        elif evaluate and test is not None:
            def run(x_tb: torch.Tensor) -> torch.Tensor:
                return run_float(graph, x_tb.double())

            report["nir"]["accuracy"] = compare_float_int(run, q, test)
    if plan is not None:
        t0 = time.perf_counter()
        config = None
        if data is not None:
            from htakl_deploy.distill.config import DistillConfig

            config = DistillConfig(data=data, timesteps=t_steps).to_dict()  # portable: no data folder (simulate: --data-root)
        plan.metadata.update({"config": config, "timesteps": t_steps, "source_nir": str(path), "dt_s": dt,
                              "source_format": q.metadata.get("format", "nir")})
        artefact = plan.save(out / ARTEFACT_NAME)
        report["lava"] = {
            "artefact": str(artefact),
            "populations": {n: {"shape": list(p.shape), "depth": p.depth} for n, p in plan.populations.items()},
            "links": [{"name": k.name, "kind": k.kind, "src": k.src, "dst": k.dst, "delay": k.delay,
                       "weight_exp": k.weight_exp} for k in plan.links],
        }
        if lava_check:
            report["lava"]["lava_check"] = run_lava_check(plan, x_chk[:, :lava_check])
        report["lava"]["wall_s"] = time.perf_counter() - t0
    if "netx" in targets:
        report["netx"] = write_netx_target(q, out)
        report["warnings"] = report["warnings"] + report["netx"].pop("warnings")
    write_json(out / "export_report.json", report)
    return report
