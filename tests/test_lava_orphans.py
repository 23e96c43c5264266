"""No Lava process outlives the tool (issue 16, item 2).

Lava's runtime forks one child per process of the network (plus its runtime service, a
shared-memory manager and multiprocessing's resource tracker). ``lava_compat.ensure_lava()``
makes every child forked after it ask the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so killing the tool in any way ends its whole Lava tree.

Each test starts a real ``htakl-deploy simulate --backend lava-fixed_pt`` in its own session,
waits until Lava is stepping (its progress line), records every descendant process, kills the
command with SIGTERM, SIGKILL or SIGHUP, and checks after 5 s that none of those processes is
alive (a process is identified by pid and start time, so a reused pid does not count).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import tiny_digits_run

SIGNALS = (signal.SIGTERM, signal.SIGKILL, signal.SIGHUP)
CLI = [sys.executable, "-m", "htakl_deploy"]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live, non-zombie process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid → start time."""
    info = {int(d): _stat(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    children: dict[int, list[int]] = {}
    for pid, st in info.items():
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out[pid] = info[pid][1]
            todo.append(pid)
    return out


def alive(procs: dict[int, int]) -> list[int]:
    return [pid for pid, start in procs.items() if (st := _stat(pid)) is not None and st[1] == start]


def wait_for_lava(proc: subprocess.Popen, timeout_s: float = 120.0) -> dict[int, int]:
    """Wait until Lava's process tree under ``proc`` is up (>= 5 descendants, unchanged for 1 s)."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"simulate ended early: {proc.communicate()}"
        now = descendants(proc.pid)
        if now.keys() != (last or {}).keys():
            last, since = now, time.monotonic()
        elif len(now) >= 5 and time.monotonic() - since >= 1.0:
            return now
        time.sleep(0.1)
    raise AssertionError(f"Lava did not start within {timeout_s} s")


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> Path:
    from htakl_deploy.export.pipeline import run_export

    run_dir = tiny_digits_run(tmp_path_factory.mktemp("runs"), limit_train=64, limit_test=16, epochs=1,
                              teacher_epochs=1)
    run_export(run_dir, ["lava"], lava_check=0, evaluate=False)
    return run_dir


def test_killing_simulate_leaves_no_lava_process(artefact, tmp_path):
    """SIGTERM, SIGKILL and SIGHUP to a running ``simulate --backend lava-fixed_pt`` (the three
    started at once, each its own command and TMPDIR, each killed once its Lava tree is up): 0 of its processes alive 5 s later. Nothing is left in
    TMPDIR after SIGTERM and SIGHUP (the CLI ends like Ctrl-C and removes the worker's private
    TMPDIR, with Lava's ``pymp-*`` listener folder in it; before, that folder stayed after every
    kill); after SIGKILL only that private folder is left, and the next Lava run removes it."""
    # short TMPDIRs: a socket's path (TMPDIR/htakl-PID-*/pymp-*/listener-*) holds at most 107 bytes
    tmps = {sig: Path(tempfile.mkdtemp(prefix=f"o{sig.value}-", dir="/tmp")) for sig in SIGNALS}
    # 16 images of 1000 time steps each: Lava steps for ~10 s or more (360 images at T=4 take a few)
    procs = {sig: subprocess.Popen([*CLI, "simulate", str(artefact), "--backend", "lava-fixed_pt", "--samples", "16",
                                    "--timesteps", "1000", "--out", str(tmp_path / sig.name)],
                                   env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmps[sig])},
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for sig in SIGNALS}
    try:
        trees = {}
        for sig, p in procs.items():  # each killed as soon as its own tree is up: waiting for all three
            trees[sig] = wait_for_lava(p)  # first let one run end before its kill (once, at load 12)
            assert any(tmps[sig].rglob("pymp-*")), "Lava made no pymp-* folder: the leftover check proves nothing"
            os.kill(p.pid, sig)
        for p in procs.values():
            p.wait(timeout=30)  # reap the command itself (its children are not ours to reap)
        time.sleep(5.0)
        survivors = {sig.name: alive(tree) for sig, tree in trees.items()}
        assert all(len(tree) >= 5 for tree in trees.values())
        assert survivors == {sig.name: [] for sig in SIGNALS}
        left = {sig.name: sorted(str(p.relative_to(tmps[sig])) for p in tmps[sig].rglob("*")) for sig in SIGNALS}
        assert left["SIGTERM"] == [] and left["SIGHUP"] == [], left
        assert [p.name.split("-")[1] for p in tmps[signal.SIGKILL].iterdir()] == [str(procs[signal.SIGKILL].pid)], left
        assert not [p for p in tmps[signal.SIGKILL].rglob("*") if p.is_file()], left  # data files are unnamed
        for sig in (signal.SIGTERM, signal.SIGHUP):
            err = procs[sig].stderr.read().decode()
            assert procs[sig].returncode == 128 + sig and f"stopped by {sig.name}" in err, err
        again = subprocess.run([*CLI, "simulate", str(artefact), "--backend", "lava-fixed_pt", "--samples", "1",
                                "--out", str(tmp_path / "again")], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmps[signal.SIGKILL])})
        assert again.returncode == 0, again.stderr
        assert list(tmps[signal.SIGKILL].iterdir()) == [], "the killed run's folder was not swept"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)


def _lava_children(tree: dict[int, int]) -> list[int]:
    """The Lava processes in ``tree``: forked by the Lava worker, so they share its command line."""
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""
    workers = [pid for pid in tree if b"htakl_deploy.hw.lava_worker" in cmdline(pid)
               and (st := _stat(pid)) is not None and st[0] not in tree]  # the worker itself
    assert len(workers) == 1, workers
    return [pid for pid in tree if (st := _stat(pid)) is not None and st[0] == workers[0]
            and cmdline(pid) == cmdline(workers[0])]


def test_a_killed_lava_process_ends_simulate_with_one_error_line(artefact, tmp_path):
    """One of Lava's processes killed (SIGKILL, as the OOM killer does) while simulate steps: Lava's
    runtime would wait for it forever; the worker's watchdog ends the run — exit 2, one
    ``htakl-deploy: error:`` line naming the process and the signal, no traceback, no spikes
    file, and no process of the tree left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    p = subprocess.Popen([*CLI, "simulate", str(artefact), "--backend", "lava-fixed_pt", "--samples", "16",
                          "--timesteps", "1000", "--out", str(out)], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        tree = wait_for_lava(p)
        victims = _lava_children(tree)
        assert len(victims) >= 3
        os.kill(victims[len(victims) // 2], signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, err
        lines = [line for line in err.splitlines() if line.startswith("htakl-deploy")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("htakl-deploy: error: Lava process") and "killed by SIGKILL" in lines[0], err
        assert not (out / "spikes.h5").exists()
        time.sleep(5.0)
        assert alive(tree) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

