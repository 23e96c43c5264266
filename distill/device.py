"""Where training runs: ``--device cpu | cuda | cuda:N | auto``, resolved once per process.

``auto`` is CUDA when torch sees a CUDA device, else the CPU. Under ``torchrun`` with CUDA each
process trains on ``cuda:LOCAL_RANK`` (one GPU per process, as NCCL requires), so ``cuda`` is the
value to give there; a fixed ``cuda:N`` is refused because every process would share that GPU.

Only the model's forward/backward moves: data loading, augmentation and input encoding stay on
the CPU with the step's seeded CPU generator, so a CUDA run sees exactly the batches, crops and
Poisson draws of a CPU run with the same seed (the arithmetic differs in rounding only).
"""

from __future__ import annotations

import os
import re

import torch

from htakl_deploy.errors import UserError

DEVICE_SPEC = re.compile(r"cpu|auto|cuda(:\d+)?")
DEVICE_HINT = "cpu, cuda, cuda:N or auto"


def is_device_spec(spec: object) -> bool:
    return isinstance(spec, str) and DEVICE_SPEC.fullmatch(spec) is not None


def resolve_device(spec: str, *, cuda_count: int, local_rank: int | None = None) -> torch.device:
    """The device ``spec`` names on a machine with ``cuda_count`` visible CUDA devices.

    ``local_rank`` is the process's ``LOCAL_RANK`` under torchrun (``None`` when running alone).
    Raises ``UserError`` naming ``--device`` when the machine cannot do what is asked.
    """
    if not is_device_spec(spec):
        raise UserError(f"--device: got {spec!r}, expected {DEVICE_HINT}")
    if spec == "cpu" or (spec == "auto" and cuda_count == 0):
        return torch.device("cpu")
    if cuda_count == 0:
        raise UserError(f"--device {spec}: torch {torch.__version__} sees no CUDA device here "
                        f"(CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
    if local_rank is not None and ":" in spec:
        raise UserError(f"--device {spec}: under torchrun each process takes cuda:LOCAL_RANK; "
                        "give --device cuda (or auto)")
    index = local_rank if local_rank is not None else int(spec.partition(":")[2] or 0)
    if index >= cuda_count:
        what = f"LOCAL_RANK {index}" if local_rank is not None else f"device {index}"
        raise UserError(f"--device {spec}: {what} does not exist; {cuda_count} CUDA device(s) are visible "
                        "(one torchrun process per GPU: --nproc_per_node ≤ the number of GPUs)")
    return torch.device("cuda", index)


def device_for(spec: str) -> torch.device:
    """``resolve_device`` for this process: the visible CUDA devices and torchrun's ``LOCAL_RANK``."""
    rank = os.environ.get("LOCAL_RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    count = torch.cuda.device_count() if spec != "cpu" else 0
    return resolve_device(spec, cuda_count=count, local_rank=None if rank is None else int(rank))


def describe(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA …)`` for summaries and logs."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
