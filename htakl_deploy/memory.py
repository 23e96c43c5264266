"""Peak resident memory of a piece of code, for the benchmarks (Linux: the kernel's VmHWM)."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from typing import Callable


def _status_mb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(key)


def peak_memory(run: Callable[[], object]) -> dict:
    """Resident memory (MB) before ``run()`` and the peak while it ran: the kernel's high-water mark
    ``VmHWM`` is reset first (``/proc/self/clear_refs`` ← 5), so loading data and building models
    do not hide the peak; without that (not Linux), ``ru_maxrss`` over the whole process (which
    Linux carries across ``exec``: a subprocess may report its parent's peak)."""
    gc.collect()
    rss_before = _status_mb("VmRSS") if os.path.exists("/proc/self/status") else 0.0
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        how = "VmHWM reset after setup"
    except OSError:
        how = "ru_maxrss (peak not reset)"
    run()
    peak = _status_mb("VmHWM") if how.startswith("VmHWM") else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"rss_before_mb": rss_before, "peak_mb": peak,
            "delta_mb": peak - rss_before, "how": how}


def in_fresh_process(script: str, args: list[str], *, threads: int | None = None) -> dict:
    """Run ``python script *args`` in a new process and return the JSON object on the last line it
    prints: the benchmarks measure each variant's peak memory there, free of the others'
    allocations. ``threads`` sets the child's ``OMP_NUM_THREADS`` (default: inherited)."""
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])
