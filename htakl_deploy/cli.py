"""``htakl-deploy``: the command-line entry point. It only parses and dispatches.

Exit codes: 0 success; 1 a grid finished with failed cells (each named on stderr with its log);
2 a user mistake (bad flag, file, data or checkpoint — one line on stderr, no traceback) or a write
the disk refused (full, quota, I/O error); 3 training diverged (NaN/inf loss; last good checkpoint
kept); 130 interrupted (Ctrl-C); 143 / 129 stopped by SIGTERM / SIGHUP (both end the command like
Ctrl-C does, so temporary files and folders are removed).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from htakl_deploy import __version__
from htakl_deploy.errors import Terminated, TrainingDiverged, UserError

PROG = "htakl-deploy"

#: what Ctrl-C tells the user, per command (a command not listed gets no advice)
INTERRUPTED_HINT = {
    "distill": f"continue the run with `{PROG} distill --resume RUN_DIR`",
    "train-teacher": f"continue the run with `{PROG} train-teacher --resume RUN_DIR`",
    "run": f"continue the run with `{PROG} run --resume RUN_DIR`",
    "export": "files already written are complete (atomic writes); run the same command again",
    "simulate": "files already written are complete (atomic writes); run the same command again",
    "energy": "run the same command again",
    "report": "run the same command again",
    "map": "run the same command again",
    "compare": "run the same command again",
}


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one line, ``htakl-deploy: error: ...``, exit 2 (the
    usage block argparse prints would make it several lines; the line points at ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog if self.prog != PROG else PROG
        hint = f"see `{where} --help`"
        message = " ".join(message.split())  # argparse may wrap a message over lines
        self.exit(2, f"{PROG}: error: {message} ({hint})\n")


#: subcommand → (module under ``htakl_deploy``, the one-line help of ``htakl-deploy --help``).
#: Only the module of the command being run is imported — most of them import torch — so
#: ``--help`` and ``--version`` answer in a fraction of a second (tests/test_cli_fast.py checks
#: that the summaries equal the modules' own).
COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("cmd_distill", "train an SNN student from an ANN teacher (HTA-KL and baselines)"),
    "train-teacher": ("cmd_distill", "train only the ANN teacher (the student's ReLU twin)"),
    "export": ("cmd_export", "fold BN, quantise to Loihi fixed point, write NIR / ONNX / Lava"),
    "simulate": ("cmd_simulate", "run the exported network in Lava or the bit-exact emulator, record spikes"),
    "energy": ("cmd_energy", "count ACs/MACs of recorded spikes and price them with an energy model"),
    "map": ("cmd_map", "partition the exported network onto Loihi neurocores; latency and energy estimate"),
    "report": ("cmd_report", "write report.md / report.html / report.json for a run directory"),
    "run": ("cmd_run", "the whole pipeline: distil, export, simulate in Lava, count energy, report"),
    "compare": ("cmd_compare", "several runs side by side: accuracy, firing rate, ACs, energy, training time"),
}


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named command's module is imported and registered in
    full (the others are one-line entries), without it every command is registered in full."""
    import importlib

    parser = Parser(
        prog=PROG,
        description="Distil spiking neural networks with HTA-KL and deploy them to Loihi-style hardware.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else _command_in(argv)
    full = {m for name, (m, _) in COMMANDS.items() if argv is None or name == chosen}
    done: set[str] = set()
    for name, (module, summary) in COMMANDS.items():
        if module in full:
            if module not in done:
                importlib.import_module(f"htakl_deploy.{module}").register(sub)
                done.add(module)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    from htakl_deploy.cliout import old_json_spelling

    argv = sys.argv[1:] if argv is None else list(argv)
    old = old_json_spelling(argv)
    if old is not None:  # energy's and map's `--json FILE` before --json meant the same everywhere
        chosen = _command_in(argv)
        print(f"{PROG}: error: {old} (see `{PROG}{' ' + chosen if chosen in COMMANDS else ''} --help`)",
              file=sys.stderr)
        return 2
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a bad command line (2)
        return exc.code if isinstance(exc.code, int) else 2
    old = _catch_termination()
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"{PROG}: training stopped: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # a write refused by the disk that no writer named (each names its file)
        from htakl_deploy.atomic import DISK_ERRNOS, write_error

        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"{PROG}: error: {write_error(exc.filename or '(a file)', exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        hint = INTERRUPTED_HINT.get(args.command)
        if isinstance(exc, Terminated):
            print(f"{PROG}: stopped by {signal.Signals(exc.signum).name}" + (f"; {hint}" if hint else ""),
                  file=sys.stderr)
            return 128 + exc.signum
        print(f"{PROG}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _catch_termination() -> dict:
    """SIGTERM and SIGHUP raise ``Terminated`` (see errors.py) while a command runs; the previous
    handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
