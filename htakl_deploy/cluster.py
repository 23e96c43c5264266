"""Ray for the work that outgrows one process: the cells of a grid (``run --config GRID.toml``) and
the sample shards of ``simulate --shards N`` / ``energy --shards N``.

One code path for one machine and for many: without an address a private local cluster is
started for the command and stopped after it (``ray.init(address="local")``: its own temporary
folder, ports chosen by Ray, no dashboard, a small object store — several commands on one
machine never share or collide); with ``--ray-address ADDR`` (or ``RAY_ADDRESS``) the command
joins an existing cluster (``ray start`` on the nodes, or Ray on SLURM: docs/SCALING.md).

Ray is imported here only, and only when a grid or shards run: ``run`` and ``simulate`` without
them never import or start it.

A **job** is one call of a module-level function (importable on every worker) as a Ray task
with declared resources (CPUs, GPUs). ``run_jobs`` submits jobs in order (a job may wait for
another: a grid's cells wait for their shared teacher), gives each task torch/numba threads
equal to its CPUs (``threads_for``), writes a job's output to its log file, reports each job as
it finishes, retries a job whose worker died (a killed process, the OOM killer, a lost node:
the job resumes from what it saved) and reports a job that raised, by name, with its log; the
others go on. Ctrl-C cancels the running tasks (their workers are killed; everything they wrote
is complete — atomic writes — so the same command resumes).

No process outlives the command: Ray fate-shares its head processes with the driver, and a
small watchdog (``_WATCHDOG``) kills the rest (Ray's agents wait up to 60 s for a dead GCS
before they exit) when the driver ends in any way, SIGKILL included.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from htakl_deploy.errors import UserError

#: object store of a local cluster: jobs return small summaries, never arrays (Ray's minimum is 75 MB)
OBJECT_STORE_BYTES = 100 * 2**20


def add_ray_flags(group, what: str) -> None:
    """``--ray-address`` and ``--ray-cpus`` (``what``: the work that runs on Ray, for the help)."""
    group.add_argument("--ray-address", metavar="ADDR",
                       help=f"run {what} on an existing Ray cluster (e.g. auto, or HOST:6379; default: "
                            "$RAY_ADDRESS, else a private local cluster for this command); workers must see "
                            "the same files at the same paths (docs/SCALING.md)")
    group.add_argument("--ray-cpus", type=int, metavar="N",
                       help=f"CPUs of the local Ray cluster (default: this machine's {os.cpu_count()}); "
                            f"{what} needing 1 CPU each run N at a time")


def ray_address(flag: str | None) -> str | None:
    """The cluster to join: ``--ray-address``, else ``$RAY_ADDRESS``, else None (a local one)."""
    return flag or os.environ.get("RAY_ADDRESS") or None


def check_ray_flags(address: str | None, cpus: int | None) -> None:
    if cpus is not None and cpus < 1:
        raise UserError(f"--ray-cpus: got {cpus}, expected an integer >= 1")
    if cpus is not None and address:
        raise UserError("--ray-cpus sizes a local cluster; an existing cluster (--ray-address / RAY_ADDRESS) "
                        "has the CPUs its nodes were started with")


def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a private cluster
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency; a broken install says so
        raise UserError(f"Ray is not installed or does not import here ({exc}); `make install` installs it") from None
    return ray


@dataclass
class Session:
    """An initialised Ray connection: ``local`` (a private cluster) or joined at ``address``."""

    address: str | None
    cpus: float
    gpus: float
    start_s: float = 0.0  # how long starting (or joining) the cluster took
    _remote: Any = None


@contextmanager
def ray_session(address: str | None = None, cpus: int | None = None) -> Iterator[Session]:
    """Start a private local cluster with ``cpus`` CPUs (default: all), or join ``address``;
    always shut down (and, for a local one, remove its folder and every process) at the end.
    Where this process already holds a Ray session, that one is used and left running."""
    import tempfile

    ray = _import_ray()
    if ray.is_initialized():  # a caller (a notebook, a test) already holds a session: use it, leave it up
        res = ray.cluster_resources()
        yield Session(address=address, cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)),
                      _remote=ray.remote(_call))
        return
    tmp = watchdog = None
    t0 = time.perf_counter()
    try:
        if address:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError: one line, no traceback
                raise UserError(f"--ray-address {address}: cannot join the Ray cluster: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        else:
            # a short path: Ray's unix sockets live under it (108-byte limit)
            tmp = tempfile.mkdtemp(prefix="htakl-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            watchdog = _start_watchdog(tmp)
            ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False, _temp_dir=tmp,
                     object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, logging_level="ERROR")
        res = ray.cluster_resources()
        session = Session(address=address, cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)),
                          start_s=time.perf_counter() - t0)
        _quiet_driver_messages()
        session._remote = ray.remote(_call)
        with _sigterm_as_interrupt():
            yield session
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if watchdog is not None:
            watchdog.stdin.close()  # the watchdog kills what is left of the cluster, removes its folder
            watchdog.wait()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does (running tasks cancelled, cluster shut down), where
    Ray's own handler would dump a stack and abort."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _quiet_driver_messages() -> None:
    """Ray prints the raylet's messages (a worker died: its id, the usual causes) on the driver's
    *stdout*, which holds ``--json`` output; they are dropped — ``run_jobs`` says itself which job's
    worker died (the worker's own log stays in the cluster's session folder on a shared cluster)."""
    import ray._private.worker as ray_worker

    if hasattr(ray_worker, "print_to_stdstream"):
        ray_worker.print_to_stdstream = lambda data, ignore_prefix: None


# ----------------------------------------------------------------------------- in the worker
def threads_for(cpus: float) -> int:
    """torch/numba/OpenMP threads of a task holding ``cpus`` CPUs: its share, at least 1
    (oversubscribed threads made a distil stage ×10 slower here: docs/SCALING.md)."""
    return max(1, int(cpus))


def _call(fn: Callable, kwargs: dict, cpus: float, log: str | None) -> tuple[Any, float]:
    """What a Ray task runs: set the threads from the CPU share, send the output to ``log``,
    call ``fn(**kwargs)``; returns its result and wall time. A traceback goes to the log; the
    exception goes back to the driver."""
    import numba
    import torch

    n = threads_for(cpus)
    os.environ["OMP_NUM_THREADS"] = str(n)  # processes the job starts (Lava) inherit it
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # starts numba's OpenMP layer, which
    torch.set_num_threads(n)  # resets the process's OpenMP count: torch's is set after it
    t0 = time.perf_counter()
    if log is None:
        return fn(**kwargs), time.perf_counter() - t0
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} on {os.uname().nodename}, "
                  f"{n} thread(s)", flush=True)
            return fn(**kwargs), time.perf_counter() - t0
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# ----------------------------------------------------------------------------- in the driver
@dataclass(frozen=True)
class Job:
    """``fn(**kwargs)`` on a worker with ``cpus``/``gpus``; after the job named ``after`` succeeded."""

    name: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)
    cpus: float = 1.0
    gpus: float = 0.0
    after: str | None = None
    log: str | None = None


@dataclass
class Outcome:
    name: str
    ok: bool
    result: Any = None
    error: str | None = None
    log: str | None = None
    wall_s: float = 0.0  # the last attempt's time on its worker (0 for a job that never ran)
    attempts: int = 1


def run_jobs(session: Session, jobs: list[Job], *, on_done: Callable[[Outcome], None] = lambda o: None,
             say: Callable[[str], None] = print, retries: int = 1) -> dict[str, Outcome]:
    """Run ``jobs`` (in order, as resources allow) on ``session``; ``on_done`` hears of each as it
    ends. A job whose worker died is run again up to ``retries`` times; one that raised is not.
    Ctrl-C cancels every running task (``KeyboardInterrupt`` propagates)."""
    import ray
    from ray.exceptions import RayTaskError, TaskCancelledError

    died = _worker_death_errors()
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    order = {j.name: i for i, j in enumerate(jobs)}
    for j in jobs:
        if j.after is not None and order.get(j.after, len(jobs)) >= order[j.name]:
            raise ValueError(f"job {j.name!r} waits for {j.after!r}, which is not an earlier job")
    pending, running, outcome = list(jobs), {}, {}
    attempts: dict[str, int] = {}

    def submit(job: Job) -> None:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        ref = session._remote.options(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=0,
                                      name=job.name).remote(job.fn, job.kwargs, job.cpus, job.log)
        running[ref] = job

    def finish(o: Outcome) -> None:
        outcome[o.name] = o
        on_done(o)

    try:
        while pending or running:
            for job in list(pending):
                dep = outcome.get(job.after) if job.after else None
                if job.after is None or (dep is not None and dep.ok):
                    pending.remove(job)
                    submit(job)
                elif dep is not None:
                    pending.remove(job)
                    finish(Outcome(job.name, False, error=f"not run: {job.after} failed", log=job.log))
            if not running:
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)  # a signal is seen within 1 s
            if not ready:
                continue
            ref = ready[0]
            job = running.pop(ref)
            wall = 0.0
            try:
                result, wall = ray.get(ref)
            except died as exc:
                if attempts[job.name] <= retries:
                    say(f"[ray] {job.name}: its worker died ({type(exc).__name__}); running it again, "
                        f"from what it saved (attempt {attempts[job.name] + 1} of {retries + 1})")
                    submit(job)
                    continue
                finish(Outcome(job.name, False, error=f"its worker died {attempts[job.name]} time(s) "
                                                     f"({type(exc).__name__}: killed, out of memory or node lost)",
                               log=job.log, wall_s=wall, attempts=attempts[job.name]))
            except TaskCancelledError:
                finish(Outcome(job.name, False, error="cancelled", log=job.log, wall_s=wall,
                               attempts=attempts[job.name]))
            except RayTaskError as exc:
                finish(Outcome(job.name, False, error=_one_line(exc), log=job.log, wall_s=wall,
                               attempts=attempts[job.name]))
            else:
                finish(Outcome(job.name, True, result=result, log=job.log, wall_s=wall, attempts=attempts[job.name]))
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)  # kills the workers: their files are complete (atomic writes)
        raise
    return outcome


def _worker_death_errors() -> tuple[type, ...]:
    from ray import exceptions as rx

    return tuple(getattr(rx, n) for n in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                                           "ObjectLostError", "OutOfMemoryError") if hasattr(rx, n))


def _one_line(exc: Exception) -> str:
    """The job's own exception as ``Type: message`` (Ray wraps it with a traceback)."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# ----------------------------------------------------------------------------- the watchdog
_WATCHDOG = r"""
import os, select, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; we clean up after it
me, driver = os.getpid(), os.getppid()
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if f[0] in ("Z", "X") else (int(f[1]), int(f[19]))
mine = stat(me)[1]
seen = {}
while True:
    ready, _, _ = select.select([0], [], [], 0.25)
    info = {int(d): stat(int(d)) for d in os.listdir("/proc") if d.isdigit()}
    kids = {}
    for pid, st in info.items():
        if st is not None:
            kids.setdefault(st[0], []).append(pid)
    todo = [driver]
    while todo:
        for pid in kids.get(todo.pop(), []):
            if pid != me and info[pid][1] >= mine:  # started with or after the cluster: its processes
                seen[pid] = info[pid][1]
            todo.append(pid)
    if ready and not os.read(0, 4096):
        break  # the driver closed the pipe, or died
for pid, start in seen.items():
    st = stat(pid)
    if st is not None and st[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
shutil.rmtree(sys.argv[1], ignore_errors=True)  # the cluster's folder (sockets, logs, spilled objects)
"""


def _start_watchdog(folder: str):
    """A child that records the processes the local cluster starts (every 0.25 s), and SIGKILLs
    those still alive and removes the cluster's ``folder`` once the driver closes its pipe — at
    shutdown, or by dying."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, folder], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, close_fds=True)
