"""Seed distillation methods as first-class baselines, one module each.

Each module defines ``loss_<name>(inputs: LossInputs, cfg: LossConfig) -> scalar`` (registered in
``losses.LOSSES``) and, if it needs more than logits, ``NEEDS: FeatureNeeds``; ``METHOD_NEEDS``
is the loop's lookup — methods not in it run the plain (logits-only) step.
"""

from __future__ import annotations

from htakl_deploy.distill import losses as _losses  # noqa: F401  (registers the methods first)
from htakl_deploy.distill.losses import FeatureNeeds
from htakl_deploy.distill.methods import ckdsnn, kdsnn

METHOD_NEEDS: dict[str, FeatureNeeds] = {"ckdsnn": ckdsnn.NEEDS, "kdsnn": kdsnn.NEEDS}

__all__ = ["METHOD_NEEDS"]
