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


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)])
def test_help_and_version_do_not_import_torch(argv):
    """Every subcommand's --help too (`run --help` imported torch: ~3 s); bench/cli_help.py times them."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "HEAVY []", out
    assert ("usage: htakl-deploy" in out) or ("htakl-deploy 0." in out)


def _options(name: str) -> dict[str, object]:
    parser = build_parser([name, "--help"])
    sub = next(a for a in parser._actions if a.dest == "command")
    return {opt: action for action in sub.choices[name]._actions for opt in action.option_strings
            if action.help != "==SUPPRESS=="}


@pytest.mark.parametrize("name", COMMANDS)
def test_json_means_the_same_in_every_subcommand(name):
    """`--json` is a switch everywhere (it was a file name in energy and map), `--json-out FILE`
    writes the JSON to a file."""
    import argparse

    opts = _options(name)
    assert isinstance(opts["--json"], argparse._StoreTrueAction), name
    assert opts["--json-out"].metavar == "FILE" and opts["--json-out"].nargs is None, name


@pytest.mark.parametrize("argv", [["energy", "s.h5", "--graph", "g.nir", "--json", "e.json"],
                                  ["map", "runs/demo", "--json", "m.json"], ["map", "--json=m.json", "runs/demo"],
                                  ["simulate", "runs/demo", "--json", "out.JSON"]])
def test_the_old_json_file_spelling_is_refused_with_a_hint(argv, capsys, tmp_path, monkeypatch):
    from htakl_deploy.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("htakl-deploy: error: --json is a switch"), err
    assert f"give --json-out {argv[-1] if argv[-2] == '--json' else 'm.json'}" in err
    assert f"see `htakl-deploy {argv[0]} --help`" in err
    assert not any(tmp_path.iterdir())


def test_train_teacher_offers_only_the_teachers_flags(capsys):
    """train-teacher's --epochs is the teacher's; no student flag is listed, and one given is refused
    with a hint (it was accepted and ignored: `train-teacher --epochs 1` trained the 10-epoch default)."""
    from htakl_deploy.cli import main
    from htakl_deploy.distill.config import TEACHER_FIELDS

    opts = _options("train-teacher")
    student_only = ["--method", "--timesteps", "--encoding", "--neuron-tau", "--v-threshold", "--alpha",
                    "--temperature", "--delta", "--teacher", "--teacher-epochs", "--seal-alpha", "--no-tau-squared"]
    assert not set(student_only) & set(opts)
    assert opts["--epochs"].dest == "teacher_epochs"
    flags = {o for o in opts if o.startswith("--") and not o.startswith("--no-")}
    assert flags == {"--help", "--config", "--resume", "--json", "--json-out", "--epochs",
                     *("--" + f.replace("_", "-") for f in TEACHER_FIELDS if f != "teacher_epochs")}
    assert main(["train-teacher", "--help"]) == 0
    shown = capsys.readouterr().out.split("examples:")[0]  # the usage and the options (the epilog may name distill's)
    assert "--epochs N" in shown and "training epochs of the teacher" in shown
    assert not [flag for flag in student_only if f"{flag} " in shown or f"{flag}]" in shown or f"{flag}\n" in shown]
    for argv, said in ((["--method", "kd"], "--method is a setting of the student's training"),
                       (["--teacher-epochs", "3"], "--teacher-epochs is distill's and run's spelling; here the "
                                                   "teacher's epochs are set with --epochs")):
        assert main(["train-teacher", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err


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
