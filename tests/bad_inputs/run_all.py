"""Run every bad-input case and print the counts docs/SAFETY.md quotes (and each non-clean case).

    OMP_NUM_THREADS=1 .venv/bin/python tests/bad_inputs/run_all.py [-v] [--docs docs/SAFETY.md] [SUBSTRING]

``--docs FILE`` rewrites the block between ``<!-- bad-inputs:begin -->`` and
``<!-- bad-inputs:end -->`` in FILE with the counts measured by this run (and the load).
"""

from __future__ import annotations

import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bad_inputs.cases import CASES  # noqa: E402
from bad_inputs.harness import build_fixture_run, run_case, run_isolated  # noqa: E402


def main() -> int:
    verbose = "-v" in sys.argv
    args = [a for a in sys.argv[1:] if a != "-v"]
    docs = None
    if "--docs" in args:
        docs = Path(args.pop(args.index("--docs") + 1))
        args.remove("--docs")
    pick = args
    load_before = os.getloadavg()[0]
    cases = [c for c in CASES if not pick or any(p in c.id for p in pick)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fixture = build_fixture_run(Path(tmp) / "fixture")
        counts, slow = collections.Counter(), []
        t = time.perf_counter()
        isolated = [c for c in cases if c.isolate]
        try:
            outcomes = run_isolated(isolated, Path(tmp) / "isolated", fixture) if isolated else {}
        except RuntimeError as e:  # no mount namespace here: those cases are counted as not run
            print(f"not run ({len(isolated)} full-disk cases): {e}")
            cases, outcomes = [c for c in cases if not c.isolate], {}
        slow.append((time.perf_counter() - t, f"{len(isolated)} full-disk cases together"))
        for i, case in enumerate(cases):
            t = time.perf_counter()
            out = outcomes[case.id] if case.isolate else run_case(case, Path(tmp) / f"c{i}", fixture)
            if not case.isolate:
                slow.append((time.perf_counter() - t, case.id))
            kind = out.kind(case.expect)
            counts[kind] += 1
            if kind != "clean" or verbose:
                detail = (out.traceback or "").strip().splitlines()[-1:] if out.traceback else out.lines[:3]
                print(f"{kind:13s} {case.id}: rc={out.rc} {detail} changed={out.changed[:3]}", flush=True)
    kinds = ("clean", "unclear", "dirty", "leftovers", "traceback", "crash", "wrong-success", "orphans", "code")
    payloads = sum(any(w in c.id for w in ("payload", "python-tag", "object-array", "pickle-global")) for c in cases)
    print(f"cases {len(cases)} ({payloads} plant code in a file): " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    wall = time.perf_counter() - t0
    print(f"wall {wall:.1f} s; slowest: "
          + ", ".join(f"{n} {d:.1f}s" for d, n in sorted(slow, reverse=True)[:5]))
    if docs is not None:
        write_docs(docs, cases, counts, kinds, payloads, wall, (load_before, os.getloadavg()[0]))
    return 0


GROUPS = {"full disk (a real tmpfs)": "full-disk-", "sizes that lie": ("lying", "huge-file", "zip-bomb"),
          "numeric overrides": "map-set-"}
COMMANDS = ("distill", "train-teacher", "export", "simulate", "energy", "map", "report", "run", "compare")


def write_docs(path: Path, cases, counts, kinds, payloads: int, wall: float, load: tuple[float, float]) -> None:
    by_cmd = collections.Counter(c.argv[0] if c.argv and c.argv[0] in COMMANDS else "no or unknown command"
                                 for c in cases)
    groups = {name: sum(any(k in c.id for k in ((keys,) if isinstance(keys, str) else keys)) for c in cases)
              for name, keys in GROUPS.items()}
    block = [f"**{len(cases)} cases** across every subcommand ("
             + ", ".join(f"{cmd} {n}" for cmd, n in by_cmd.most_common()) + "), among them "
             + ", ".join(f"{n} {name}" for name, n in groups.items()) + f" and {payloads} that plant code in a file.",
             "",
             "Measured by `python tests/bad_inputs/run_all.py --docs docs/SAFETY.md` on "
             f"{time.strftime('%Y-%m-%d')} ({wall:.0f} s, load {load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} cores): "
             + ", ".join(f"**{counts[k]} {k}**" if k == "clean" else f"{counts[k]} {k}" for k in kinds) + "."]
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(r"(<!-- bad-inputs:begin -->\n).*?(\n<!-- bad-inputs:end -->)",
                     lambda m: m.group(1) + "\n".join(block) + m.group(2), text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no <!-- bad-inputs:begin --> ... <!-- bad-inputs:end --> block")
    path.write_text(new, encoding="utf-8")
    print(f"wrote the counts into {path}")


if __name__ == "__main__":
    raise SystemExit(main())
