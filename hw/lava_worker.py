"""Lava in a process of its own that never imports torch: ``python -m htakl_deploy.hw.lava_worker JOB``.

Why: Lava's runtime forks one OS process per Lava process of the network (ResNet-20: ~70), and a
forked child starts as a copy of its parent. Run inside the CLI, every child inherited a process
holding torch, the data and the models (~3.9 GB for ResNet-20's ``run``); the first child the
kernel's OOM killer picked was a Lava process, and Lava's runtime then waited for it forever.
Here the parent (``run_in_worker``, called by ``hw.lava_net.run_lava``) writes the plan
(``DeploymentPlan.save``) and the first population's currents into unnamed files and starts this module with ``subprocess`` (a fresh interpreter, not a fork):
it imports numpy, scipy, lava and the torch-free ``hw.plan`` / ``hw.lava_net`` only, builds and
runs the network (``lava_net.run_network``: Lava's own ``fixed_pt`` / ``floating_pt`` process
models compute), and writes each population's recording for the parent to read.

Protocol: the settings as a JSON argument; the plan (``.npz``), the currents (``.npy``) and the
results (an ``.npz`` of ``rec<i>``, population ``i`` of the plan, and the timings) in files
without a name (unlinked at once, handed over as inherited file descriptors), so that nothing
is left on disk however the run ends (a folder of inputs per killed run was, 262 MB for the
orphan tests' long runs); stdout lines ``htakl-lava progress N`` (samples done) and
``htakl-lava done``. The worker's stderr is shown after a successful run and reduced to its
last line in the error otherwise.

Leftovers: Lava's multiprocessing manager makes a ``pymp-*`` folder (a listener socket) in the
worker's temporary folder and removes it only at a normal exit. The worker therefore gets a
private ``TMPDIR`` (``htakl-<parent pid>-*`` in the parent's), removed by the parent on every exit
path it sees (success, error, Ctrl-C, SIGTERM: the CLI turns it into an exception); one left by a
parent that was SIGKILLed is removed by the next Lava run, once that pid is gone. A socket's path
holds at most 107 bytes: where ``TMPDIR`` is too long for the extra folder, the worker keeps the
parent's ``TMPDIR`` (as before; a ``pymp-*`` folder may then stay after a kill).

Failures end the run with one line, never a hang:

- a Lava child process that dies while the network runs (killed, out of memory) — Lava's
  runtime would wait for its message forever — is noticed by a watchdog thread that polls the
  worker's children (``os.waitpid(..., WNOHANG)``); the worker prints ``htakl-lava error ...``
  and exits at once (status ``CHILD_DIED``), and its remaining children die with it
  (``lava_compat.die_with_parent``);
- the worker itself dying (killed, out of memory) is seen by the parent as its exit status;
- the parent dying kills the worker (``PR_SET_PDEATHSIG``, set by the worker itself) and so the
  whole Lava tree.

The parent raises ``LavaWorkerError`` (a ``UserError``: the CLI prints one line and exits 2).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np

from htakl_deploy.atomic import disk_errors
from htakl_deploy.errors import UserError

TAG = "htakl-lava "
CHILD_DIED = 3
WATCH_INTERVAL_S = 0.5


class LavaWorkerError(UserError):
    """The Lava run failed in its worker (a Lava process died, or the worker itself). Not a user
    mistake, but reported the same way: one line, exit status 2."""


# -- the parent side ----------------------------------------------------------------------------


def run_in_worker(plan, currents_tb: np.ndarray, *, backend: str, copies: int, record: str = "shared",
                  progress: Callable[[int], None] | None = None, chunk_samples: int = 50,
                  timings: dict[str, Any] | None = None, record_state: bool = False) -> dict[str, np.ndarray]:
    """``lava_net.run_network`` in a fresh worker process; the same return value."""
    t0 = time.perf_counter()
    with _private_tmp() as tmp, _unnamed_file(lambda path: plan.save(path, float_weights=backend == "floating_pt")) \
            as plan_f, tempfile.TemporaryFile() as cur_f, tempfile.TemporaryFile() as out_f:
        with disk_errors(tempfile.gettempdir(), f"the Lava worker's inputs in {tempfile.gettempdir()} (TMPDIR)"):
            np.save(cur_f, np.ascontiguousarray(currents_tb))
            cur_f.flush()
        job = {"backend": backend, "copies": int(copies), "record": record, "chunk_samples": int(chunk_samples),
               "record_state": bool(record_state),
               "parent_pid": os.getpid(), "plan_fd": plan_f.fileno(), "currents_fd": cur_f.fileno(),
               "out_fd": out_f.fileno()}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": tmp}
        proc = subprocess.Popen([sys.executable, "-m", "htakl_deploy.hw.lava_worker", json.dumps(job)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                pass_fds=(plan_f.fileno(), cur_f.fileno(), out_f.fileno()))
        errors: list[str] = []
        drain = threading.Thread(target=_forward_stderr, args=(proc.stderr, errors), daemon=True)
        drain.start()
        done = False
        try:
            for line in proc.stdout:
                if not line.startswith(TAG):
                    sys.stderr.write(line)
                    continue
                word, _, rest = line[len(TAG):].strip().partition(" ")
                if word == "progress" and progress is not None:
                    progress(int(rest))
                elif word == "error":
                    errors.append(rest)
                elif word == "done":
                    done = True
            rc = proc.wait()
            drain.join()
        except BaseException:
            proc.kill()  # its Lava children die with it (PR_SET_PDEATHSIG)
            proc.wait()
            raise
        if rc != 0 or not done:
            raise LavaWorkerError(_failure(rc, errors))
        for line in errors:
            print(line, file=sys.stderr)
        out_f.seek(0)
        with np.load(out_f, allow_pickle=False) as z:
            got = {k: z[k] for k in z.files}
    if timings is not None:
        timings.update(json.loads(got.pop("timings").tobytes().decode()))
        timings["worker_s"] = time.perf_counter() - t0
    out = {name: got[f"rec{i}"] for i, name in enumerate(plan.populations)}
    for i, name in enumerate(plan.populations if record_state else ()):
        out[f"{name}#u"], out[f"{name}#v"] = got[f"state{i}.u"], got[f"state{i}.v"]
    return out


TMP_PREFIX = "htakl-"
SOCKET_PATH_MAX = 107  # AF_UNIX sun_path, less its NUL
MP_SOCKET_TAIL = len("/pymp-XXXXXXXX/listener-XXXXXXXX")  # what multiprocessing adds under TMPDIR


@contextmanager
def _private_tmp():
    """The worker's own TMPDIR (see the module docstring), after sweeping those of dead parents."""
    import re
    import shutil

    from htakl_deploy.atomic import pid_alive

    base = Path(tempfile.gettempdir())
    pattern = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-[A-Za-z0-9_]{8}$")
    for entry in base.iterdir() if base.is_dir() else []:
        m = pattern.match(entry.name)
        if m and not pid_alive(int(m[1])) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # only ours, only a dead process's
    name_len = len(f"/{TMP_PREFIX}{os.getpid()}-XXXXXXXX")
    if len(str(base)) + name_len + MP_SOCKET_TAIL > SOCKET_PATH_MAX:
        yield str(base)  # no room for the private folder in a socket's path: the parent's TMPDIR
        return
    with disk_errors(base, f"a folder in {base} (TMPDIR)"):
        tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=base)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _unnamed_file(write: Callable[[Path], Any]):
    """A file written by ``write(path)`` and unlinked at once, open for reading: no name is left on
    disk whatever ends this process (the worker gets it as an inherited file descriptor)."""
    with tempfile.TemporaryDirectory(prefix="htakl-lava-") as tmp:
        path = Path(tmp) / "plan.npz"
        write(path)
        f = open(path, "rb")
    try:
        yield f
    finally:
        f.close()


def _forward_stderr(stream, errors: list[str]) -> None:
    """Collect the worker's stderr (Lava's warnings, a traceback): shown after a successful run,
    reduced to its last line in the error otherwise (one line, no traceback)."""
    for line in stream:
        errors.append(line.rstrip("\n"))


def _failure(rc: int, errors: list[str]) -> str:
    ours = [e for e in errors if e.startswith("Lava process")]
    if ours:
        return ours[-1]
    errors = [e for e in errors if e.strip()]
    if rc < 0:
        name = signal.Signals(-rc).name
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"the Lava worker process was killed by {name}{hint}; no result"
    last = errors[-1] if errors else "no message"
    return f"the Lava worker process failed (exit status {rc}): {last}"


# -- the worker side ----------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """The worker's child processes (every thread's), from /proc."""
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                out.update(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


class Watchdog:
    """Polls the worker's children until ``stop``; a child that has exited ends the worker."""

    def __init__(self) -> None:
        self.known: dict[int, str] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def _run(self) -> None:
        me = os.getpid()
        while not self._halt.is_set():
            for pid in _children(me) - self.known.keys():
                self.known[pid] = _comm(pid)
            for pid, name in list(self.known.items()):
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue  # not ours to wait for (reaped elsewhere)
                if got == 0:
                    continue
                if os.WIFSIGNALED(status):
                    sig = signal.Signals(os.WTERMSIG(status)).name
                    how = f"was killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
                else:
                    how = f"exited with status {os.WEXITSTATUS(status)}"
                print(f"{TAG}error Lava process {pid} ({name}) {how} while the network ran; "
                      f"the Lava run is stopped", flush=True)
                os._exit(CHILD_DIED)  # the other children die with this process (PDEATHSIG)
            self._halt.wait(WATCH_INTERVAL_S)

    def stop(self) -> None:
        """Stop watching (and wait for the thread: Lava's children may exit normally after this)."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()


def _die_with(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    _die_with(int(cfg["parent_pid"]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (it kills this process)
    from htakl_deploy.hw.lava_net import run_network
    from htakl_deploy.hw.plan import load_plan

    with os.fdopen(cfg["plan_fd"], "rb") as f:
        plan = load_plan(f)
    with os.fdopen(cfg["currents_fd"], "rb") as f:
        f.seek(0)
        currents = np.load(f, allow_pickle=False)
    timings: dict[str, Any] = {}

    def progress(n: int) -> None:
        print(f"{TAG}progress {n}", flush=True)

    watchdog = Watchdog().start()
    try:
        rec = run_network(plan, currents, backend=cfg["backend"], copies=cfg["copies"], record=cfg["record"],
                          progress=progress, chunk_samples=cfg["chunk_samples"], timings=timings,
                          before_stop=watchdog.stop,  # Lava's children exit normally from there on
                          record_state=bool(cfg.get("record_state", False)))
    finally:
        watchdog.stop()
    timings["worker_imported_torch"] = "torch" in sys.modules  # checked by the tests: never
    out = {f"rec{i}": rec.pop(name) for i, name in enumerate(plan.populations)}
    for i, name in enumerate(plan.populations):
        for var in ("u", "v"):
            if f"{name}#{var}" in rec:
                out[f"state{i}.{var}"] = rec.pop(f"{name}#{var}")
    with os.fdopen(cfg["out_fd"], "wb") as f:
        np.savez(f, timings=np.frombuffer(json.dumps(timings).encode(), np.uint8), **out)
    print(f"{TAG}done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
