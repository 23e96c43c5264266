"""All distillation methods: the one table the config and the training loop look up.

Each method is ``fn(inputs: LossInputs, cfg: LossConfig) -> scalar``. The logit methods live in
``distill/losses.py``; the seed baselines that need more than logits live here, one module each,
with a ``NEEDS: FeatureNeeds`` declaring what the loop must compute for them (``METHOD_NEEDS``);
methods not in ``METHOD_NEEDS`` run the plain, logits-only step.
"""

from __future__ import annotations

from htakl_deploy.distill.losses import LOGIT_LOSSES, FeatureNeeds, LossFn
from htakl_deploy.distill.methods import bkdsnn, ckdsnn, kdsnn, lasnn, seal

LOSSES: dict[str, LossFn] = {
    **LOGIT_LOSSES,
    "ckdsnn": ckdsnn.loss_ckdsnn,
    "seal": seal.loss_seal,
    "kdsnn": kdsnn.loss_kdsnn,
    "lasnn": lasnn.loss_lasnn,
    "bkdsnn": bkdsnn.loss_bkdsnn,
}

METHOD_NEEDS: dict[str, FeatureNeeds] = {"ckdsnn": ckdsnn.NEEDS, "kdsnn": kdsnn.NEEDS,
                                         "lasnn": lasnn.NEEDS, "bkdsnn": bkdsnn.NEEDS}

__all__ = ["LOSSES", "METHOD_NEEDS"]
