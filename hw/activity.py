"""Silence is an error: a deployed network, or a layer of it, that never spikes on the inputs it ran.

A network that never spikes agrees with anything spike for spike, and its decisions agree too (every
logit is the bias), so every agreement line over it would pass as success. The usual cause is a
wrong time step: Sinabs writes ``IF r = 1`` meaning one unit per step, and read with the default
``--dt 1e-4`` every first-layer weight rounds to 0. ``silence`` names what never spiked, in one
sentence for a warning (``export``, ``simulate``, ``run``) or, with ``--strict``, an error.
"""

from __future__ import annotations

import numpy as np

from htakl_deploy.errors import UserError


def spike_counts(spikes: dict[str, np.ndarray]) -> dict[str, int]:
    """Spikes per layer (``[T, B, ...]`` arrays, or counts already summed)."""
    return {k: int(np.count_nonzero(v) if v.dtype == bool else np.asarray(v).sum()) for k, v in spikes.items()}


def silence(counts: dict[str, int], where: str) -> str | None:
    """One sentence naming the layers that never spiked ``where`` (e.g. "on 4 samples of x.npy"), or
    None when every layer spiked."""
    silent = [k for k, n in counts.items() if n == 0]
    if not silent:
        return None
    if len(silent) == len(counts):
        return (f"the deployed network never spikes {where}: every layer is silent, so any agreement over it "
                "compares nothing (a wrong --dt is the usual cause: e.g. Sinabs writes IF r = 1 per step, "
                "deploy it with --dt 1)")
    names = ", ".join(repr(k) for k in silent)
    return f"layer{'s' if len(silent) > 1 else ''} {names} never spike{'' if len(silent) > 1 else 's'} {where}"


def check_silence(counts: dict[str, int], where: str, strict: bool) -> list[str]:
    """The silence warning as a list (empty if every layer spiked); with ``strict`` a UserError."""
    line = silence(counts, where)
    if line is None:
        return []
    if strict:
        raise UserError(f"--strict: {line}")
    return [line]
