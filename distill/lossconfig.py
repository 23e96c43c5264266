"""The hyper-parameters of the distillation losses (``LossConfig``), validated; no torch here, so
that the command line's ``--help`` can list them without importing it (``distill.losses`` uses
them and re-exports them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

STUDENT_AVERAGES = ("logits", "probs")


@dataclass(frozen=True)
class LossConfig:
    """Hyper-parameters shared by the logit-distillation methods (validated)."""

    temperature: float = 4.0
    alpha: float = 0.9
    delta: float = 0.5
    head_weight: float = 0.5
    tau_squared: bool = True
    student_average: str = "logits"
    # ckdsnn (CKDSNN, arXiv:2511.06902): CE + β·SAMD + γ·NLD
    nld_lambda: float = 0.1
    nld_temperature: float = 2.0
    samd_temperature: float = 2.0
    ckdsnn_beta: float = 1.0
    ckdsnn_gamma: float = 1.0
    # seal (SeAl-KD, arXiv:2605.14252): per-timestep CE + α·ELA + β·STA
    seal_alpha: float = 0.6
    seal_beta: float = 0.15
    seal_temperature: float = 1.0
    seal_sta_detach: bool = True
    # kdsnn: KD (temperature, alpha as `kd`) + w·MSE(features at one stage)
    kdsnn_feature_weight: float = 1.0
    kdsnn_stage: str = "last"
    # lasnn: KD + β/2·Σ_stages attention-transfer distance (Zagoruyko & Komodakis form)
    lasnn_beta: float = 100.0
    lasnn_p: float = 2.0
    # bkdsnn: KD + α·‖G(mask ⊙ f_s) − f_t‖² (blurred, i.e. masked and regenerated, student feature)
    bkdsnn_alpha: float = 2e-3
    bkdsnn_mask_ratio: float = 0.15
    bkdsnn_stage: str = "last"

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        checks = [
            *((n, lambda v: number(v) and v > 0, "a positive number") for n in (
                "temperature", "nld_temperature", "samd_temperature", "seal_temperature")),
            *((n, lambda v: number(v) and v >= 0, "a number >= 0") for n in (
                "nld_lambda", "ckdsnn_beta", "ckdsnn_gamma", "seal_alpha", "seal_beta",
                "kdsnn_feature_weight", "lasnn_beta", "bkdsnn_alpha")),
            *((n, lambda v: number(v) and 0 <= v <= 1, "a number in [0, 1]") for n in (
                "alpha", "head_weight")),
            ("delta", lambda v: number(v) and 0 < v <= 1, "a head threshold in (0, 1]"),
            ("student_average", lambda v: v in STUDENT_AVERAGES, f"one of {', '.join(STUDENT_AVERAGES)}"),
            *((n, lambda v: isinstance(v, str) and v.strip() != "", "'last' or a stage name")
              for n in ("kdsnn_stage", "bkdsnn_stage")),
            ("lasnn_p", lambda v: number(v) and v >= 1, "a number >= 1 (the attention map's power)"),
            ("bkdsnn_mask_ratio", lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ]
        for name, ok, expected in checks:
            if not ok(getattr(self, name)):
                raise LossConfigError(name, getattr(self, name), expected)


class LossConfigError(ValueError):
    """An invalid ``LossConfig`` field; ``field`` and ``expected`` let callers name their flag."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field} must be {expected}, got {value!r}")
        self.field, self.value, self.expected = field, value, expected
