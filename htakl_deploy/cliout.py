"""What a subcommand prints on stdout: a short human summary by default, or its result as JSON
with ``--json`` (the same convention as ``run`` and ``compare``; ``energy`` and ``map`` differ: their
``--json OUT`` writes the result to a file)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Iterable


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON on stdout instead of a short summary")


def emit(result: dict[str, Any], as_json: bool, lines: Iterable[str]) -> None:
    """Print ``result`` as JSON (``--json``) or the human ``lines``."""
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)


def pct(acc: float | None, samples: int | None = None) -> str:
    """``93.1 % (of 360 images)``; ``n/a`` for a missing accuracy."""
    if acc is None:
        return "n/a"
    return f"{100 * acc:.1f} %" + (f" (of {samples} images)" if samples is not None else "")
