"""``htakl-deploy simulate``: run an exported student in Lava (Loihi2SimCfg) or the bit-exact emulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from htakl_deploy.cliout import add_json_flags, check_json_out, emit, pct

EXAMPLES = """\
examples:
  htakl-deploy simulate runs/demo                              # Lava fixed_pt on the whole test split
  htakl-deploy simulate runs/demo --backend emulator           # the same integer maths, vectorised
  htakl-deploy simulate runs/demo --backend lava-floating_pt --samples 50
  htakl-deploy simulate runs/demo/export/student.lava.npz --samples 100 --out sim/
  htakl-deploy simulate runs/demo --backend emulator --record counts --batch-size 128   # 10k images, flat memory
  htakl-deploy simulate model.nir --data digits --backend emulator   # a NIR graph from any framework
  htakl-deploy simulate cnn-export --input events.npy      # your own inputs: [T, B, ...] event frames, labels optional
  htakl-deploy simulate cnn-export --input nmnist/Test/ --samples 100   # N-MNIST .bin recordings (read with tonic)
  htakl-deploy simulate runs/demo --backend emulator --shards 2      # the samples split over 2 Ray workers

Class decision: argmax over classes of the mean over T of the readout's logits (the last layer
has no neuron; its current is read each step). Outputs: OUT/spikes.h5 (every layer's spikes,
[T, samples, ...]) and OUT/simulate.json (accuracy, wall time, agreement with the emulator and
with the float student).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from htakl_deploy.runconfig import SIM_BACKENDS as BACKENDS  # the keys of hw.simulate.BACKENDS, without torch

    p = sub.add_parser(
        "simulate", help="run the exported network in Lava or the bit-exact emulator, record spikes",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artefact", help="a run directory, its export/ folder, a student.lava.npz file, or a float "
                                     "NIR graph (MODEL.nir: quantised on the fly into MODEL-export/, as `export` does)")
    p.add_argument("--backend", default="lava-fixed_pt", metavar="BACKEND",
                   help=f"one of {', '.join(BACKENDS)} (default lava-fixed_pt; 'lava' means lava-fixed_pt)")
    p.add_argument("--samples", type=int, help="N test images, every class in proportion (default: the test images the run was evaluated on, all unless it was trained with --limit-test)")
    p.add_argument("--timesteps", type=int, help="time steps per image (default: the training T)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/simulate/BACKEND, MODEL-export/simulate/BACKEND "
                                 "for MODEL.nir; a what-if — other --samples/--timesteps/--input/--record than "
                                 "the recording already there — goes to simulate/what-if/, never over it)")
    p.add_argument("--data-root", help="data folder, if the run's data set needs one here")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="samples run and written per step (default 64, Lava 1000: it builds its network once per "
                        "batch; memory grows with it, not with --samples)")
    p.add_argument("--record", default="spikes", metavar="WHAT",
                   help="what spikes.h5 keeps: 'spikes' (every layer, default), 'counts' (spikes per neuron and "
                        "step summed over samples: enough for `energy`, not for its NeuroBench counts), or "
                        "LAYER[,LAYER...] (full spikes of those layers, counts of all)")
    p.add_argument("--device", metavar="DEV", help="emulator only: 'cpu' (default) or 'cuda' (bit-exact: no TF32, no cuDNN)")
    p.add_argument("--input", dest="input_file", metavar="FILE",
                   help="run these inputs instead of a data set: .npy/.npz/.h5 of [T, B, ...] sequences (event "
                        "frames: T comes from the data) or [B, ...] static inputs, values in [0, 1] or whole event "
                        "counts, labels optional ('labels' in .npz/.h5); or a folder of N-MNIST-format .bin "
                        "event recordings (1 ms frames, read with tonic)")
    p.add_argument("--data", help="MODEL.nir only: the data set to run (or --input)")
    p.add_argument("--reset", action="append", metavar="[LAYER=]MODE",
                   help="MODEL.nir only: reset after a spike, 'zero' (default) or 'subtract' (Loihi 2 programmable "
                        "neuron), for every neuron layer or one (repeat the flag); NIR cannot record it")
    p.add_argument("--dt", type=float, dest="dt_s", metavar="SECONDS",
                   help="MODEL.nir only: the time step its exporter assumed (default 1e-4)")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2, nothing written) when a layer never spikes (default: a warning)")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the agreement checks against the emulator and the float student")
    from htakl_deploy.cluster import add_ray_flags

    g = p.add_argument_group("shards (docs/SCALING.md)")
    g.add_argument("--shards", type=int, metavar="N",
                   help="split the samples into N ranges of whole batches, each a Ray task, and merge their spike "
                        "files into one spikes.h5 (identical to one process's; default: one process, no Ray)")
    add_ray_flags(g, "the shards")
    add_json_flags(p, "the simulation report")
    p.set_defaults(handler=run_command)


def _export_nir(args: argparse.Namespace) -> Path:
    """``export MODEL.nir --target nir lava`` into MODEL-export/ (no Lava check): the artefact."""
    from htakl_deploy.errors import UserError
    from htakl_deploy.export.nir_in import export_from_nir

    if args.data is None and args.input_file is None:
        raise UserError("simulate MODEL.nir needs --data NAME (the data set whose test images to run) or --input FILE")
    if args.data is not None and args.input_file is not None:
        raise UserError("--data and --input: give one (a data set's test images, or your own inputs)")
    report = export_from_nir(Path(args.artefact), ["nir", "lava"], timesteps=args.timesteps, data=args.data,
                             data_root=args.data_root, evaluate=False, lava_check=0, dt_s=args.dt_s,
                             reset=args.reset, input_file=args.input_file)
    for warning in report["warnings"]:
        print(f"htakl-deploy: warning: {warning}", file=sys.stderr)
    return Path(report["lava"]["artefact"])


def run_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from htakl_deploy.cluster import ray_address
    from htakl_deploy.hw.simulate import simulate

    check_json_out(args)
    if (args.ray_address or args.ray_cpus) and not (args.shards and args.shards > 1):
        from htakl_deploy.errors import UserError

        raise UserError(f"{'--ray-address' if args.ray_address else '--ray-cpus'} applies with --shards N (N >= 2)")
    backend = "lava-fixed_pt" if args.backend == "lava" else args.backend
    artefact = args.artefact
    from htakl_deploy.export.pipeline import is_nir_file

    if is_nir_file(artefact):  # a NIR graph or a lava-dl netx file
        artefact = _export_nir(args)
    elif args.data is not None or args.dt_s is not None or args.reset:
        from htakl_deploy.errors import UserError

        raise UserError("--data, --dt and --reset apply to a NIR file (MODEL.nir) only: an artefact knows its data "
                        "set and neurons")
    bar = tqdm(total=args.samples, unit="sample", desc=backend, disable=not sys.stderr.isatty())

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    def set_total(n: int) -> None:  # simulate() tells the sample count: the bar shows an ETA
        bar.total = n
        bar.refresh()

    progress.set_total = set_total

    try:
        report = simulate(artefact, backend=backend, samples=args.samples, timesteps=args.timesteps,
                          out_dir=args.out, data_root=args.data_root, progress=progress, compare=args.compare,
                          batch_size=args.batch_size, record=args.record, device=args.device,
                          input_file=args.input_file, strict=args.strict, shards=args.shards,
                          ray_address=ray_address(args.ray_address), ray_cpus=args.ray_cpus)
    finally:
        bar.close()
    for warning in report["warnings"]:
        print(f"htakl-deploy: warning: {warning}", file=sys.stderr)
    emit(report, args, summary_lines(report))
    return 0


def summary_lines(report: dict) -> list[str]:
    """The human summary of a ``simulate`` result (``--json`` prints it whole)."""
    n = report["samples"]
    acc = f"no labels ({n} samples)" if report["accuracy"] is None else f"accuracy {pct(report['accuracy'], n)}"
    lines = [f"{report['backend']}: {acc}, T={report['timesteps']}, "
             f"{report['wall_s']:.1f} s ({report['samples_per_s'] or 0:.1f} samples/s)",
             f"spikes: {report['out_dir']}/{report['spikes_file']} (record {report['record']}); "
             f"summary {report['out_dir']}/simulate.json"]
    agree = report.get("agreement")
    total = sum(report.get("spikes", {}).values())
    over = f" over {total} spikes" if total else " — 0 spikes: nothing was compared"
    if agree is not None:
        lines.append(f"vs {agree['vs']}: spikes agree {pct(agree['spike_agreement']['all'])}{over}, decisions "
                     f"{pct(agree['decision_agreement'])}, readout identical: {agree['readout_identical']}")
    fl = report.get("float_student")
    if fl is not None:
        acc = "" if fl["accuracy"] is None else f"accuracy {pct(fl['accuracy'], n)}, "
        lines.append(f"float student: {acc}decisions agree {pct(fl['decision_agreement'])}")
    return lines
