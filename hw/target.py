"""Neuromorphic hardware targets as data: per-core/per-chip limits and per-operation costs.

A target is a TOML file (``hw/targets/<name>.toml``, package data: ``loihi1``, ``loihi2``; or a
user file with the same keys) read into the frozen ``Target`` dataclass, validated on load:

- every number is finite; limits (``*_per_core``, ``*_bits``, ``cores_*``, ...) are integers
  in 1..2⁴⁰ (far above any chip; they are written to JSON and multiplied together as int64); the
  storage format's switches and counts (``FORMAT_KEYS``) integers in 0..2⁴⁰; energies
  (``e_*_pj``), times (``t_*_ns``) and the static power per chip (``p_static_w``) are in 0..10⁹
  (0 = not modelled);
- an optional ``[calibration]`` table: the measured run the costs were fitted on and our model's
  activity for it (``hw.map_estimate`` derives the estimates' error bars from it);
- ``[sources]`` gives a source for every number, and ``unpublished`` lists the numbers the
  maker has not published (assumptions the user may override);
- unknown keys and missing keys are refused, naming them.

``--set KEY=VALUE`` (``with_overrides``) replaces single numbers; the key is then marked
``user-set`` in the sources.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

from htakl_deploy.errors import UserError

LIMIT_KEYS = ("neurons_per_core", "neuron_groups_per_core", "synapse_memory_bits_per_core", "synapse_word_bits",
              "synapses_per_entry", "entry_header_bits", "weight_bits", "index_bits_min", "input_axons_per_core",
              "output_axons_per_core", "cores_per_tile", "mesh_tiles_x", "cores_per_chip", "chips_per_board")
# how synapses and axons are stored (integers >= 0; 0/1 switches), see hw/map_geom.py
FORMAT_KEYS = ("dense_format", "adaptive_weight_bits", "conv_shared_kernels", "conv_x_stride_bits",
               "axon_per_destination_core", "skip_zero_weights")
COST_KEYS = ("e_synop_pj", "e_neuron_update_pj", "e_spike_within_tile_pj", "e_tile_hop_pj", "e_barrier_pj",
             "t_synop_ns", "t_neuron_update_ns", "t_spike_within_tile_ns", "t_tile_hop_ns", "t_barrier_ns",
             "p_static_w")
NUMBER_KEYS = LIMIT_KEYS + FORMAT_KEYS + COST_KEYS
# [calibration] (optional): one measured run the costs were fitted on, and our model's activity for
# it (hw/map_estimate.py turns it into error bars); every entry a finite number >= 0 except 'source'
CALIBRATION_KEYS = ("steps_per_frame", "step_ns", "dynamic_pj_per_step", "static_w_low", "static_w_high",
                    "synops_per_step", "neuron_updates_per_step", "busiest_core_synops", "busiest_core_neurons")
MAX_LIMIT = 2**40  # far above any chip; limits are written to JSON and multiplied together as int64
MAX_COST = 1e9


@dataclass(frozen=True)
class Target:
    """One chip family: what a core holds and what an operation costs (see the TOML files)."""

    name: str
    title: str
    neurons_per_core: int
    neuron_groups_per_core: int
    synapse_memory_bits_per_core: int
    synapse_word_bits: int
    synapses_per_entry: int
    entry_header_bits: int
    weight_bits: int
    index_bits_min: int
    input_axons_per_core: int
    output_axons_per_core: int
    cores_per_tile: int
    mesh_tiles_x: int
    cores_per_chip: int
    chips_per_board: int
    dense_format: int
    adaptive_weight_bits: int
    conv_shared_kernels: int
    conv_x_stride_bits: int
    axon_per_destination_core: int
    skip_zero_weights: int
    e_synop_pj: float
    e_neuron_update_pj: float
    e_spike_within_tile_pj: float
    e_tile_hop_pj: float
    e_barrier_pj: float
    t_synop_ns: float
    t_neuron_update_ns: float
    t_spike_within_tile_ns: float
    t_tile_hop_ns: float
    t_barrier_ns: float
    p_static_w: float
    sources: dict = field(default_factory=dict)
    unpublished: tuple = ()
    notes: str = ""
    calibration: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("name", "title", "notes"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key!r} must be a string")
        if not self.name:
            raise ValueError("'name' must not be empty")
        for key in LIMIT_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LIMIT:
                raise ValueError(f"{key!r} must be an integer in 1..2^40, got {v!r}")
        for key in FORMAT_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_LIMIT:
                raise ValueError(f"{key!r} must be an integer in 0..2^40, got {v!r}")
        for key in COST_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= MAX_COST:
                raise ValueError(f"{key!r} must be a number in 0..1e9, got {v!r}")
            object.__setattr__(self, key, float(v))
        if not isinstance(self.sources, dict) or not all(isinstance(v, str) and v for v in self.sources.values()):
            raise ValueError("[sources] must map every number's key to a non-empty string")
        missing = [k for k in NUMBER_KEYS if k not in self.sources]
        extra = sorted(set(self.sources) - set(NUMBER_KEYS))
        if missing or extra:
            raise ValueError(f"[sources] must name a source for every number: missing {missing}, unknown {extra}")
        object.__setattr__(self, "unpublished", tuple(self.unpublished))
        bad = [k for k in self.unpublished if k not in NUMBER_KEYS]
        if bad:
            raise ValueError(f"'unpublished' lists unknown key(s) {bad}")
        if self.weight_bits > self.synapse_word_bits or self.entry_header_bits >= self.synapse_word_bits:
            raise ValueError("a synapse word must hold an entry header and a weight")
        if self.cores_per_chip % self.cores_per_tile:
            raise ValueError("'cores_per_chip' must be a multiple of 'cores_per_tile'")
        cal = self.calibration
        if not isinstance(cal, dict):
            raise ValueError("[calibration] must be a table")
        if cal:
            unknown = sorted(set(cal) - set(CALIBRATION_KEYS) - {"source"})
            missing = [k for k in CALIBRATION_KEYS if k not in cal]
            if unknown or missing or not isinstance(cal.get("source"), str) or not cal["source"]:
                raise ValueError(f"[calibration] needs a 'source' and every one of {list(CALIBRATION_KEYS)}: "
                                 f"missing {missing + ([] if isinstance(cal.get('source'), str) else ['source'])}, "
                                 f"unknown {unknown}")
            for k in CALIBRATION_KEYS:
                v = cal[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise ValueError(f"[calibration] {k!r} must be a finite number > 0, got {v!r}")

    @property
    def index_bits(self) -> int:
        """Sparse-format index field: enough bits to address every neuron of a core."""
        return max(self.index_bits_min, math.ceil(math.log2(self.neurons_per_core)))

    @property
    def tiles_per_chip(self) -> int:
        return self.cores_per_chip // self.cores_per_tile

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unpublished"] = list(self.unpublished)
        return d

    def with_overrides(self, pairs: list[str]) -> "Target":
        """``KEY=VALUE`` strings applied on top (UserError naming a bad one)."""
        changes, sources = {}, dict(self.sources)
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or key not in NUMBER_KEYS:
                raise UserError(f"--set: got {pair!r}, expected KEY=VALUE with KEY one of {', '.join(NUMBER_KEYS)}")
            changes[key] = _parse_number(key, value)
            sources[key] = f"user-set (--set {key}={value.strip()})"
        try:
            # a user-set cost no longer matches the measured run: no error bars from it
            cal = {} if set(changes) & set(COST_KEYS) else self.calibration
            return replace(self, **changes, sources=sources, calibration=cal,
                           unpublished=tuple(k for k in self.unpublished if k not in changes))
        except ValueError as e:
            raise UserError(f"--set: {e}") from None


def _parse_number(key: str, value: str) -> int | float:
    """``--set KEY=VALUE``'s value: an integer for a limit, a number for a cost; the message says which."""
    value = value.strip()
    if key in LIMIT_KEYS + FORMAT_KEYS:
        bounds = "1..2^40" if key in LIMIT_KEYS else "0..2^40"
        try:
            return int(value)
        except ValueError:
            pass
        try:
            as_float = float(value)
        except ValueError:
            raise UserError(f"--set {key}: {value!r} is not a number (expected an integer in {bounds})") from None
        raise UserError(f"--set {key}: got {as_float:g}, expected an integer in {bounds} (a count)")
    try:
        return float(value)
    except ValueError:
        raise UserError(f"--set {key}: {value!r} is not a number (expected a number in 0..1e9)") from None


def _target_dir():
    return resources.files("htakl_deploy.hw") / "targets"


def target_names() -> list[str]:
    return sorted(p.name[:-5] for p in _target_dir().iterdir() if p.name.endswith(".toml"))


def target_from_dict(data: dict, *, default_name: str) -> Target:
    """Strict: unknown or missing keys raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError("expected one TOML table")
    known = {f.name for f in fields(Target)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}")
    missing = [k for k in NUMBER_KEYS + ("sources",) if k not in data]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    return Target(**{"name": default_name, "title": default_name, **data})


def load_target(name_or_path: str | os.PathLike, flag: str = "--target") -> Target:
    """A shipped target by name (``loihi2``) or a ``.toml`` file; UserError on anything invalid."""
    s = str(name_or_path)
    if s in target_names():
        text, where, stem = (_target_dir() / f"{s}.toml").read_text(encoding="utf-8"), f"target {s}", s
    elif s.endswith(".toml"):
        p = Path(s)
        from htakl_deploy.readers import check_text_size

        check_text_size(p, flag, "target file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{flag} {p}: cannot read it ({e.strerror if isinstance(e, OSError) else e})") from None
        where, stem = f"{flag} {p}", p.stem
    else:
        raise UserError(f"{flag}: got {s!r}, expected one of {', '.join(target_names())} or a .toml file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where}: not valid TOML: {e}") from None
    try:
        return target_from_dict(data, default_name=stem)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: invalid hardware target: {e}") from None
