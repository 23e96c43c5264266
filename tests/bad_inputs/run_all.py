"""Run every bad-input case and print the counts docs/SAFETY.md quotes (and each non-clean case).

    OMP_NUM_THREADS=1 .venv/bin/python tests/bad_inputs/run_all.py [-v] [SUBSTRING]
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bad_inputs.cases import CASES  # noqa: E402
from bad_inputs.harness import build_fixture_run, run_case  # noqa: E402


def main() -> int:
    verbose = "-v" in sys.argv
    pick = [a for a in sys.argv[1:] if a != "-v"]
    cases = [c for c in CASES if not pick or any(p in c.id for p in pick)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fixture = build_fixture_run(Path(tmp) / "fixture")
        counts, slow = collections.Counter(), []
        for i, case in enumerate(cases):
            t = time.perf_counter()
            out = run_case(case, Path(tmp) / f"c{i}", fixture)
            dt = time.perf_counter() - t
            slow.append((dt, case.id))
            kind = out.kind(case.expect)
            counts[kind] += 1
            if kind != "clean" or verbose:
                detail = (out.traceback or "").strip().splitlines()[-1:] if out.traceback else out.lines[:3]
                print(f"{kind:13s} {case.id}: rc={out.rc} {detail} changed={out.changed[:3]}", flush=True)
    kinds = ("clean", "unclear", "dirty", "traceback", "wrong-success", "orphans", "code")
    payloads = sum(any(w in c.id for w in ("payload", "python-tag", "object-array", "pickle-global")) for c in cases)
    print(f"cases {len(cases)} ({payloads} plant code in a file): " + ", ".join(f"{k} {counts[k]}" for k in kinds))
    print(f"wall {time.perf_counter() - t0:.1f} s; slowest: "
          + ", ".join(f"{n} {d:.1f}s" for d, n in sorted(slow, reverse=True)[:5]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
