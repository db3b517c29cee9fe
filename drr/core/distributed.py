"""Process-group set-up for data-parallel jobs: one process per GPU, launched by torchrun,
by submitit (SLURM or its local executor), or a single plain process.

Reads the usual environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); under
submitit the launcher fills these from submitit.JobEnvironment before calling `init`.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from drr.core.device import autocast, pick_device  # noqa: F401  (autocast: the training loops')


def init(device_setting: str | None = "auto") -> tuple[int, int, torch.device]:
    """Initialise the process group if WORLD_SIZE > 1; return (rank, world_size, device).

    The device is drr.core.device.pick_device(device_setting) (the config key `device`): GPU
    LOCAL_RANK when there is CUDA, a one-line error for 'cuda' without it, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_setting, index=local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return rank, world, device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def all_max(values: list[float], device: torch.device) -> list[float]:
    """Each value's maximum over the processes (one all-reduce for all of them), so that every
    process acts on the same step: a flag set on any process is set on all."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather_scalar(value: torch.Tensor, device: torch.device) -> list[float]:
    """Every process's value of a scalar, indexed by rank (one all-reduce of a one-hot vector;
    a NaN or inf stays at its rank's place)."""
    if not dist.is_initialized():
        return [float(value)]
    t = torch.zeros(dist.get_world_size(), dtype=torch.float64, device=device)
    t[dist.get_rank()] = value.detach().to(device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()
