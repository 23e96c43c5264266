"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written checkpoint, config or report, even if the writer is killed.
The file gets the permissions any new file would get (``0666`` less the user's umask), not the
``0600`` of ``tempfile.mkstemp``: run directories are shared. A folder or file that cannot be
created or written (read-only, a file where a folder is expected, disk full) is a ``UserError``
naming the path — and, when the disk or quota is full, the space left there — and the temporary
file is removed; the file that was there before (an earlier complete output) is untouched.

Every writer goes through here: ``atomic_path`` (a temporary path to write, renamed at the end),
``AtomicH5`` (an HDF5 file built through h5py; see below), ``appending`` (a file grown in place,
such as ``metrics.jsonl``) and ``disk_errors`` (any other write, e.g. a temporary file handed to a
worker). ``write_error`` is the one message.

HDF5 and a full disk: libhdf5 (2.0, h5py 3.16) crashes the process (SIGSEGV) when a file whose
write failed is closed — it frees its metadata cache twice. ``AtomicH5`` therefore never lets a
write fail inside the library: h5py writes into a Python file object (``_Sink``) that records the
first ``OSError`` and reports the write as done; the library closes normally, and the recorded
error is raised (as a ``UserError``) once h5py has let go of the file.

Leftovers: a writer that is killed (SIGKILL, power loss) leaves its temporary file, named
``.NAME.PID.XXXXXXXX.tmp``. The next write of the same ``NAME`` in that folder, and the next
command that claims the folder (``htakl_deploy.rundir``), remove the ones whose process ``PID``
is no longer alive (``sweep_stale``): only our own pattern, only stale.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from htakl_deploy.errors import UserError

#: errors that mean "the storage refused the bytes", not "this path is wrong"
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_space(path: str | os.PathLike) -> str:
    """'12.0 KiB free of 64.0 KiB' for the file system holding ``path`` (or its nearest existing
    parent); '' if that cannot be read."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return ""
    return f"{_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)}"


def write_error(path: str | os.PathLike, exc: OSError, what: str | None = None) -> UserError:
    """The one line for a write that failed: the path (or ``what`` was written there), the reason
    and, for a full disk or quota, the space left on that file system."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        space = free_space(path)
        if space:
            reason += f" ({space} on that file system)"
    return UserError(f"cannot write {what or path}: {reason}; nothing was replaced")


def disk_cause(exc: BaseException) -> OSError | None:
    """The full-disk (or I/O) ``OSError`` behind ``exc``: itself, or one it was raised while
    handling (torch's zip writer turns a failed write into a RuntimeError about positions)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def disk_errors(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` of a write to ``path`` (a file or the folder it goes in), or an error
    caused by a full disk, into the one-line ``write_error``."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e, what) from None
    except Exception as e:
        cause = disk_cause(e)
        if cause is None:
            raise
        raise write_error(path, cause, what) from None


def make_dir(path: str | os.PathLike, label: str | None = None) -> Path:
    """``mkdir -p path``; a path that is (or passes through) a file, or a folder that cannot be
    created, is a ``UserError`` (``label``: the flag or argument that named it)."""
    path = Path(path)
    where = f"{label}: " if label else ""
    if path.exists() and not path.is_dir():
        raise UserError(f"{where}{path} is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{where}cannot create folder {path}: {e.strerror or e}") from None
    return path


def check_writable_dir(path: str | os.PathLike, label: str) -> None:
    """Fail early (before any work) if ``path`` is a file, lies under a file, or sits in a
    folder this process cannot write to. Creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{label}: {path} is a file, expected a folder")
        probe = path
    else:
        probe = path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"{label}: {path} lies under {probe}, which is a file")
    if not os.access(probe, os.W_OK | os.X_OK):  # mode bits, ACLs and read-only mounts (also for root)
        raise UserError(f"{label}: cannot write in {probe}: permission denied or read-only")


def check_file_target(path: str | os.PathLike, label: str) -> None:
    """Fail early if the output file ``path`` is an existing folder or its folder is unusable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{label}: {path} is a directory, expected a file name")
    check_writable_dir(path.parent, label)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def sweep_stale(folder: str | os.PathLike, name: str | None = None, depth: int = 0) -> list[Path]:
    """Remove ``.NAME.PID.*.tmp`` files (any NAME if None) in ``folder`` — and in its subfolders
    ``depth`` levels down — left by writers that are no longer alive: only ours, only stale."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if depth > 0 and entry.is_dir(follow_symlinks=False):
            removed += sweep_stale(entry.path, name, depth - 1)
            continue
        m = _TMP.match(entry.name)
        if (m and (name is None or m["name"] == name) and not pid_alive(int(m["pid"]))
                and entry.is_file(follow_symlinks=False)):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


class AtomicFile:
    """A temporary file next to ``path``: ``commit()`` fsyncs it and renames it onto ``path``,
    ``abort()`` removes it. Failures to write are ``write_error`` s naming ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory")
        make_dir(path.parent)
        sweep_stale(path.parent, path.name)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        except OSError as e:
            raise write_error(path, e) from None
        os.close(fd)
        self.path, self.tmp, self.done = path, Path(tmp), False

    def commit(self) -> Path:
        try:
            with open(self.tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise write_error(self.path, e) from None
        self.done = True
        return self.path

    def abort(self) -> None:
        if not self.done:
            self.done = True
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    target = AtomicFile(path)
    try:
        yield target.tmp
    except OSError as e:
        target.abort()
        raise write_error(target.path, e) from None
    except BaseException as e:
        target.abort()
        cause = disk_cause(e)
        if cause is not None:
            raise write_error(target.path, cause) from None
        raise
    target.commit()


class _Sink(io.RawIOBase):
    """The file object h5py writes an ``AtomicH5`` into: a write the storage refuses is recorded
    (``error``) and reported to the library as done, so libhdf5 never runs its failed-write path.
    Reads past what was written return zeros, as HDF5's own POSIX driver does."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
        self.pos = 0
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = os.fstat(self.fd).st_size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        got = 0
        try:
            while got < len(view):
                n = os.preadv(self.fd, [view[got:]], self.pos + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            self.error = self.error or e
        view[got:] = bytes(len(view) - got)
        self.pos += len(view)
        return len(view)

    def write(self, buf) -> int:
        view = memoryview(buf).cast("B")
        if self.error is None:
            done = 0
            try:
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.error = e
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class AtomicH5:
    """A new HDF5 file at ``path``, built in a temporary file: ``h5`` is the open ``h5py.File``
    (opened on first use), ``sink`` the file object under it, for a library that opens the file
    itself (``nir.write(sink, graph)``). ``with AtomicH5(path) as out:`` commits at the end.

    ``check()`` raises the first write error so far (a long writer calls it after each block, so a
    full disk stops it at once); ``commit()`` closes the file and renames it onto ``path``;
    ``abort()`` closes and removes it. Both are safe to call after anything went wrong."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._target = AtomicFile(path)
        self.path = self._target.path
        self._h5 = None
        try:
            self.sink = _Sink(self._target.tmp)
        except OSError as e:
            self._target.abort()
            raise write_error(self.path, e) from None

    @property
    def h5(self):
        if self._h5 is None:
            import h5py

            self._h5 = h5py.File(self.sink, "w")
        return self._h5

    def check(self) -> None:
        if self.sink.error is not None:
            error = self.sink.error
            self.abort()
            raise write_error(self.path, error) from None

    def _close(self) -> None:
        try:
            if self._h5 is not None and self._h5.id.valid:
                self._h5.close()  # every write "succeeds" in _Sink: libhdf5 closes normally
        finally:
            self.sink.close()

    def commit(self) -> Path:
        try:
            self._close()
        except BaseException:
            self.check()  # a full disk explains what failed: say that
            self.abort()
            raise
        self.check()
        return self._target.commit()

    def abort(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - dropping the file anyway; the caller's error stands
            pass
        finally:
            self._target.abort()

    def __enter__(self) -> "AtomicH5":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.check()  # the disk error, if any, is the real cause
            self.abort()


@contextmanager
def appending(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[io.TextIOBase]:
    """``open(path, "a")`` whose write errors (a full disk) are the one-line ``write_error``."""
    with disk_errors(path), open(path, "a", encoding=encoding) as fh:
        yield fh
        fh.flush()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _strict(obj: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats are written as null (valid JSON everywhere)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False, default=_default) + "\n")


def _default(obj: Any) -> Any:
    """numpy scalars and arrays (reports hold a few) as plain JSON values."""
    import numpy as np

    if isinstance(obj, np.generic):
        return _strict(obj.item())
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
