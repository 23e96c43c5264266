"""htakl-deploy: distil SNNs with HTA-KL, deploy them to Loihi-style hardware, measure the cost.

Sub-packages by stage: ``distill`` (data, models, losses, training), ``export`` (NIR/Lava/ONNX),
``hw`` (Lava runs and the fixed-point emulator), ``energy`` (operation counts and reports).
Tensors of spikes and per-timestep activations use one layout everywhere: ``[T, B, ...]``.
"""

__version__ = "0.1.0"
