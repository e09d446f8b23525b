"""torchrun / DDP plumbing: one process per device, gloo on CPU (so tests run 2 processes here), NCCL on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(force_cpu: bool = False) -> DistInfo:
    """Join the process group torchrun describes in the environment; a plain `python` run is world size 1."""
    use_cuda = torch.cuda.is_available() and not force_cpu
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def mean_across_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar statistics over processes (so rank 0 logs the global value)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def gather_lists(items: list, device: torch.device) -> list:
    """Concatenate a picklable list from every process on every process (detections for evaluation)."""
    if not is_distributed():
        return items
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
