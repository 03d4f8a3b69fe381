"""Sharding data over every reader of a run: torch.distributed ranks x DataLoader workers."""

from __future__ import annotations

import torch.distributed as dist
from torch.utils.data import get_worker_info


def consumer_info() -> tuple[int, int]:
    """`(index, count)` of this reader among all ranks x DataLoader workers."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    worker = get_worker_info()
    wid, nworkers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
    return rank * nworkers + wid, world * nworkers

