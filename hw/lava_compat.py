"""Make lava-nc 0.10.0 importable on Python 3.11, without editing site-packages.

lava-nc 0.10.0 declares ``Requires-Python <3.11`` and fails at import on 3.11 in exactly one
module, ``lava.magma.compiler.var_model``: three dataclasses (``CoreEncoder``, ``ChipEncoder``,
``AxonEncoder``) use a dataclass *instance* as a field default (``x: ByteEncoder =
ByteEncoder()``), which 3.11's ``dataclasses`` rejects as a mutable default. ``ensure_lava()``
puts a ``sys.meta_path`` finder in front of the normal one; for that single module it compiles
the on-disk source with those defaults rewritten to ``field(default_factory=ByteEncoder)``.

A second module, ``lava.magma.core.process.ports.ports``, imports fine but breaks at run time
with numpy >= 2.4: its ``ReshapePort``/``FlattenPort`` transforms call
``np.reshape(..., newshape=...)``, a keyword numpy 2.4 removed; the ``TypeError`` is raised
inside a Lava child process and the run hangs. The same finder rewrites those two calls to
``shape=`` (numpy >= 2.1, see pyproject.toml). A third, ``lava.proc.conv.models``, passes
``Conv``'s int8 Vars to its convolution, where numpy 2's promotion rules raise an
``OverflowError`` in the child for any kernel with >= 128 channels (the run hangs): the model
passes them as int64. The same module's ``fixed_pt`` Conv model ignores its ``weight_exp``
Var; it is applied as Dense and Sparse apply theirs (a shift of the sum). ``PATCHES`` lists
every edit.

Every edit keeps the line count, so tracebacks still point at the right lines of the file on
disk. The patched code is never written to ``__pycache__`` (the installed lava stays as pip
left it), and if the source is not exactly what 0.10.0 ships the import fails loudly instead
of running a half-patched lava.

Child processes: Lava's multiprocess runtime calls ``multiprocessing.set_start_method('fork')``
when ``lava.magma.runtime.message_infrastructure.multiprocessing`` is imported (on every OS but
Windows), so its process models run in forked children that inherit ``sys.modules`` (the
patched module) and ``sys.meta_path`` from the parent and re-import nothing. Under ``spawn``
the fix would not reach the children; Lava does not use it here. That call has no
``force=True``, so importing Lava's runtime raises "context has already been set" if the
process's start method was fixed first — and that happens without anyone asking: tqdm creates a
``multiprocessing.RLock`` with its first progress bar, which fixes the default (``fork``) context.
So ``ensure_lava()`` imports Lava's multiprocessing module itself: when the method already in
force is ``fork`` (what Lava asks for), Lava's redundant ``set_start_method('fork')`` is made a
no-op for that one import; any other method raises ``UserError`` (Lava cannot run under it).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import ctypes
import multiprocessing
import os
import signal
import sys

from htakl_deploy.errors import UserError

LAVA_VERSION = "0.10.0"
INSTALL_HINT = (
    f"pip install --no-deps --ignore-requires-python lava-nc=={LAVA_VERSION} && "
    "pip install --no-deps asteval==1.0.10 networkx==2.8.7"
)
TARGET_MODULE = "lava.magma.compiler.var_model"
PORTS_MODULE = "lava.magma.core.process.ports.ports"
CONV_MODELS_MODULE = "lava.proc.conv.models"

# module → (text expected in lava-nc 0.10.0's source, its replacement, expected occurrences)
PATCHES: dict[str, tuple[tuple[str, str, int], ...]] = {
    # Python 3.11: a dataclass instance as a field default is a "mutable default".
    TARGET_MODULE: (
        (
            "from dataclasses import dataclass, InitVar\n",
            "from dataclasses import dataclass, InitVar, field\n",
            1,
        ),
        (
            ": ByteEncoder = ByteEncoder()\n",
            ": ByteEncoder = field(default_factory=ByteEncoder)\n",
            8,
        ),
    ),
    # numpy 2.4 removed np.reshape's ``newshape=`` keyword (``shape=`` exists since numpy
    # 2.1). Lava's ReshapePort/FlattenPort transforms use it inside the process that receives,
    # where the TypeError kills the child and the run hangs waiting for it.
    PORTS_MODULE: (
        ("ft.partial(np.reshape, newshape=self.shape)", "ft.partial(np.reshape, shape=self.shape)", 1),
        ("ft.partial(np.reshape, newshape=self.old_shape)", "ft.partial(np.reshape, shape=self.old_shape)", 1),
    ),
    # numpy >= 2 (NEP 50): Conv's model passes its int8 Vars (kernel size, stride, padding,
    # dilation, groups) to ``utils.conv_scipy``, where ``input_.shape[-1] % groups`` raises
    # ``OverflowError: Python integer 128 out of bounds for int8`` once a kernel has 128 or more
    # input or output channels (numpy 1 promoted to a wider type). The error kills the child
    # process and the run hangs. The model passes them as int64 instead.
    CONV_MODELS_MODULE: (
        ("            self.kernel_size, self.stride, self.padding, self.dilation,\n",
         "            *(v.astype(np.int64) for v in (self.kernel_size, self.stride, self.padding, self.dilation)),\n",
         1),
        ("            self.groups[0]\n", "            int(self.groups[0])\n", 1),
        # Conv's fixed_pt model has a ``weight_exp`` Var but ignores it (Dense and Sparse shift
        # their sums by it, as Loihi does): the sum is shifted the same way before the 24-bit clamp.
        ("        return utils.signed_clamp(x, bits=24)\n",
         "        return utils.signed_clamp(np.left_shift(x, int(self.weight_exp.flat[0])) if self.weight_exp.flat[0] > 0"
         " else np.right_shift(x, -int(self.weight_exp.flat[0])), bits=24)\n", 1),
    ),
}
_EDITS = PATCHES[TARGET_MODULE]


def _lava_version() -> str | None:
    try:
        return importlib.metadata.version("lava-nc")
    except importlib.metadata.PackageNotFoundError:
        return None


def patch_var_model_source(source: str) -> str:
    """Return var_model.py's source with the mutable dataclass defaults made factories."""
    return patch_source(TARGET_MODULE, source)


def patch_source(module: str, source: str) -> str:
    """Return ``module``'s source with the edits of ``PATCHES[module]`` applied.

    Raises ``ImportError`` naming the installed lava-nc version if the source does not contain
    exactly the text lava-nc 0.10.0 ships (lava changed: this shim must be revisited).
    """
    for old, new, count in PATCHES[module]:
        found = source.count(old)
        if found != count:
            raise ImportError(
                f"htakl_deploy.hw.lava_compat: cannot patch {module} of lava-nc "
                f"{_lava_version()}: expected {count} occurrence(s) of {old.strip()!r} "
                f"(as in lava-nc {LAVA_VERSION}), found {found}. The installed lava-nc "
                f"differs from the one this shim was written for; install "
                f"lava-nc=={LAVA_VERSION} or update the shim."
            )
        source = source.replace(old, new)
    return source


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    """Loads a patched module from its source with the fix applied; never uses bytecode caches."""

    def get_code(self, fullname: str):
        source = self.get_data(self.path).decode("utf-8")
        return compile(patch_source(fullname, source), self.path, "exec", dont_inherit=True)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    """Answers only for the modules in ``PATCHES``; every other import passes through."""

    # Recognised by this attribute, not by class identity, so that a reload of this module
    # does not install a second finder.
    htakl_lava_compat = True

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        if not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            raise ImportError(
                f"htakl_deploy.hw.lava_compat: {fullname} of lava-nc {_lava_version()} is "
                f"not a plain source file ({spec.origin}); cannot apply the compatibility fix."
            )
        spec.loader = _PatchingLoader(fullname, spec.origin)
        return spec


def hook_installed() -> bool:
    """True if the var_model finder is on ``sys.meta_path``."""
    return any(getattr(f, "htakl_lava_compat", False) for f in sys.meta_path)


def ensure_lava() -> None:
    """Make ``import lava...`` work on this Python; call before importing any lava module.

    Idempotent: the finder is installed once, later calls only re-check that lava-nc is
    installed. Raises ``UserError`` with the install command if lava-nc is missing.
    """
    if _lava_version() is None:
        raise UserError(f"lava-nc is not installed; install it with: {INSTALL_HINT}")
    if not hook_installed():
        sys.meta_path.insert(0, _VarModelFinder())
    die_with_parent()
    _import_lava_multiprocessing()


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_DIE_WITH_PARENT: dict[str, int] = {}


def die_with_parent() -> bool:
    """Make every child this process forks from now on die (SIGKILL) when its parent dies.

    Lava's runtime forks one child per process of the network, its runtime service and a
    shared-memory manager; a tool killed by SIGKILL (or SIGTERM/SIGHUP, whose default action
    skips every ``finally``) left them all running under PID 1. ``os.register_at_fork`` runs,
    in each forked child, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` — the kernel then kills the child
    when the thread that forked it exits, and the child's own children the same way — and exits
    at once if the parent is already gone. multiprocessing's resource tracker (started by
    fork + exec, without these hooks) exits by itself when the last process holding its pipe
    is gone. Linux only (returns False elsewhere); installed once per process.
    """
    if "installed" in _DIE_WITH_PARENT:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)

    def before() -> None:
        _DIE_WITH_PARENT["parent"] = os.getpid()

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _DIE_WITH_PARENT.get("parent"):
            os._exit(1)  # the parent died between fork and prctl

    os.register_at_fork(before=before, after_in_child=in_child)
    _DIE_WITH_PARENT["installed"] = 1
    return True


LAVA_MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"


def _import_lava_multiprocessing() -> None:
    """Import Lava's runtime module that calls ``set_start_method('fork')``, tolerating a
    start method that is already ``fork`` (see the module docstring)."""
    if LAVA_MP_MODULE in sys.modules:
        return
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None:
        importlib.import_module(LAVA_MP_MODULE)
        return
    if current != "fork":
        raise UserError(
            f"lava-nc runs its processes with the 'fork' start method, but this process already "
            f"uses {current!r}; do not set a multiprocessing start method before running Lava"
        )
    original = multiprocessing.set_start_method

    def keep_fork(method, force=False):
        if method != "fork" or force:
            original(method, force=force)

    multiprocessing.set_start_method = keep_fork
    try:
        importlib.import_module(LAVA_MP_MODULE)
    finally:
        multiprocessing.set_start_method = original
