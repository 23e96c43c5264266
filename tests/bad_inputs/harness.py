"""Run one bad-input case in-process and classify what happened.

A case is a command line (``{run}``, ``{ws}``… placeholders), an optional ``setup(ws)`` that
plants the bad file(s) in the case's own workspace, and the text the one error line must
contain. ``run_case`` copies the shared fixture run into the workspace, snapshots every file
and folder there, calls ``htakl_deploy.cli.main`` with the workspace as the current directory,
and reports: exit code, stderr, whether a traceback escaped, which files appeared or changed,
which child processes survived, and whether a planted payload ran (its marker file exists).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
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


@dataclass
class Outcome:
    rc: int | None
    stderr: str
    traceback: str | None
    changed: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    payload_ran: bool = False

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def kind(self, expect: str) -> str:
        """clean | traceback | wrong-success | unclear (exit 2 but not one line naming it) | dirty | orphans | code"""
        if self.payload_ran:
            return "code"
        if self.traceback is not None:
            return "traceback"
        if self.rc == 0:
            return "wrong-success"
        if self.children:
            return "orphans"
        if self.changed:
            return "dirty"
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


def run_case(case: Case, ws: Path, fixture_run: Path, timeout_s: int = 60) -> Outcome:
    from htakl_deploy.cli import main

    ws.mkdir(parents=True, exist_ok=True)
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
    after = snapshot(ws)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    kids = [p for p in child_pids() if p not in kids_before]
    return Outcome(rc, err.getvalue(), tb, changed, kids, (ws / MARKER).exists())


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
