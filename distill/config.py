"""One validated configuration object per training run.

Resolution order (later wins): dataclass defaults → data-set defaults (epochs) → ``--config FILE``
(TOML or YAML) → command-line flags. The resolved config is saved in every run directory.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from htakl_deploy.distill.data import DATASETS, ENCODINGS
from htakl_deploy.distill.device import DEVICE_HINT, is_device_spec
from htakl_deploy.distill.losses import LossConfig, LossConfigError
from htakl_deploy.distill.methods import LOSSES
from htakl_deploy.distill.models import ARCHS
from htakl_deploy.errors import UserError

SCHEDULES = ("cosine", "constant")
CAM_CLASSES = ("label", "pred")
ALLOWED_TIMESTEPS_HINT = "the paper uses T in {1, 2, 4, 6}"

#: Epoch budgets per data set when none is given. The paper trains CIFAR for 300 epochs; the
#: small data sets converge much sooner on a 2-core CPU (see README for measured accuracies).
DEFAULT_EPOCHS = {"digits": 80, "fashion-mnist": 15, "cifar10": 300, "cifar100": 300, "image-folder": 100}
DEFAULT_TEACHER_EPOCHS = {"digits": 30, "fashion-mnist": 10, "cifar10": 200, "cifar100": 200, "image-folder": 60}


@dataclass(frozen=True)
class DistillConfig:
    """Everything a distillation (or teacher) run depends on. Invalid values raise ``UserError``."""

    # data
    data: str = "digits"
    data_root: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    encoding: str = "direct"
    # model
    model: str = "convnet"
    timesteps: int = 4
    neuron_tau: float = 2.0
    v_threshold: float = 1.0
    # method (loss settings take their defaults from LossConfig, which validates them)
    method: str = "hta-kl"
    temperature: float = LossConfig.temperature
    alpha: float = LossConfig.alpha
    delta: float = LossConfig.delta
    head_weight: float = LossConfig.head_weight
    tau_squared: bool = LossConfig.tau_squared
    student_average: str = LossConfig.student_average
    # ckdsnn (CKDSNN, arXiv:2511.06902)
    nld_lambda: float = LossConfig.nld_lambda
    nld_temperature: float = LossConfig.nld_temperature
    samd_temperature: float = LossConfig.samd_temperature
    ckdsnn_beta: float = LossConfig.ckdsnn_beta
    ckdsnn_gamma: float = LossConfig.ckdsnn_gamma
    samd_cam_class: str = "label"
    # seal (SeAl-KD, arXiv:2605.14252)
    seal_alpha: float = LossConfig.seal_alpha
    seal_beta: float = LossConfig.seal_beta
    seal_temperature: float = LossConfig.seal_temperature
    seal_sta_detach: bool = LossConfig.seal_sta_detach
    # kdsnn
    kdsnn_feature_weight: float = LossConfig.kdsnn_feature_weight
    kdsnn_stage: str = LossConfig.kdsnn_stage
    # lasnn
    lasnn_beta: float = LossConfig.lasnn_beta
    lasnn_p: float = LossConfig.lasnn_p
    # bkdsnn
    bkdsnn_alpha: float = LossConfig.bkdsnn_alpha
    bkdsnn_mask_ratio: float = LossConfig.bkdsnn_mask_ratio
    bkdsnn_stage: str = LossConfig.bkdsnn_stage
    # optimisation (the paper's recipe)
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    # teacher
    teacher: str | None = None
    teacher_epochs: int | None = None
    # run
    seed: int = 0
    deterministic: bool = True
    device: str = "cpu"
    out_dir: str = "runs"
    run_name: str | None = None
    checkpoint_every: int = 0
    checkpoint_activations: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(flag: str, value: Any, expected: str) -> UserError:
            return UserError(f"--{flag.replace('_', '-')}: got {value!r}, expected {expected}")

        if self.data not in DATASETS:
            raise bad("data", self.data, f"one of {', '.join(sorted(DATASETS))}")
        if self.model not in ARCHS:
            raise bad("model", self.model, f"one of {', '.join(sorted(ARCHS))}")
        if self.method not in LOSSES:
            raise bad("method", self.method, f"one of {', '.join(sorted(LOSSES))}")
        if self.encoding not in ENCODINGS:
            raise bad("encoding", self.encoding, f"one of {', '.join(ENCODINGS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise bad("timesteps", self.timesteps, f"an integer >= 1 ({ALLOWED_TIMESTEPS_HINT})")
        for name in ("epochs", "teacher_epochs", "limit_train", "limit_test"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise bad(name, v, "an integer >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "an integer >= 1")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise bad("checkpoint_every", self.checkpoint_every, "an integer >= 0 (0 = once per epoch)")
        for name in ("lr", "neuron_tau", "v_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, v, "a positive number")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise bad(name, v, "a number >= 0")
        if not is_device_spec(self.device):
            raise bad("device", self.device, DEVICE_HINT)
        if self.samd_cam_class not in CAM_CLASSES:
            raise bad("samd_cam_class", self.samd_cam_class, f"one of {', '.join(CAM_CLASSES)}")
        if self.neuron_tau <= 1.0:
            raise bad("neuron_tau", self.neuron_tau, "a number > 1 (LIF decay 1/τ must be < 1)")
        try:
            self.loss_config()
        except LossConfigError as exc:  # loss settings are validated once, by LossConfig
            raise bad(exc.field, exc.value, exc.expected) from None

    # ------------------------------------------------------------ derived values
    def loss_config(self) -> LossConfig:
        """The loss hyper-parameters: every ``LossConfig`` field, taken from this config."""
        return LossConfig(**{f.name: getattr(self, f.name) for f in fields(LossConfig)})

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.data]

    @property
    def resolved_teacher_epochs(self) -> int:
        if self.teacher_epochs is not None:
            return self.teacher_epochs
        return DEFAULT_TEACHER_EPOCHS[self.data]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "DistillConfig":
        return dataclasses.replace(self, **changes)


FIELD_NAMES = frozenset(f.name for f in fields(DistillConfig))


def read_config_file(path: str | Path, accepted: frozenset[str] | None = None) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of config keys (dashes allowed).

    ``accepted``: the keys the command takes (default: the ``DistillConfig`` fields; ``run`` adds
    its ``PipelineConfig`` fields). An unknown key fails with the closest accepted ones."""
    from htakl_deploy.runconfig import PIPELINE_FIELDS, unknown_key_message

    accepted = FIELD_NAMES if accepted is None else accepted
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        else:
            raise UserError(f"--config: {path}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"--config: {path}: not valid {path.suffix[1:].upper()}: {first}") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config: {path}: expected a table of keys, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in accepted:
            if name in PIPELINE_FIELDS:
                raise UserError(f"--config: {path}: {key!r} is a setting of `htakl-deploy run`, not of this command")
            raise UserError(unknown_key_message(key, accepted, f"--config: {path}"))
        out[name] = value
    return out


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> DistillConfig:
    """Defaults ← file ← flags (flags that were not given are ``None`` and do not override)."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    try:
        return DistillConfig(**merged)
    except TypeError as exc:  # a value of the wrong type deep inside a comparison
        raise UserError(f"config: {exc}") from None


def config_from_dict(values: dict[str, Any]) -> DistillConfig:
    """Rebuild a saved config (``config.json`` of a run directory)."""
    unknown = set(values) - FIELD_NAMES
    if unknown:
        raise UserError(f"saved config has unknown keys {sorted(unknown)}")
    return DistillConfig(**values)
