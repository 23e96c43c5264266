"""One writer per output folder: a run directory (``distill``, ``run``), an export folder, a
simulate folder is *claimed* before anything is written into it, and held until the command ends.

The claim is an OS lock (``flock``, exclusive, non-blocking) on ``.NAME.htakl-lock`` beside the
folder ``NAME`` (in its parent), so it exists before the folder does: of two commands that start
together on one name, exactly one gets the lock and goes on to create and fill the folder; the
other is refused with one line naming the owner's pid and command. The kernel drops the lock when
its holder exits in any way (even SIGKILL), so a crash leaves no stale claim; the lock file itself
is removed when the claim ends (a killed owner's file is reused by the next claim, or swept).

A folder also counts as claimed while a folder above it is claimed by another live process (a
``run`` writing ``RUN`` refuses an ``export RUN`` into ``RUN/export``), unless that process writes
on the claim's behalf: the claim's owner is one of its ancestor processes (a worker it started;
Ray workers of a local cluster started by ``ray.init()`` in the owner), or it was started with
``delegate_env(folder)`` in its environment (a worker of a cluster started elsewhere). Claims are
re-entrant in one process (``run`` claims ``RUN``; its export stage claims ``RUN/export`` too).

If the command fails (an error, not Ctrl-C), a folder its claim created is removed again
(``created``) unless ``keep(folder)`` says it holds something worth keeping (a training's first
checkpoint: ``--resume`` continues from it), so a refused or failed command leaves no run
directory behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from htakl_deploy.atomic import sweep_stale
from htakl_deploy.errors import UserError

SUFFIX = ".htakl-lock"
TOKEN_ENV = "HTAKL_DEPLOY_CLAIMS"  # claim tokens a delegate process writes for (os.pathsep-separated)

_held: dict[str, "Claim"] = {}  # real path of a claimed folder -> its claim (re-entrant in a process)


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}{SUFFIX}"


def _owner(fd: int) -> dict:
    """What the lock's holder wrote into it (it writes just after locking: wait up to 1 s for it)."""
    for _ in range(100):
        try:
            return json.loads(os.pread(fd, 4096, 0).decode())
        except (OSError, ValueError):
            time.sleep(0.01)
    return {}


def _describe(owner: dict) -> str:
    if not owner.get("pid"):
        return "another process"
    started = owner.get("started_unix_s")
    when = f", started {time.strftime('%H:%M:%S', time.localtime(started))}" if started else ""
    return f"pid {owner['pid']} ({owner.get('command', '?')}{when})"


def _busy(folder: Path, owner: dict, label: str) -> UserError:
    where = f"{label}: " if label else ""
    return UserError(f"{where}{folder} is being written by {_describe(owner)}; wait for it to finish "
                     "or choose another folder")


def _delegated_tokens() -> set[str]:
    return {t for t in os.environ.get(TOKEN_ENV, "").split(os.pathsep) if t}


def _ancestor_pids() -> set[int]:
    """This process's parent, grandparent, ... (from /proc; empty elsewhere)."""
    out, pid = set(), os.getppid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _check_ancestors(folder: Path, label: str) -> None:
    """Refuse if a folder above ``folder`` is claimed by another live process (not by this one,
    nor by a claim this process writes for)."""
    mine = _delegated_tokens()
    for above in folder.parents:
        if str(above) in _held:
            return  # claimed by this process: everything below is ours
        for lock in (lock_path(above), above / SUFFIX):  # beside the folder, or inside a read-only parent's
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = _owner(fd)
                    if owner.get("token") not in mine and owner.get("pid") not in _ancestor_pids():
                        raise _busy(above, owner, label) from None
            finally:
                os.close(fd)


class Claim:
    """An exclusive claim on ``folder`` (see the module docstring); a context manager. ``created``
    is the highest folder this claim had to create (removed again by ``release(failed=True)``)."""

    def __init__(self, folder: str | os.PathLike, label: str = "", *, new_run: bool = False, keep=None) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.label = label
        self.count = 0
        self.created: Path | None = None
        self.token = secrets.token_hex(8)
        self._fd: int | None = None
        self._lock: Path | None = None
        self._new_run = new_run
        self.keep = keep

    # -- taking and giving back ------------------------------------------------------------
    def acquire(self) -> "Claim":
        key = str(self.folder)
        if key in _held:  # re-entrant: the same process claims a folder it already holds
            held = _held[key]
            held.count += 1
            return held
        _check_ancestors(self.folder, self.label)
        self._create_parents()
        try:
            self._lock_file()
            if self._new_run and (self.folder / "config.json").exists():
                raise UserError(f"run directory {self.folder} already holds a run; continue it with --resume "
                                f"{self.folder} or choose another --run-name")
            if not self.folder.exists():
                self.folder.mkdir()
                self.created = self.created or self.folder
            elif not self.folder.is_dir():
                raise UserError(f"{self.label + ': ' if self.label else ''}{self.folder} is a file, expected a folder")
        except OSError as e:
            self._give_back(failed=True)
            raise UserError(f"{self.label + ': ' if self.label else ''}cannot create folder {self.folder}: "
                            f"{e.strerror or e}") from None
        except BaseException:
            self._give_back(failed=True)
            raise
        self.count = 1
        _held[key] = self
        sweep_stale(self.folder, depth=3)  # temporary files of killed writers (only ours, only stale)
        return self

    def _create_parents(self) -> None:
        missing = []
        p = self.folder.parent
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                self._give_back(failed=True)
                raise UserError(f"{self.label + ': ' if self.label else ''}cannot create folder {p}: "
                                f"{e.strerror or e}") from None
            self.created = self.created or p

    def _lock_file(self) -> None:
        """Open and lock the lock file (beside the folder; inside it if the parent is read-only)."""
        for lock in (lock_path(self.folder), self.folder / SUFFIX):
            while True:
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except OSError as e:
                    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT) and lock.parent != self.folder:
                        break  # try inside the folder
                    raise
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = _owner(fd)
                    os.close(fd)
                    raise _busy(self.folder, owner, self.label) from None
                try:  # the owner before us may have removed the file between our open and lock
                    same = os.fstat(fd).st_ino == os.stat(lock).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": _command(), "token": self.token,
                                          "started_unix_s": time.time()}).encode(), 0)
                self._fd, self._lock = fd, lock
                return
        raise UserError(f"{self.label + ': ' if self.label else ''}cannot write in {self.folder.parent} or "
                        f"{self.folder}: permission denied or read-only")

    def release(self, failed: bool = False) -> None:
        self.count -= 1
        if self.count > 0:
            return
        _held.pop(str(self.folder), None)
        self._give_back(failed)

    def _give_back(self, failed: bool) -> None:
        if failed and self.created is not None and not (self.keep is not None and self.keep(self.folder)):
            shutil.rmtree(self.created, ignore_errors=True)
        if self._fd is not None:
            try:
                if self._lock is not None and self._lock.exists():
                    self._lock.unlink()  # while still locked: the next claimant re-checks the inode
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Claim":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        held = _held.get(str(self.folder), self)
        held.release(failed=exc_type is not None and issubclass(exc_type, Exception))


def claim(folder: str | os.PathLike, label: str = "", *, new_run: bool = False, keep=None) -> Claim:
    """``with claim(folder, "--out"):`` — see ``Claim``."""
    return Claim(folder, label, new_run=new_run, keep=keep)


def delegate_env(folder: str | os.PathLike) -> dict[str, str]:
    """Environment for a process that writes beneath ``folder``, claimed by this process."""
    held = _held.get(str(Path(os.path.abspath(folder))))
    tokens = _delegated_tokens() | ({held.token} if held else set())
    return {TOKEN_ENV: os.pathsep.join(sorted(tokens))}


def _command() -> str:
    argv = [a for a in sys.argv[1:3] if not a.startswith("-")]
    return " ".join(["htakl-deploy", *argv[:1]]) if argv else os.path.basename(sys.argv[0] or "python")
