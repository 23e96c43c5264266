"""Distillation stage: data, models, losses and the training loop."""
