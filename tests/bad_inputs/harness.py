"""Run one bad-input case in-process and classify what happened.

A case is a command line (``{run}``, ``{ws}``… placeholders), an optional ``setup(ws)`` that
plants the bad file(s) in the case's own workspace, and the text the one error line must
contain. ``run_case`` copies the shared fixture run into the workspace, snapshots every file
and folder there, calls ``htakl_deploy.cli.main`` with the workspace as the current directory,
and reports: exit code, stderr, whether a traceback escaped, which files appeared or changed,
which child processes survived, what was left in the case's own TMPDIR, and whether a planted
payload ran (its marker file exists).

Cases that need a real full disk (``isolate=True``) mount a small tmpfs in their workspace
(``tmpfs``). They run together in one child process inside a private mount namespace
(``run_isolated``: ``unshare --mount``, with ``--map-root-user`` when not root), so a mount never
outlives its case, whatever happens to the test run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MARKER = "PAYLOAD_RAN"  # a malicious payload creates this file in the workspace when it runs


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # a substring of the one error line (case-insensitive)
    setup: Callable[[Path], None] | None = None
    needs_run: bool = True  # copy the fixture run into ws/run
    isolate: bool = False  # mounts a tmpfs: run in a private mount namespace (run_isolated)


@dataclass
class Outcome:
    rc: int | None
    stderr: str
    traceback: str | None
    changed: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    payload_ran: bool = False
    leftovers: list[str] = field(default_factory=list)  # what the case left in its TMPDIR

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def kind(self, expect: str) -> str:
        """clean | traceback | wrong-success | unclear (exit 2 but not one line naming it) | dirty |
        orphans | leftovers (files in TMPDIR) | code | crash (the process died: a signal)"""
        if self.payload_ran:
            return "code"
        if self.traceback is not None:
            return "crash" if self.traceback.startswith("crash:") else "traceback"
        if self.rc == 0:
            return "wrong-success"
        if self.children:
            return "orphans"
        if self.changed:
            return "dirty"
        if self.leftovers:
            return "leftovers"
        if (self.rc != 2 or len(self.lines) != 1 or not self.lines[0].startswith("htakl-deploy: error: ")
                or expect.lower() not in self.lines[0].lower()):
            return "unclear"
        return "clean"


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            # a folder's own mtime/size change only when entries come and go: those entries show
            key = (st.st_mode,) if p.is_dir() and not p.is_symlink() else (st.st_mode, st.st_size, st.st_mtime_ns)
            out[str(p.relative_to(root))] = key
    return out


def child_pids() -> list[int]:
    """Live (non-zombie) processes whose parent is this process, read from /proc."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields_ = stat.rsplit(")", 1)[1].split()
        if int(fields_[1]) == me and fields_[0] != "Z":
            kids.append(int(entry))
    return kids


def fill(argv: tuple[str, ...], ws: Path) -> list[str]:
    names = {"ws": str(ws), "run": str(ws / "run"), "ckpt": str(ws / "run/student/last.pt"),
             "teacher": str(ws / "run/teacher/last.pt"), "npz": str(ws / "run/export/student.lava.npz"),
             "qnir": str(ws / "run/export/student_quant.nir"), "fnir": str(ws / "run/export/student_float.nir"),
             "h5": str(ws / "run/simulate/emulator/spikes.h5")}
    return [a.format(**names) for a in argv]


class CaseTimeout(BaseException):
    """A case that runs on (a mistake accepted, e.g. training for 10**12 epochs)."""


def tmpfs(name: str, size_kib: int, *, copy: dict[str, str] | None = None, free_kib: int | None = None):
    """A setup: a real full disk — a tmpfs of ``size_kib`` at ``ws/name`` (the case must be
    ``isolate=True``); ``copy`` (destination in it → source in ws) puts files there first;
    ``free_kib`` then fills it with a ballast file until only that much space is left."""
    def setup(ws: Path) -> None:
        mnt = ws / name
        mnt.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
        for dst, src in (copy or {}).items():
            (shutil.copytree if (ws / src).is_dir() else shutil.copy)(ws / src, mnt / dst)
        if free_kib is not None:
            with open(mnt / "ballast", "wb") as fh:
                while os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize > free_kib * 1024:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        probe = mnt / "probe"
        try:  # the disk really refuses bytes
            probe.write_bytes(b"\0" * (size_kib + 8) * 1024)
            raise AssertionError(f"{mnt} accepted more than its size: not a full disk")
        except OSError as e:
            assert e.errno == 28, e
        finally:
            probe.unlink(missing_ok=True)
    return setup


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root`` (deepest first), from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    root_s = str(root.resolve())
    points = [line.split()[4] for line in lines]
    return sorted((p for p in points if p == root_s or p.startswith(root_s + "/")), key=len, reverse=True)


def run_case(case: Case, ws: Path, fixture_run: Path, timeout_s: int = 60) -> Outcome:
    """Run one case in this process (an ``isolate`` case only where mounting works: inside
    ``run_isolated``'s child)."""
    ws.mkdir(parents=True, exist_ok=True)
    try:
        return _run_case(case, ws, fixture_run, timeout_s)
    finally:
        for point in _mounts_under(ws):
            subprocess.run(["umount", "-l", point], capture_output=True)


def _run_case(case: Case, ws: Path, fixture_run: Path, timeout_s: int) -> Outcome:
    from htakl_deploy.cli import main

    tmpdir = ws.parent / f"{ws.name}-tmp"  # the case's own TMPDIR: whatever is left there is a leftover
    tmpdir.mkdir(parents=True, exist_ok=True)
    if case.needs_run:
        shutil.copytree(fixture_run, ws / "run")
    if case.setup is not None:
        try:
            case.setup(ws)
        except Exception:  # noqa: BLE001 - a broken case, reported as such
            return Outcome(None, "", "setup failed: " + traceback.format_exc())
    before, kids_before = snapshot(ws), set(child_pids())
    err, tb, rc = io.StringIO(), None, None
    cwd = os.getcwd()
    os.chdir(ws)
    old_tmp = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmpdir), str(tmpdir)

    def too_long(signum, frame):
        raise CaseTimeout(f"still running after {timeout_s} s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(fill(case.argv, ws))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - anything escaping main is a traceback
                tb = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
        tempfile.tempdir = old_tmp[1]
        if old_tmp[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmp[0]
    after = snapshot(ws)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    kids = [p for p in child_pids() if p not in kids_before]
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    return Outcome(rc, err.getvalue(), tb, changed, kids, (ws / MARKER).exists(), left)


# ------------------------------------------------------------------ cases in a private mount namespace
def namespace_command() -> list[str] | None:
    """``unshare`` that gives a child its own mount namespace where it may mount a tmpfs (root:
    ``--mount``; otherwise a user namespace too), or None if this machine allows neither."""
    if shutil.which("unshare") is None:
        return None
    for cmd in (["unshare", "--mount", "--propagation", "private"],
                ["unshare", "--mount", "--map-root-user", "--propagation", "private"]):
        probe = subprocess.run([*cmd, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && "
                                "umount $d && rmdir $d"], capture_output=True)
        if probe.returncode == 0:
            return cmd
    return None


def run_isolated(cases: list[Case], root: Path, fixture_run: Path) -> dict[str, Outcome]:
    """Run ``cases`` in one child process in a private mount namespace; their outcomes by id.
    Raises RuntimeError if no mount namespace can be made here."""
    cmd = namespace_command()
    if cmd is None:
        raise RuntimeError("cannot mount a tmpfs here (no root, no user namespaces): no real full disk")
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    results: dict[str, Outcome] = {}
    todo = [c.id for c in cases]
    while todo:  # a case that kills the child (a crash in C code) is recorded; the rest run on
        job = {"ids": todo, "root": str(root), "fixture": str(fixture_run), "start": len(results)}
        proc = subprocess.run([*cmd, sys.executable, "-m", "bad_inputs.harness", json.dumps(job)], cwd=root,
                              capture_output=True, text=True, env=env, timeout=600)  # cwd: nothing importable
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                cid = d.pop("id")
                results[cid] = Outcome(**d)
        todo = [i for i in todo if i not in results]
        if todo:
            results[todo.pop(0)] = Outcome(None, proc.stderr[-2000:], f"crash: child exit status {proc.returncode}")
    return results


def _isolated_main(job: dict) -> None:
    from bad_inputs.cases import CASES

    by_id = {c.id: c for c in CASES}
    for i, cid in enumerate(job["ids"]):
        out = run_case(by_id[cid], Path(job["root"]) / f"i{job['start'] + i}", Path(job["fixture"]))
        print(json.dumps({"id": cid, **out.__dict__}), flush=True)


if __name__ == "__main__":
    _isolated_main(json.loads(sys.argv[1]))


def build_fixture_run(out: Path) -> Path:
    """A tiny real digits run: teacher + KD student (1 epoch each), exported to NIR and the Lava
    artefact (no Lava check), and a 4-image emulator recording. ~5 s."""
    import sys

    from htakl_deploy.cli import main
    from htakl_deploy.distill import recipe
    from htakl_deploy.distill.config import DistillConfig
    from htakl_deploy.distill.dist import DistEnv

    cfg = DistillConfig(data="digits", method="kd", batch_size=64, epochs=1, teacher_epochs=1, limit_train=128,
                        limit_test=8, out_dir=str(out), run_name="run", progress=False)
    recipe.run(cfg, DistEnv())
    run = out / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["export", str(run), "--target", "nir", "lava", "--lava-check", "0"]) == 0
        assert main(["simulate", str(run), "--backend", "emulator", "--samples", "4"]) == 0
    del sys
    return run
