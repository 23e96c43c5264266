"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU; NCCL for CUDA
tensors when training on GPUs, gloo still for the few CPU numbers the loop sums).

``--batch-size`` is the *global* batch: each of the ``world_size`` processes takes an equal share of
every batch, gradients are averaged by DistributedDataParallel, so the optimisation matches the
single-process run except for BatchNorm statistics, which are per process. Rank 0 alone writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: torch.device | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    ``device`` is where this process trains (``distill.device.device_for``); on CUDA, gradients go
    through NCCL and the CPU metrics of ``all_sum`` through gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    if not tdist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return DistEnv(rank=tdist.get_rank(), world_size=tdist.get_world_size())


def shutdown(env: DistEnv) -> None:
    if env.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def all_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sum a few numbers over all processes (identity when running alone)."""
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.tolist()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """True on every process if it is true on any (used to stop all ranks together)."""
    return bool(all_sum(env, [float(flag)])[0] > 0)
