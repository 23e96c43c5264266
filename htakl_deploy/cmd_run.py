"""``htakl-deploy run``: teacher → HTA-KL student → export → Lava + emulator → energy → report."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """\
examples:
  htakl-deploy run                                   # the embedded digits data, a few minutes on 2 cores
  htakl-deploy run --run-name demo --lava-samples 100
  htakl-deploy run --data fashion-mnist --epochs 20 --lr 0.05 --lava-samples 200
  htakl-deploy run --resume runs/demo                # finish an interrupted run

Every distill flag works here (see `htakl-deploy distill --help`). The run directory ends up with
teacher/, student/, export/, simulate/<backend>/, energy/<backend>.json, map/loihi2.json and report.{md,html,json}.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from htakl_deploy.cmd_distill import _add_config_flags

    p = sub.add_parser(
        "run", help="the whole pipeline: distil, export, simulate in Lava, count energy, report",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run, then run the later stages")
    p.add_argument("--lava-samples", type=int, metavar="N",
                   help="test images run through Lava (default: all the run is evaluated on; the "
                        "emulator and the float student always run all)")
    p.add_argument("--no-lava", dest="lava", action="store_false",
                   help="skip Lava (export check and simulation): large nets need one OS process per "
                        "Lava process; the emulator is bit-exact with Lava's fixed_pt models")
    p.add_argument("--preset", default="paper-45nm", help="energy preset for the report (default paper-45nm)")
    p.add_argument("--map-target", default="loihi2", metavar="TARGET",
                   help="hardware target of the mapping stage (`htakl-deploy map`): loihi2 (default), loihi1, "
                        "a target .toml file, or none to skip it")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.cmd_distill import config_from_args, resumed_config
    from htakl_deploy.errors import UserError
    from htakl_deploy.pipeline import run_pipeline

    if args.lava_samples is not None and args.lava_samples < 1:
        raise UserError(f"--lava-samples: got {args.lava_samples}, expected an integer >= 1")
    cfg, teacher_only = config_from_args(args), False
    if cfg is None:
        cfg, teacher_only = resumed_config(args)
    result = run_pipeline(cfg, resume_dir=args.resume, teacher_only=teacher_only, lava_samples=args.lava_samples,
                          lava=args.lava, preset=args.preset,
                          map_target=None if args.map_target == "none" else args.map_target)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
