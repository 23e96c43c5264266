"""What a subcommand prints on stdout, the same way in every subcommand: a short human summary by
default; ``--json`` (a switch) prints the result as JSON instead; ``--json-out FILE`` also writes it
to FILE (atomically, checked before any work). The old ``--json FILE`` spelling of ``energy`` and
``map`` is refused with a hint (``old_json_spelling``, called by ``cli.main``)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Iterable

JSON_HELP = "print {what} as JSON on stdout instead of a short summary"
JSON_OUT_HELP = "also write {what} as JSON to FILE (atomically)"


def add_json_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "the result") -> None:
    """``--json`` and ``--json-out FILE``, as every subcommand has them."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP.format(what=what))
    parser.add_argument("--json-out", metavar="FILE", help=JSON_OUT_HELP.format(what=what))


def check_json_out(args: argparse.Namespace) -> None:
    """Refuse a ``--json-out`` path that cannot be written before any work is done."""
    if getattr(args, "json_out", None):
        from htakl_deploy.atomic import check_file_target

        check_file_target(args.json_out, "--json-out")


def emit(result: dict[str, Any], args: argparse.Namespace, lines: Iterable[str]) -> None:
    """Write ``result`` to ``--json-out``, then print it as JSON (``--json``) or the human ``lines``."""
    if getattr(args, "json_out", None):
        from htakl_deploy.atomic import write_json

        write_json(args.json_out, result)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)
        if getattr(args, "json_out", None):
            print(f"wrote {args.json_out}")


def old_json_spelling(argv: list[str]) -> str | None:
    """The one-line error for ``--json FILE`` / ``--json=FILE`` (``energy`` and ``map`` took a file
    there before ``--json`` became a switch in every subcommand), or None. A word after ``--json``
    is taken for a file when it ends in ``.json``: no subcommand takes such a positional argument."""
    for i, word in enumerate(argv):
        value = None
        if word.startswith("--json="):
            value = word.split("=", 1)[1]
        elif word == "--json" and i + 1 < len(argv) and argv[i + 1].lower().endswith(".json"):
            value = argv[i + 1]
        if value is not None:
            return (f"--json is a switch (it prints the result as JSON on stdout); to write the JSON to a file, "
                    f"give --json-out {value or 'FILE'}")
    return None


def pct(acc: float | None, samples: int | None = None) -> str:
    """``93.1 % (of 360 images)``; ``n/a`` for a missing accuracy."""
    if acc is None:
        return "n/a"
    return f"{100 * acc:.1f} %" + (f" (of {samples} images)" if samples is not None else "")
