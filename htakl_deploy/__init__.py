"""htakl-deploy: distil SNNs with HTA-KL, deploy them to Loihi-style hardware, measure the cost.

Sub-packages by stage: ``distill`` (data, models, losses, training), ``export`` (NIR/Lava/ONNX),
``hw`` (Lava runs and the fixed-point emulator), ``energy`` (operation counts and reports).
Tensors of spikes and per-timestep activations use one layout everywhere: ``[T, B, ...]``.
For notebooks, ``train``, ``to_plan``, ``emulate``, ``count_energy``, ``render_report``, ... are
importable from here (``htakl_deploy.api``; example in docs/API.md).
"""

__version__ = "0.1.0"

#: the notebook API (``htakl_deploy.api``), loaded on first use so that ``import htakl_deploy``
#: and ``htakl-deploy --help`` do not import torch
API = ("train", "load_student", "to_graph", "to_plan", "sample_batch", "emulate", "count_energy",
       "render_report", "run_pipeline")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from htakl_deploy import api

        return getattr(api, name)
    raise AttributeError(f"module 'htakl_deploy' has no attribute {name!r}")
