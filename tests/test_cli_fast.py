"""`htakl-deploy --help` / `--version` answer without importing torch; every command keeps its help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from htakl_deploy.cli import COMMANDS, build_parser

PROBE = """
import sys
from htakl_deploy.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "numpy", "lava", "spikingjelly", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_do_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "HEAVY []", out
    assert ("usage: htakl-deploy" in out) or ("htakl-deploy 0." in out)


def test_the_fast_summaries_are_the_commands_own():
    full = build_parser()
    sub = next(a for a in full._actions if a.dest == "command")
    real = {a.dest: a.help for a in sub._choices_actions}
    assert real == {name: summary for name, (_, summary) in COMMANDS.items()}


def test_a_command_parses_the_same_with_the_lazy_parser():
    argv = ["run", "--no-lava", "--epochs", "3", "--backends", "emulator"]
    lazy, full = build_parser(argv).parse_args(argv), build_parser().parse_args(argv)
    assert {k: v for k, v in vars(lazy).items() if k != "handler"} == {k: v for k, v in vars(full).items()
                                                                       if k != "handler"}
    assert lazy.lava is False and lazy.backends == ["emulator"] and lazy.epochs == 3
