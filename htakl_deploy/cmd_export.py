"""``htakl-deploy export``: fold BN, quantise to Loihi fixed point, write NIR / ONNX / a Lava artefact / netx.

A NIR file (MODEL.nir, from snnTorch, SpikingJelly, Norse or by hand) is quantised the same way."""

from __future__ import annotations

import argparse
import sys

from htakl_deploy.cliout import add_json_flags, check_json_out, emit, pct

EXAMPLES = """\
examples:
  htakl-deploy export runs/demo --target nir            # float + quantised NIR, integer-vs-float accuracy
  htakl-deploy export runs/demo --target nir onnx --out exported/
  htakl-deploy export runs/demo/student/best.pt --target nir --samples 200
  htakl-deploy export runs/demo --target lava           # student.lava.npz for `htakl-deploy simulate`
  htakl-deploy export runs/demo --target netx           # student.netx.h5 for lava-dl's netx
  htakl-deploy export model.nir --target nir lava netx --data digits   # a NIR graph from any framework
  htakl-deploy export model.nir --target lava --dt 1e-3                # its exporter assumed dt = 1 ms
  htakl-deploy export cnn_sinabs.nir --target lava --dt 1 --input events.npy   # Sinabs: one unit per step
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="fold BN, quantise to Loihi fixed point, write NIR / ONNX / Lava",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a run directory (uses student/last.pt), a student checkpoint, or a "
                                      "float NIR graph (MODEL.nir) written by any framework")
    p.add_argument("--target", nargs="+", default=["nir"], metavar="TARGET",
                   help="nir (default), onnx, lava (the Lava artefact, built from the NIR files) and/or "
                        "netx (lava-dl netx HDF5)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/export; for MODEL.nir: MODEL-export/ next to it)")
    p.add_argument("--data", help="MODEL.nir only: data set to compare the float graph and the integer network "
                                  "on, and to run the Lava check with (default: none; random inputs for the check)")
    p.add_argument("--input", dest="input_file", metavar="FILE",
                   help="MODEL.nir only: your own inputs to compare the float graph and the integer network on and "
                        "to run the Lava check with (instead of --data): .npy/.npz/.h5 of [T, B, ...] sequences "
                        "(event frames; T from the data) or [B, ...] static inputs, labels optional; or a folder of "
                        "N-MNIST-format .bin event recordings")
    p.add_argument("--reset", action="append", metavar="[LAYER=]MODE",
                   help="MODEL.nir only: reset after a spike, 'zero' (default) or 'subtract' (Loihi 2 programmable "
                        "neuron), for every neuron layer or one (repeat the flag); NIR cannot record it")
    p.add_argument("--dt", type=float, dest="dt_s", metavar="SECONDS",
                   help="MODEL.nir only: the time step its exporter assumed (default 1e-4: SpikingJelly, "
                        "snnTorch; NIR files do not record it)")
    p.add_argument("--calibration", metavar="SRC",
                   help="MODEL.nir only: inputs to check the quantised graph with — a data set name (its training "
                        "split) or inputs as --input reads them (first 256 samples): per-layer 24-bit "
                        "headroom of u and v, and float vs integer decisions (the scales come from the weights)")
    p.add_argument("--timesteps", type=int, help="T for evaluation and the unrolled ONNX (default: the run's)")
    p.add_argument("--samples", type=int, help="evaluate on N test images, every class in proportion (default: the test images the run was evaluated on)")
    p.add_argument("--data-root", help="data folder, if the run's data set needs one here")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip the float vs integer accuracy comparison")
    p.add_argument("--strict", action="store_true",
                   help="MODEL.nir only: fail (exit 2, nothing written) when the deployed network or a layer never "
                        "spikes on the check inputs (default: a warning)")
    p.add_argument("--lava-check", type=int, default=4, metavar="N",
                   help="lava target: run N test images through Lava and the emulator, which must agree "
                        "spike for spike (0 skips; default 4)")
    add_json_flags(p, "the export report")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    if Path(args.checkpoint).suffix.lower() == ".nir" and Path(args.checkpoint).is_file():
        from htakl_deploy.readers import check_h5

        check_h5(args.checkpoint)  # a file that lies about its sizes goes before torch is even imported
    from htakl_deploy.export.pipeline import run_export

    check_json_out(args)
    report = run_export(args.checkpoint, args.target, args.out, timesteps=args.timesteps,
                        samples=args.samples, data_root=args.data_root, evaluate=args.evaluate,
                        lava_check=args.lava_check, data=args.data, dt_s=args.dt_s, calibration=args.calibration,
                        input_file=args.input_file, reset=args.reset, strict=args.strict)
    for warning in report["warnings"]:
        print(f"htakl-deploy: warning: {warning}", file=sys.stderr)
    emit(report, args, summary_lines(report))
    return 0


def summary_lines(report: dict) -> list[str]:
    """The human summary of an ``export`` result (``--json`` prints it whole)."""
    lines = [f"exported {report.get('checkpoint') or report.get('source_nir')}"]
    nir = report.get("nir")
    if nir is not None:
        lines.append(f"nir: {nir['quant_nir']} (float graph {nir['float_nir']}; {nir['clipped_weights']} weights clipped)")
        acc = nir.get("accuracy")
        if acc is not None:
            acc_s = ("no labels" if acc["float_acc"] is None else
                     f"accuracy float {pct(acc['float_acc'])}, Loihi fixed point {pct(acc['int_acc'])}")
            lines.append(f"  {acc_s} (of {acc['samples']} samples, T={acc['timesteps']}); decisions agree on "
                         f"{pct(acc['decision_agreement'])}")
    onnx = report.get("onnx")
    if onnx is not None:
        lines.append(f"onnx: {onnx['student']} (max |onnxruntime - torch| {onnx['student_max_abs_err']:.2g})")
        if "teacher" in onnx:
            lines.append(f"  teacher {onnx['teacher']} (max |onnxruntime - torch| {onnx['teacher_max_abs_err']:.2g})")
    lava = report.get("lava")
    if lava is not None:
        lines.append(f"lava: {lava['artefact']} ({len(lava['populations'])} populations, {len(lava['links'])} links)")
        check = lava.get("lava_check")
        if check is not None:
            n = check.get("spikes")
            what = "" if n is None else f" ({n} spikes)" if n else " — 0 spikes: nothing was compared"
            lines.append(f"  Lava fixed_pt = emulator spike for spike on {check['samples']} samples{what}")
    netx = report.get("netx")
    if netx is not None:
        inexact = len(netx.get("inexact_layers", []))
        lines.append(f"netx: {netx['netx']} ({len(netx.get('layers', []))} layers"
                     + (f"; {inexact} not bit-exact in netx: see the warnings)" if inexact else ")"))
    return lines
