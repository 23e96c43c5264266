"""``htakl-deploy map``: does the exported network fit on Loihi? Cores, memory, routing, cost."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """\
examples:
  htakl-deploy map runs/demo                               # Loihi 2; writes runs/demo/map/loihi2.json
  htakl-deploy map runs/demo --target loihi1 --json-out loihi1.json
  htakl-deploy map runs/demo/export/student.lava.npz --spikes sim/spikes.h5
  htakl-deploy map runs/demo --set input_axons_per_core=8192 --set e_synop_pj=10   # a what-if (map/what-if/)
  htakl-deploy map runs/demo --target my_chip.toml         # a target file with the same keys
  htakl-deploy map network.net --no-spikes                 # a lava-dl netx file (e.g. Intel's PilotNet LIF)
  htakl-deploy map runs/demo --strategy packed              # fewest cores, small layers sharing cores

Every layer is cut into tiles (output channels × rows × columns) that fit one neurocore's limits
(neurons, synapse memory, input and output axons): by default as Lava's Loihi 2 compiler does
(calibrated on Intel's published compiles; docs/MAPPING.md), or with the fewest cores our model
allows (--strategy fewest | packed; every strategy's total is printed). With a spike recording
(default: the run's own, from `simulate`) the spikes are routed between those cores to estimate
the latency per time step and the energy per inference, with the range the calibration leaves.
Targets: hw/targets/*.toml (every number with its source; unpublished ones marked and settable
with --set).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "map", help="partition the exported network onto Loihi neurocores; latency and energy estimate",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artefact", metavar="RUN_DIR|ARTEFACT",
                   help="a run directory, its export/ folder, a student.lava.npz file, or a graph file (MODEL.nir, "
                        "or a lava-dl netx file MODEL.net)")
    p.add_argument("--target", default="loihi2", help="loihi2 (default), loihi1, or a target .toml file")
    p.add_argument("--strategy", choices=("compiler", "fewest", "packed"), default="compiler",
                   help="how layers are cut into cores: compiler (default: as Lava's Loihi 2 compiler), fewest "
                        "(fewest cores per layer), packed (fewest, small layers sharing cores)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one number of the target (repeatable)")
    spikes = p.add_mutually_exclusive_group()
    spikes.add_argument("--spikes", metavar="SPIKES.h5", help="spike recording to route (default: the run's own)")
    spikes.add_argument("--no-spikes", action="store_true", help="the static mapping only")
    p.add_argument("--json", action="store_true", help="print the mapping as JSON on stdout instead of a summary")
    p.add_argument("--json-out", metavar="FILE", help="write the mapping as JSON here (default for a run directory: "
                                                      "RUN_DIR/map/TARGET.json; a what-if with --set, another "
                                                      "--strategy or other spikes: RUN_DIR/map/what-if/)")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from htakl_deploy.atomic import write_json
    from htakl_deploy.cliout import check_json_out
    from htakl_deploy.hw.mapping import map_artefact, map_path
    from htakl_deploy.hw.mapping_report import format_text

    check_json_out(args)
    spikes = None if args.no_spikes else (args.spikes or "auto")
    data = map_artefact(args.artefact, target=args.target, overrides=tuple(args.overrides), spikes=spikes,
                        strategy=args.strategy)
    out = args.json_out
    if out is None and (Path(args.artefact) / "config.json").is_file():
        out = map_path(args.artefact, data["target"]["name"], strategy=args.strategy,
                       overrides=tuple(args.overrides), spikes=spikes)
    if out:
        write_json(out, data)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(format_text(data))
    if out:
        print(f"wrote {out}")
    return 0
