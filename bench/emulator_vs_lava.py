"""Benchmark: the same test images through Lava ``fixed_pt`` (Loihi2SimCfg) — the old and the new
Lava path — and the emulator.

All run in this process on the same samples of the same exported student: each Lava path once
(its wall time includes building and compiling the process graph — what a user waits for), the
emulator ``--repeats`` times (median). Prints samples/s of each, the ratios (new / old Lava path;
emulator / new Lava path) and whether every spike and the readout are identical to the emulator's.

- old Lava path: ``hw/lava_net.py`` as it was at commit ``OLD_LAVA_COMMIT`` (read with ``git
  show`` from this repository): one sample per Lava step, a ``Monitor`` per layer read back
  through ``Var.get`` (one value per message), Lava ``Conv`` for every small spike conv and
  ``Sparse`` summing column slices;
- new Lava path: ``hw.lava_net.run_lava`` (Lava in its torch-free worker process, recorders in
  shared memory, graded-mode ``Sparse``, K copies per step), with its phases (build, start, per
  step, read-back; ``worker_s``: the worker's whole life, interpreter start and file transfer
  included).

Peak memory: each backend again in a fresh subprocess (``--variant``) on the same samples (setup:
the artefact and the encoded samples), Lava once, the emulator twice. Lava's runtime forks a
child process for each of its processes and for its runtime service, so the whole process tree
is measured:

- ``parent``: the benchmark process's resident memory after setup and the kernel's peak
  (``VmHWM``, reset after setup; ``htakl_deploy.memory.peak_memory``);
- children, found by scanning ``/proc/*/stat`` for descendants every 50 ms while the backend
  runs: each child's peak private memory (``Private_Clean + Private_Dirty`` of
  ``/proc/PID/smaps_rollup``: the pages it does not share with the parent it was forked from),
  summed over the children. A forked child's ``VmRSS``/``VmHWM`` also counts every page it still
  shares copy-on-write with the parent, so their sum (``children_hwm_sum_mb``) counts those pages
  once per child; it is reported, with the largest child's peak RSS from the kernel
  (``getrusage(RUSAGE_CHILDREN).ru_maxrss``), but not used;
- ``peak_mb`` = parent ``VmHWM`` + Σ children's peak private memory; ``delta_mb`` = that − the
  parent's RSS after setup. The per-process peaks need not be simultaneous, so ``peak_mb`` is an
  upper bound; ``tree_pss_peak_mb``, the largest sampled sum of ``Pss`` over the parent and its
  children (each shared page split among the processes mapping it — shared libraries' pages also
  with unrelated processes), is the lower cross-check.

Run: ``python bench/emulator_vs_lava.py RUN_DIR [--samples 100] [--repeats 5] [--no-memory]
[--json out.json]``, where RUN_DIR holds ``export/student.lava.npz`` (``htakl-deploy run`` or
``htakl-deploy export --target lava``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np

from htakl_deploy.hw.emulator import emulate
from htakl_deploy.hw.lava_net import run_lava
from htakl_deploy.hw.simulate import load_samples, read_artefact, resolve_artefact, spike_agreement
from htakl_deploy.atomic import write_json
from htakl_deploy.memory import in_fresh_process, peak_memory

VARIANTS = ("lava-old", "lava", "emulator")
OLD_LAVA_COMMIT = "24092c6"  # main before issue 15 (Lava at paper scale, ×10 on the demo)


def old_run_lava():
    """``run_lava`` of ``hw/lava_net.py`` at ``OLD_LAVA_COMMIT``, or None without the git history."""
    repo = Path(__file__).resolve().parent.parent
    got = subprocess.run(["git", "-C", str(repo), "show", f"{OLD_LAVA_COMMIT}:hw/lava_net.py"],
                         capture_output=True, text=True, check=False)
    if got.returncode != 0:
        return None
    mod = types.ModuleType("lava_net_at_" + OLD_LAVA_COMMIT)
    sys.modules[mod.__name__] = mod  # its dataclass looks itself up there
    exec(compile(got.stdout, f"hw/lava_net.py@{OLD_LAVA_COMMIT}", "exec"), mod.__dict__)  # our own code
    return mod.run_lava
MEMORY_HOW = (
    "fresh subprocess per backend (Lava once, the emulator twice, same samples): peak = the "
    "process's VmHWM (reset after setup) + the sum over Lava's forked child processes of each "
    "one's peak private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup, sampled "
    "every 50 ms; pages shared copy-on-write with the parent are counted once, in the parent); "
    "the per-process peaks need not coincide, so their sum is an upper bound; added = peak − the "
    "process's VmRSS after setup; tree Pss peak = largest sampled sum of Pss over the process and "
    "its children (shared pages split among the processes mapping them, library pages included, "
    "so a lower figure)")


def _proc_mb(pid: int, name: str, keys: tuple[str, ...]) -> dict[str, float]:
    """Fields (kB → MB) of ``/proc/PID/<name>``; empty if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in keys:
                    out[key] = int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return {}
    return out


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (from the parent pid in ``/proc/*/stat``)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, p in parent.items() if p == pid]
        out += kids
        todo += kids
    return out


class ChildPoller:
    """Samples this process's children every ``interval`` s in a thread (see the module docstring)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.children, self.tree_pss_peak_mb = interval, {}, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _sample(self) -> None:
        me = os.getpid()
        pss = _proc_mb(me, "smaps_rollup", ("Pss",)).get("Pss", 0.0)
        for pid in descendants(me):
            s = _proc_mb(pid, "smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))
            hwm = _proc_mb(pid, "status", ("VmHWM",)).get("VmHWM", 0.0)
            if not s:
                continue
            c = self.children.setdefault(pid, {"private_peak_mb": 0.0, "hwm_mb": 0.0})
            c["private_peak_mb"] = max(c["private_peak_mb"], s.get("Private_Clean", 0.0) + s.get("Private_Dirty", 0.0))
            c["hwm_mb"] = max(c["hwm_mb"], hwm)
            pss += s.get("Pss", 0.0)
        self.tree_pss_peak_mb = max(self.tree_pss_peak_mb, pss)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(self.interval)
        except BaseException as e:  # noqa: BLE001 — re-raised in the measuring thread
            self._error = e

    def __enter__(self) -> "ChildPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("sampling the child processes failed") from self._error


def setup(artefact: str, samples: int, data_root: str | None = None):
    path = resolve_artefact(artefact)
    plan = read_artefact(path)
    x_tb, _ = load_samples(plan, samples, int(plan.metadata.get("timesteps", 4)), data_root)
    return path, plan, x_tb


def measure_memory(variant: str, artefact: str, samples: int) -> dict:
    """Peak memory of ``variant`` run alone in a fresh process (its whole process tree)."""
    return in_fresh_process(__file__, [str(artefact), "--variant", variant, "--samples", str(samples)])


def child(variant: str, artefact: str, samples: int) -> dict:
    _, plan, x_tb = setup(artefact, samples)
    n = x_tb.shape[1]

    old = old_run_lava() if variant == "lava-old" else None

    def run() -> None:
        if variant == "lava":
            run_lava(plan, x_tb, backend="fixed_pt", chunk_samples=n)
        elif variant == "lava-old":
            old(plan, x_tb, backend="fixed_pt", chunk_samples=n)
        else:
            for _ in range(2):
                emulate(plan, x_tb)

    with ChildPoller() as poll:
        parent = peak_memory(run)
    kids = poll.children.values()
    children_private = sum(c["private_peak_mb"] for c in kids)
    peak = parent["peak_mb"] + children_private
    r = {
        "variant": variant, "samples": n,
        "rss_before_mb": parent["rss_before_mb"], "peak_mb": peak, "delta_mb": peak - parent["rss_before_mb"],
        "parent": parent, "children": len(kids), "children_private_peak_mb": children_private,
        "children_hwm_sum_mb": sum(c["hwm_mb"] for c in kids),
        "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
        "tree_pss_peak_mb": poll.tree_pss_peak_mb, "how": MEMORY_HOW,
    }
    print(json.dumps(r))
    return r


def bench(artefact: str, samples: int = 100, repeats: int = 5, memory: bool = False) -> dict:
    path, plan, x_tb = setup(artefact, samples)
    n = x_tb.shape[1]
    load_before = os.getloadavg()
    old = old_run_lava()
    old_s = old_res = None
    if old is not None:
        t0 = time.perf_counter()
        old_res = old(plan, x_tb, backend="fixed_pt", chunk_samples=n)
        old_s = time.perf_counter() - t0
    timings: dict = {}
    t0 = time.perf_counter()
    lava = run_lava(plan, x_tb, backend="fixed_pt", chunk_samples=n, timings=timings)
    lava_s = time.perf_counter() - t0
    emulate(plan, x_tb)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        emu = emulate(plan, x_tb)
        times.append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    emu_s = statistics.median(times)
    r = {
        "artefact": str(path), "samples": n, "timesteps": int(x_tb.shape[0]),
        "lava_s": lava_s, "lava_samples_per_s": n / lava_s, "lava_phases": timings,
        "lava_old_commit": OLD_LAVA_COMMIT, "lava_old_s": old_s,
        "lava_old_samples_per_s": n / old_s if old_s else None,
        "ratio_lava_new_over_old": old_s / lava_s if old_s else None,
        "lava_old_spike_agreement": spike_agreement(old_res.spikes, emu.spikes)["all"] if old_res else None,
        "lava_old_readout_identical": bool(np.array_equal(old_res.readout_u, emu.readout_u)) if old_res else None,
        "emulator_s_median": emu_s, "emulator_samples_per_s": n / emu_s,
        "ratio_emulator_over_lava": lava_s / emu_s,
        "spike_agreement": spike_agreement(lava.spikes, emu.spikes)["all"],
        "readout_identical": bool(np.array_equal(lava.readout_u, emu.readout_u)),
        "repeats": repeats, "loadavg_before": load_before, "loadavg_after": load_after,
    }
    if memory:  # after the timing, one subprocess at a time
        r["memory"] = {v: measure_memory(v, str(path), n) for v in VARIANTS}
        r["memory_note"] = MEMORY_HOW
    return r


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artefact", help="run directory, its export/ folder or a student.lava.npz")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the per-backend memory subprocesses")
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # memory child
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.variant:
        return child(args.variant, args.artefact, args.samples)
    r = bench(args.artefact, args.samples, args.repeats, memory=not args.no_memory)
    mem = {v: r.get("memory", {}).get(v) for v in VARIANTS}
    show = {v: "" if m is None else f"   peak {m['peak_mb']:.0f} MB (+{m['delta_mb']:.1f})" for v, m in mem.items()}
    print(f"{r['samples']} samples, T={r['timesteps']}, load {r['loadavg_before'][0]:.2f}")
    if r["lava_old_s"]:
        print(f"  Lava, old path {r['lava_old_s']:8.2f} s   {r['lava_old_samples_per_s']:10.2f} samples/s"
              f"{show['lava-old']}   (hw/lava_net.py at {OLD_LAVA_COMMIT})")
    ph = r["lava_phases"]
    print(f"  Lava fixed_pt  {r['lava_s']:8.2f} s   {r['lava_samples_per_s']:10.2f} samples/s{show['lava']}"
          f"   (K={ph['copies']} per step: build {ph['build_s']:.2f} s, start {ph['start_s']:.2f} s, "
          f"{ph['steps']} steps × {1000 * ph['step_s']:.1f} ms, read-back {ph['readback_s']:.3f} s; "
          f"worker process {ph.get('worker_s', 0):.2f} s)")
    print(f"  emulator       {r['emulator_s_median']:8.4f} s   {r['emulator_samples_per_s']:10.1f} samples/s"
          f"{show['emulator']}")
    if mem["lava"]:
        print(f"  Lava's process tree: {mem['lava']['children']} child processes, "
              f"{mem['lava']['children_private_peak_mb']:.1f} MB private between them; "
              f"tree Pss peak {mem['lava']['tree_pss_peak_mb']:.0f} MB")
    if r["lava_old_s"]:
        print(f"  new / old Lava path: x{r['ratio_lava_new_over_old']:.1f}; old path's spikes identical: "
              f"{r['lava_old_spike_agreement'] == 1.0}; readout identical: {r['lava_old_readout_identical']}")
    print(f"  emulator / Lava throughput: x{r['ratio_emulator_over_lava']:.0f}; spikes identical: "
          f"{r['spike_agreement'] == 1.0}; readout identical: {r['readout_identical']}")
    if args.json:
        write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
