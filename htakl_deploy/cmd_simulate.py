"""``htakl-deploy simulate``: run an exported student in Lava (Loihi2SimCfg) or the bit-exact emulator."""

from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """\
examples:
  htakl-deploy simulate runs/demo                              # Lava fixed_pt on the whole test split
  htakl-deploy simulate runs/demo --backend emulator           # the same integer maths, vectorised
  htakl-deploy simulate runs/demo --backend lava-floating_pt --samples 50
  htakl-deploy simulate runs/demo/export/student.lava.npz --samples 100 --out sim/
  htakl-deploy simulate runs/demo --backend emulator --record counts --batch-size 128   # 10k images, flat memory

Class decision: argmax over classes of the mean over T of the readout's logits (the last layer
has no neuron; its current is read each step). Outputs: OUT/spikes.h5 (every layer's spikes,
[T, samples, ...]) and OUT/simulate.json (accuracy, wall time, agreement with the emulator and
with the float student).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from htakl_deploy.hw.simulate import BACKENDS

    p = sub.add_parser(
        "simulate", help="run the exported network in Lava or the bit-exact emulator, record spikes",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artefact", help="a run directory, its export/ folder, or a student.lava.npz file")
    p.add_argument("--backend", default="lava-fixed_pt", metavar="BACKEND",
                   help=f"one of {', '.join(BACKENDS)} (default lava-fixed_pt; 'lava' means lava-fixed_pt)")
    p.add_argument("--samples", type=int, help="the first N test images (default: the test images the run was evaluated on, all unless it was trained with --limit-test)")
    p.add_argument("--timesteps", type=int, help="time steps per image (default: the training T)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/simulate/BACKEND)")
    p.add_argument("--data-root", help="data folder, if the run's data set needs one here")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="samples run and written per step (default 64; memory grows with it, not with --samples)")
    p.add_argument("--record", default="spikes", metavar="WHAT",
                   help="what spikes.h5 keeps: 'spikes' (every layer, default), 'counts' (spikes per neuron and "
                        "step summed over samples: enough for `energy`, not for its NeuroBench counts), or "
                        "LAYER[,LAYER...] (full spikes of those layers, counts of all)")
    p.add_argument("--device", metavar="DEV", help="emulator only: 'cpu' (default) or 'cuda' (bit-exact: no TF32, no cuDNN)")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip the agreement checks against the emulator and the float student")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from htakl_deploy.hw.simulate import simulate

    backend = "lava-fixed_pt" if args.backend == "lava" else args.backend
    bar = tqdm(total=args.samples, unit="sample", desc=backend, disable=not sys.stderr.isatty())

    def progress(done: int) -> None:
        bar.update(done - bar.n)

    try:
        report = simulate(args.artefact, backend=backend, samples=args.samples, timesteps=args.timesteps,
                          out_dir=args.out, data_root=args.data_root, progress=progress, compare=args.compare,
                          batch_size=args.batch_size, record=args.record, device=args.device)
    finally:
        bar.close()
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
