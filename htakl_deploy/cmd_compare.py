"""``htakl-deploy compare RUN...``: several run directories side by side (table + HTML with plots)."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """\
examples:
  htakl-deploy compare runs/kd runs/hta-kl runs/ckdsnn                 # table + compare.html
  htakl-deploy compare runs/* --html out/methods.html
  htakl-deploy compare runs/kd runs/hta-kl --json                       # the rows as JSON

Per run: float student accuracy (training), Loihi fixed-point accuracy (export), emulator and Lava
accuracy with their sample counts, firing rate, ACs and energy per sample (µJ) on the run's primary
backend, training time, and how many sanity warnings its report has. The HTML page adds accuracy
vs energy and the firing rate of every LIF layer across runs.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="several runs side by side: accuracy, firing rate, ACs, energy, training time",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--html", default="compare.html", metavar="FILE", help="HTML page to write (default compare.html)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.atomic import write_text
    from htakl_deploy.energy.compare import compare_runs, format_table, render_html

    rows = compare_runs(args.runs)  # every run is read before anything is written
    write_text(args.html, render_html(rows))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(format_table(rows))
        print(f"\nwrote {args.html}")
    return 0
