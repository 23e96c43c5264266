"""The settings of ``htakl-deploy run`` beyond training: one validated, frozen config object.

A run's full configuration is a :class:`~htakl_deploy.distill.config.DistillConfig` (what is
trained) plus a :class:`PipelineConfig` (what happens to the trained student: export targets,
simulation backends, Lava on/off and its sample count, energy preset). Both come from the same
places — defaults ← ``--config FILE`` (TOML/YAML, one flat table holding keys of either) ← flags —
and both are saved in the run directory (``config.json`` and ``pipeline.json``), so
``run --resume`` restores them; run flags given on resume override the saved values (and the
pipeline says which).

This module imports no torch: ``--help`` and config checks stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, fields
from typing import Any, Iterable

from htakl_deploy.errors import UserError

#: simulation backends ``run`` can drive (the keys of ``hw.simulate.BACKENDS``; a test checks
#: they agree) and export targets (the keys of ``export.pipeline.TARGETS``)
SIM_BACKENDS = ("torch-float", "emulator", "lava-fixed_pt", "lava-floating_pt")
EXPORT_TARGETS = ("nir", "onnx", "lava", "netx")


@dataclass(frozen=True)
class PipelineConfig:
    """What ``run`` does after training. Invalid values raise ``UserError`` naming the flag."""

    lava: bool = True
    lava_samples: int | None = None
    lava_check: int = 4
    preset: str = "paper-45nm"
    backends: tuple[str, ...] = ("torch-float", "emulator", "lava-fixed_pt")
    export_targets: tuple[str, ...] = ("nir", "onnx", "lava")
    map_target: str | None = "loihi2"

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, expected: str) -> UserError:
            return UserError(f"--{name.replace('_', '-')}: got {value!r}, expected {expected}")

        for name, allowed in (("backends", SIM_BACKENDS), ("export_targets", EXPORT_TARGETS)):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise bad(name, value, f"a list of {', '.join(allowed)}")
            value = tuple(dict.fromkeys(value))  # lists from TOML/JSON → tuple, duplicates dropped
            for item in value:
                if item not in allowed:
                    raise bad(name, item, f"one of {', '.join(allowed)}")
            if not value:
                raise bad(name, [], f"at least one of {', '.join(allowed)}")
            object.__setattr__(self, name, value)
        if not isinstance(self.lava, bool):
            raise bad("lava", self.lava, "true or false")
        if self.lava_samples is not None and (not isinstance(self.lava_samples, int)
                                              or isinstance(self.lava_samples, bool) or self.lava_samples < 1):
            raise bad("lava_samples", self.lava_samples, "an integer >= 1")
        if not isinstance(self.lava_check, int) or isinstance(self.lava_check, bool) or self.lava_check < 0:
            raise bad("lava_check", self.lava_check, "an integer >= 0")
        if not isinstance(self.preset, str):
            raise bad("preset", self.preset, "the name of an energy preset")
        from htakl_deploy.energy.models import preset_names

        if self.preset not in preset_names():
            raise bad("preset", self.preset, f"one of {', '.join(preset_names())}")
        if self.map_target in ("none", ""):
            object.__setattr__(self, "map_target", None)
        if self.map_target is not None:
            if not isinstance(self.map_target, str):
                raise bad("map_target", self.map_target, "loihi2, loihi1, a target .toml file or none")
            from htakl_deploy.hw.target import load_target

            load_target(self.map_target, flag="--map-target")
        # what the stages need from each other
        if "nir" not in self.export_targets:
            raise bad("export_targets", list(self.export_targets),
                      "a list holding nir (the energy count reads student_quant.nir)")
        if "lava" not in self.export_targets:
            raise bad("export_targets", list(self.export_targets),
                      "a list holding lava (every simulation backend loads student.lava.npz)")

    @property
    def sim_backends(self) -> tuple[str, ...]:
        """The backends that run: ``backends`` without the Lava ones when ``lava`` is off."""
        return tuple(b for b in self.backends if self.lava or not b.startswith("lava"))

    @property
    def effective_lava_check(self) -> int:
        """Images the export runs through Lava against the emulator (0 when Lava is off)."""
        return self.lava_check if self.lava else 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)


PIPELINE_FIELDS = tuple(f.name for f in fields(PipelineConfig))


def pipeline_config_from_dict(values: dict[str, Any], where: str) -> PipelineConfig:
    """Rebuild saved settings (``pipeline.json``), naming the file on unknown keys."""
    unknown = sorted(set(values) - set(PIPELINE_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown pipeline settings {unknown}; accepted: {', '.join(PIPELINE_FIELDS)}")
    return PipelineConfig(**values)


def unknown_key_message(key: str, accepted: Iterable[str], where: str) -> str:
    """``unknown key 'lr_rate'; did you mean 'lr'?`` (or the accepted keys when nothing is close)."""
    accepted = sorted(accepted)
    norm = str(key).replace("-", "_")
    close = difflib.get_close_matches(norm, accepted, n=3, cutoff=0.6)
    if close:
        return f"{where}: unknown key {key!r}; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"{where}: unknown key {key!r}; accepted: {', '.join(accepted)}"
