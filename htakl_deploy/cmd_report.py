"""``htakl-deploy report``: RUN_DIR/report.{md,html,json} from what a run directory holds."""

from __future__ import annotations

import argparse
import sys

from htakl_deploy.cliout import add_json_flags

EXAMPLES = """\
examples:
  htakl-deploy report runs/demo          # writes runs/demo/report.md, report.html, report.json

The report shows accuracy per backend (training, export, simulate/<backend>/simulate.json),
firing rates and spikes per timestep, energy per layer and per sample measured vs the paper's
analytic estimate vs the ANN teacher (energy/<backend>.json), and provenance. Parts a run
directory does not hold yet are named in the report; report.html is one self-contained file.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write report.md / report.html / report.json for a run directory",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds config.json)")
    add_json_flags(p, "report.json's content")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.cliout import check_json_out, emit
    from htakl_deploy.energy.document import write_report

    check_json_out(args)
    report = write_report(args.run_dir)
    for note in report["missing"]:
        print(f"note: {note}", file=sys.stderr)
    for problem in report["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    for w in report["warnings"]:
        print(f"warning: {w['code'].replace('_', ' ')}: {w['message']}", file=sys.stderr)
    root = report["run_dir"]
    emit(report, args, [f"wrote {root}/report.md, {root}/report.html, {root}/report.json"])
    return 0
