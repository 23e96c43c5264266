"""``htakl-deploy``: the command-line entry point. It only parses and dispatches.

Exit codes: 0 success; 2 a user mistake (bad flag, file, data or checkpoint — one line on stderr,
no traceback); 3 training diverged (NaN/inf loss; last good checkpoint kept); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from htakl_deploy import __version__
from htakl_deploy.errors import TrainingDiverged, UserError

PROG = "htakl-deploy"


def build_parser() -> argparse.ArgumentParser:
    from htakl_deploy import cmd_distill, cmd_energy, cmd_export, cmd_map, cmd_report, cmd_run, cmd_simulate

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Distil spiking neural networks with HTA-KL and deploy them to Loihi-style hardware.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cmd_distill.register(sub)
    cmd_export.register(sub)
    cmd_simulate.register(sub)
    cmd_energy.register(sub)
    cmd_map.register(sub)
    cmd_report.register(sub)
    cmd_run.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"{PROG}: training stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue a run with `{PROG} distill --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
