"""``htakl-deploy compare RUN...``: several run directories side by side (table + HTML with plots)."""

from __future__ import annotations

import argparse

from htakl_deploy.cliout import add_json_flags

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
    add_json_flags(p, "the rows")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from htakl_deploy.atomic import write_text
    import sys

    from htakl_deploy.cliout import check_json_out, emit
    from htakl_deploy.energy.compare import compare_runs, compare_warnings, format_table, render_html

    check_json_out(args)
    rows = compare_runs(args.runs)  # every run is read before anything is written
    for warning in compare_warnings(rows):  # a run given twice, a file that could not be read
        print(f"htakl-deploy: warning: {warning}", file=sys.stderr)
    write_text(args.html, render_html(rows))
    emit(rows, args, [format_table(rows), f"\nwrote {args.html}"])
    return 0
