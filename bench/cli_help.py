"""Benchmark: how long ``htakl-deploy COMMAND --help`` takes, for every subcommand (issue 30: ``run
--help`` ≤ 0.2 s; the help must not import torch).

Each command's ``--help`` runs in a fresh process (``python -m htakl_deploy COMMAND --help``, as the
console script does), the commands interleaved round by round, ``--repeats`` rounds; the median and
the minimum wall time per command, whether the process imported torch (``-X importtime``, once per
command), and the load before and after. ``htakl-deploy --help`` and ``python -c pass`` (the
interpreter alone) are measured the same way, for scale.

Run: ``python bench/cli_help.py [--repeats 9] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from htakl_deploy.atomic import write_json
from htakl_deploy.cli import COMMANDS

BASELINES = {"(interpreter)": ["-c", "pass"], "(top level)": ["-m", "htakl_deploy", "--help"]}


def argv_of(name: str) -> list[str]:
    return BASELINES.get(name) or ["-m", "htakl_deploy", name, "--help"]


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def imports_torch(argv: list[str]) -> bool:
    err = subprocess.run([sys.executable, "-X", "importtime", *argv], check=True, capture_output=True, text=True).stderr
    return any(line.rstrip().endswith("| torch") for line in err.splitlines())


def bench(repeats: int = 9) -> dict:
    names = [*BASELINES, *COMMANDS]
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for n in names:
            times[n].append(wall(argv_of(n)))
    rows = [{"command": n, "median_s": statistics.median(times[n]), "min_s": min(times[n]), "times_s": times[n],
             "imports_torch": imports_torch(argv_of(n))} for n in names]
    return {"repeats": repeats, "rows": rows, "python": sys.version.split()[0], "load_before": load_before,
            "load_after": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    r = bench(args.repeats)
    for row in r["rows"]:
        print(f"{row['command']:<16} median {row['median_s']:.3f} s  min {row['min_s']:.3f} s  "
              f"torch imported: {row['imports_torch']}")
    print(f"load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}, {r['repeats']} interleaved rounds")
    if args.json:
        write_json(args.json, r)


if __name__ == "__main__":
    main()
