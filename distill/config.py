"""One validated configuration object per training run.

Resolution order (later wins): dataclass defaults → data-set defaults (epochs) → ``--config FILE``
(TOML or YAML) → command-line flags. The resolved config is saved in every run directory.

Importing this module imports no torch (the tables a value is checked against are imported when a
config is built): ``--help`` builds the flags of distill, train-teacher and run from the fields.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from htakl_deploy.distill.lossconfig import LossConfig, LossConfigError
from htakl_deploy.errors import UserError

SCHEDULES = ("cosine", "constant")
CAM_CLASSES = ("label", "pred")
ALLOWED_TIMESTEPS_HINT = "the paper uses T in {1, 2, 4, 6}"
MAX_TIMESTEPS = 1000  # every backend holds [T, B, ...] per layer; far beyond any SNN-KD setting
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take it
MAX_INT = 2**63 - 1
_INT_RANGES = {"seed": f"an integer in 0..{MAX_SEED}"}  # fields with a narrower range than int64

#: Epoch budgets per data set when none is given. The paper trains CIFAR for 300 epochs; the
#: small data sets converge much sooner on a 2-core CPU (docs/RESULTS.md has measured accuracies).
DEFAULT_EPOCHS = {"digits": 80, "fashion-mnist": 15, "cifar10": 300, "cifar100": 300, "image-folder": 100}
DEFAULT_TEACHER_EPOCHS = {"digits": 30, "fashion-mnist": 10, "cifar10": 200, "cifar100": 200, "image-folder": 60}


class ConfigFieldError(UserError):
    """An invalid config value; names the flag (``--run-name``) unless re-raised for a file's key."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"--{field.replace('_', '-')}: got {self.shown}, expected {expected}")

    @property
    def shown(self) -> str:
        r = repr(self.value)
        return r if len(r) <= 80 else r[:77] + "..."

    def in_file(self, source: str) -> UserError:
        return UserError(f"{source}: key {self.field!r}: got {self.shown}, expected {self.expected}")


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
            return ConfigFieldError(flag, value, expected)

        from htakl_deploy.distill.data import DATASETS, ENCODINGS
        from htakl_deploy.distill.device import DEVICE_HINT, is_device_spec
        from htakl_deploy.distill.methods import LOSSES
        from htakl_deploy.distill.models import ARCHS

        # types first (a config file or a saved config.json can hold anything JSON/TOML/YAML can):
        # booleans are not integers here, integers are accepted where a float is expected
        for f in fields(self):
            v, kinds = getattr(self, f.name), _FIELD_KINDS[f.name]
            if (v is None and "None" in kinds) or kinds[0] not in _KIND_WORDS:
                continue  # (a field of another kind validates itself below)
            ok = ((kinds[0] == "bool" and isinstance(v, bool))
                  or (kinds[0] == "int" and isinstance(v, int) and not isinstance(v, bool))
                  or (kinds[0] == "float" and isinstance(v, (int, float)) and not isinstance(v, bool))
                  or (kinds[0] == "str" and isinstance(v, str)))
            if not ok:
                raise bad(f.name, v, _KIND_WORDS[kinds[0]] + (" (or absent)" if "None" in kinds else ""))
            if kinds[0] == "float" and not math.isfinite(v):
                raise bad(f.name, v, "a finite number")
            if kinds[0] == "int" and not -MAX_INT <= v <= MAX_INT:  # the field's own range when it has one
                raise bad(f.name, v, _INT_RANGES.get(f.name, f"an integer of at most {MAX_INT}"))
        if not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", self.seed, _INT_RANGES["seed"])
        if self.timesteps > MAX_TIMESTEPS:
            raise bad("timesteps", self.timesteps, f"an integer in 1..{MAX_TIMESTEPS} ({ALLOWED_TIMESTEPS_HINT})")
        for name in ("epochs", "teacher_epochs"):
            v = getattr(self, name)
            if v is not None and v > MAX_EPOCHS:
                raise bad(name, v, f"an integer in 1..{MAX_EPOCHS}")
        if self.run_name is not None:
            problem = path_component_problem(self.run_name)
            if problem:
                raise bad("run_name", self.run_name, f"a folder name inside --out-dir ({problem})")
        for name in ("out_dir", "data_root", "teacher"):
            v = getattr(self, name)
            if v is not None and (v.strip() == "" or "\0" in v):
                raise bad(name, v, "a path")
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
#: the settings an ANN teacher's training depends on (``train-teacher`` offers only these, its
#: ``--epochs`` setting ``teacher_epochs``): no time steps, neurons, encoding, method or loss (the
#: teacher sees each image once, directly, and trains with cross-entropy)
TEACHER_FIELDS = ("data", "data_root", "limit_train", "limit_test", "model", "teacher_epochs", "batch_size",
                  "lr", "momentum", "weight_decay", "schedule", "seed", "deterministic", "device", "out_dir",
                  "run_name", "checkpoint_every", "checkpoint_activations", "progress")
#: field name → ("int" | "float" | "str" | "bool", ["None"]), from the annotations
_FIELD_KINDS = {f.name: tuple(t.strip() for t in str(f.type).split("|")) for f in fields(DistillConfig)}
_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def path_component_problem(name: str) -> str | None:
    """Why ``name`` cannot be one folder name inside another folder (None if it can)."""
    if name in ("", ".", ".."):
        return "not empty, '.' or '..'"
    if "/" in name or "\\" in name or os.sep in name:
        return "no path separators"
    if any(ord(c) < 32 for c in name):
        return "no control characters"
    return None


def read_config_file(path: str | Path, accepted: frozenset[str] | None = None) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of config keys (dashes allowed).

    ``accepted``: the keys the command takes (default: the ``DistillConfig`` fields; ``run`` adds
    its ``PipelineConfig`` fields). An unknown key fails with the closest accepted ones."""
    from htakl_deploy.runconfig import PIPELINE_FIELDS, unknown_key_message

    accepted = FIELD_NAMES if accepted is None else accepted
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--config: {path} is a directory, expected a .toml or .yaml file")
    if not path.is_file():
        raise UserError(f"--config: file not found: {path}")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise UserError(f"--config: {path}: expected a .toml, .yaml or .yml file")
    from htakl_deploy.readers import check_text_size

    check_text_size(path, "--config", "config file")
    import tomllib

    import yaml  # here, not at the top: `--help` does not need them

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--config: {path} is not UTF-8 text (expected TOML or YAML)") from None
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
        if not isinstance(key, str):
            raise UserError(f"--config: {path}: key {key!r} is not a name")
        name = key.replace("-", "_")
        if name in out:
            raise UserError(f"--config: {path}: {key!r} given twice (as {name} and {key})")
        if name not in accepted:
            if name in PIPELINE_FIELDS:
                raise UserError(f"--config: {path}: {key!r} is a setting of `htakl-deploy run`, not of this command")
            raise UserError(unknown_key_message(key, accepted, f"--config: {path}"))
        out[name] = value
    return out


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any],
                 source: str = "--config") -> DistillConfig:
    """Defaults ← file ← flags (flags that were not given are ``None`` and do not override).
    A bad value that came from the file is reported as the file's key (``source``: the file)."""
    flags = {k: v for k, v in flag_values.items() if v is not None}
    merged = {**file_values, **flags}
    try:
        return DistillConfig(**merged)
    except ConfigFieldError as exc:
        if exc.field in file_values and exc.field not in flags:
            raise exc.in_file(source) from None
        raise
    except TypeError as exc:  # a value of the wrong type deep inside a comparison
        raise UserError(f"config: {exc}") from None


def data_config(values: Any, source: str, data_root: str | None) -> DistillConfig:
    """The saved config a checkpoint or artefact carries, for reading its data set's test images.

    Such a file never chooses which files are read: its ``data_root`` is not followed. The data
    come from ``data_root`` (the user's ``--data-root``) or the data set's default place; a file
    whose config names a folder of its own is refused unless the user names the folder."""
    cfg = config_from_dict(values, source)
    if data_root is not None:
        return cfg.replace(data_root=data_root)
    if cfg.data_root is not None:
        raise UserError(f"{source} names its own data folder {cfg.data_root!r}; a file's saved config never "
                        "chooses what is read: give the data folder yourself with --data-root DIR")
    return cfg


def config_from_dict(values: dict[str, Any], source: str = "saved config") -> DistillConfig:
    """Rebuild a saved config (``config.json`` of a run directory, the config a checkpoint or an
    artefact carries); ``source`` names it in errors."""
    if not isinstance(values, dict):
        raise UserError(f"{source}: expected a table of settings, got {type(values).__name__}")
    unknown = set(values) - FIELD_NAMES
    if unknown:
        raise UserError(f"{source} has unknown keys {sorted(map(str, unknown))}")
    try:
        return DistillConfig(**values)
    except ConfigFieldError as exc:
        raise exc.in_file(source) from None
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
