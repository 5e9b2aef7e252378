"""One process or many (torchrun / DistributedDataParallel): the ranks, their device, their rows
of a global batch, and the sums across them. Every helper is a no-op for a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (a single process by default)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs, validates and writes checkpoints and metrics."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def shard(n_rows: int, d: Dist, what: str) -> slice:
    """This rank's rows of a global batch of `n_rows` (`what` names the params key in errors)."""
    if n_rows % d.world:
        raise ValueError(f"{what}={n_rows} is not divisible by the {d.world} DDP processes")
    per = n_rows // d.world
    return slice(d.rank * per, (d.rank + 1) * per)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """`t` summed over every rank, in place."""
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if d.world > 1:
        dist.barrier()


def gather_to_main(obj, d: Dist) -> list | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the other ranks."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world if d.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj, d: Dist):
    """Rank 0's ``obj`` (picklable) on every rank."""
    if d.world == 1:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def close_distributed(d: Dist) -> None:
    """Leave the process group (after a last barrier, so no rank exits while another still talks)."""
    if d.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
