"""DDP, switched on only when launched by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment).

    torchrun --nproc_per_node=2 -m gpvcli train --run-dir runs/NAME ...
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 -m gpvcli train --run-dir ...

(`--run-dir`, not `--run`: torchrun's own argument parser would take `--run` for its `--run-path`.)

A single process is the default. Rank 0 logs and saves; state dicts are saved unwrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from gpvcli.device import pick_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun), before `setup`."""
    return int(os.environ.get("RANK", "0"))


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank when `flag` is true on any."""
    if not d.enabled:
        return flag
    return bool(all_reduce_sum(d, torch.tensor(float(flag), device=d.device)).item() > 0)


def setup(device_preference: str = "auto") -> Dist:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(device=pick_device(device_preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_sum(d: Dist, value: torch.Tensor) -> torch.Tensor:
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value)
    return value
