"""torchrun / DistributedDataParallel plumbing: one process per device, rank 0 writes files."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (nccl on CUDA, else gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        context = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and not os.environ.get("BSMAMBA2_FORCE_GLOO") else "gloo"
            dist.init_process_group(backend=backend)
        return context

    def all_finite_and_mean(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Whether every process's loss is finite, and the mean loss (one collective call)."""
        finite = torch.isfinite(loss.detach()).float()
        packed = torch.stack([finite, torch.where(finite > 0, loss.detach().float(), torch.zeros_like(finite))])
        if self.enabled:
            dist.all_reduce(packed)
        count, total = packed.tolist()
        return count == self.world_size, total / self.world_size

    def broadcast(self, value: object) -> object:
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
