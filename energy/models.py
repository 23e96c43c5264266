"""Energy models as data: a validated dataclass, presets shipped as TOML, user TOML/JSON files.

    E = ACs·e_ac_pj + MACs·e_mac_pj + neuron_updates·e_neuron_update_pj + spikes·e_spike_pj

Presets live in ``energy/presets/<name>.toml`` (package data): ``paper-45nm``,
``horowitz-int8``, ``loihi1``; each file says where its numbers come from (``source``) and
how ACs/MACs map onto the hardware's primitive costs (``notes`` and comments). A user file has
the same keys (TOML or JSON, one flat table):

    source = "..."        required, where the numbers come from
    e_ac_pj = 0.9         required, pJ per accumulate (a spike reaching a synapse)
    e_mac_pj = 4.6        required, pJ per multiply-accumulate (a graded input)
    e_neuron_update_pj    optional (0), pJ per LIF neuron per timestep
    e_spike_pj            optional (0), pJ per emitted spike
    name                  optional (the file's stem)
    notes                 optional
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from htakl_deploy.errors import UserError

_ENERGY_KEYS = ("e_ac_pj", "e_mac_pj", "e_neuron_update_pj", "e_spike_pj")
_REQUIRED = ("source", "e_ac_pj", "e_mac_pj")
#: no digital operation costs a microjoule (45 nm: ~1 pJ; Loihi: ~24 pJ per synaptic op); a
#: larger figure is a unit mistake (J or nJ for pJ), refused rather than reported
MAX_PJ = 1e6


@dataclass(frozen=True)
class EnergyModel:
    """Energies per operation in picojoules; ``ValueError`` naming the key if one is invalid."""

    name: str
    source: str
    e_ac_pj: float
    e_mac_pj: float
    e_neuron_update_pj: float = 0.0
    e_spike_pj: float = 0.0
    notes: str = ""

    def __post_init__(self):
        for key in ("name", "source", "notes"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key!r} must be a string, got {getattr(self, key)!r}")
        if not self.name or not self.source:
            raise ValueError("'name' and 'source' must not be empty")
        for key in _ENERGY_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{key!r} must be a number (pJ), got {v!r}")
            if not math.isfinite(v) or v < 0 or v > MAX_PJ:
                raise ValueError(f"{key!r} must be a finite energy in 0..{MAX_PJ:g} pJ, got {v!r}")
            object.__setattr__(self, key, float(v))

    @classmethod
    def from_dict(cls, data: dict, *, default_name: str) -> "EnergyModel":
        """Strict: unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"expected one table of keys, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} (allowed: {sorted(known)})")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        return cls(**{"name": default_name, **data})

    def to_dict(self) -> dict:
        return asdict(self)

    def energy_pj(self, *, acs=0, macs=0, neuron_updates=0, spikes=0) -> float:
        return (acs * self.e_ac_pj + macs * self.e_mac_pj
                + neuron_updates * self.e_neuron_update_pj + spikes * self.e_spike_pj)


def _preset_dir():
    return resources.files("htakl_deploy.energy") / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> EnergyModel:
    """A shipped preset by name; UserError listing the presets if there is none."""
    names = preset_names()
    if name not in names:
        raise UserError(f"--preset: got {name!r}, expected one of {', '.join(names)}")
    text = (_preset_dir() / f"{name}.toml").read_text(encoding="utf-8")
    return _from_text(text, f"preset {name}", "toml", name)


def load_energy_model(path: str | os.PathLike) -> EnergyModel:
    """A user energy model from a ``.toml`` or ``.json`` file; UserError naming file and key."""
    p = Path(path)
    if p.suffix.lower() not in (".toml", ".json"):
        raise UserError(f"{p}: energy model must be a .toml or .json file")
    from htakl_deploy.readers import check_text_size

    check_text_size(p, "--energy-model", "energy model file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read energy model: {e.strerror if isinstance(e, OSError) else e}") from None
    return _from_text(text, str(p), p.suffix.lower()[1:], p.stem)


def _from_text(text: str, where: str, kind: str, default_name: str) -> EnergyModel:
    try:
        data = tomllib.loads(text) if kind == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: not valid {kind.upper()}: {e}") from None
    try:
        return EnergyModel.from_dict(data, default_name=default_name)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: invalid energy model: {e}") from None
