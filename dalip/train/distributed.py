"""Process set-up for torchrun, SLURM (``srun``) or one process: rank, world size, device, process group.

- ``torchrun``: ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` and its rendezvous (``env://``).
- ``srun ... dalip train`` (one task per GPU, as open_clip's trainer): ``SLURM_PROCID`` /
  ``SLURM_LOCALID`` / ``SLURM_NTASKS``; the rendezvous is ``MASTER_ADDR:MASTER_PORT`` when set,
  else the first node of ``SLURM_JOB_NODELIST`` and a port derived from ``SLURM_JOB_ID``
  (every task of a job computes the same). A single SLURM task runs without a process group.

The process-group backend is ``distributed.backend`` (`resolve_backend`): NCCL on GPUs and
gloo on CPUs unless named. No environment variable is set or changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dalip.errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "resolve_backend", "slurm_rendezvous"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[03-05,09],cpu1"`` -> ``"gpu03"``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR")
    prefix, ranges = match.groups()
    return prefix + (re.split(r"[-,]", ranges)[0] if ranges else "")


def slurm_rendezvous(env: dict[str, str] | None = None) -> str:
    """``tcp://HOST:PORT`` of a SLURM job: ``MASTER_ADDR`` / ``MASTER_PORT`` when set, else derived.

    HOST defaults to the first node of ``SLURM_JOB_NODELIST`` (``SLURM_NODELIST``), PORT to
    ``20000 + SLURM_JOB_ID % 20000``, so every task of a job agrees without a shared file.

    Raises:
        ValueError: no ``MASTER_ADDR`` and no node list to derive it from.
    """
    env = dict(os.environ) if env is None else env
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if "MASTER_ADDR" in env:
        host = env["MASTER_ADDR"]
    elif nodelist:
        host = _first_host(nodelist)
    else:
        raise ValueError("SLURM task without MASTER_ADDR or SLURM_JOB_NODELIST: set MASTER_ADDR and MASTER_PORT")
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return f"tcp://{host}:{port}"


def _ranks() -> tuple[int, int, int, str | None]:
    """``(rank, local_rank, world_size, init_method)``: torchrun's variables first, then SLURM's."""
    env = os.environ
    if "RANK" in env:  # torchrun (also when torchrun runs inside a SLURM job)
        return int(env["RANK"]), int(env.get("LOCAL_RANK", "0")), int(env.get("WORLD_SIZE", "1")), "env://"
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return (int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]),
                slurm_rendezvous())
    return 0, 0, 1, None


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The process-group backend: ``backend`` (``distributed.backend``), else NCCL on a GPU and gloo on a CPU.

    Raises:
        ConfigError: NCCL asked for on a machine without a GPU.
    """
    if backend is None:
        return "nccl" if device.type == "cuda" else "gloo"
    if "nccl" in backend and ":" not in backend and device.type != "cuda":
        raise ConfigError(f"distributed.backend={backend} needs GPUs and this process has none; "
                          "set distributed.backend=gloo (or null: gloo on CPUs)")
    return backend


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` or ``srun``, with `resolve_backend`'s backend.

    Raises:
        ConfigError: the backend does not fit the device, or the process group of this
            process already runs another backend.
    """
    rank, local, world, init_method = _ranks()
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())  # srun --gpus-per-task: one visible GPU
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    name = resolve_backend(backend, device)
    if init_method is not None and not dist.is_initialized():
        dist.init_process_group(name, init_method=init_method, rank=rank, world_size=world)
    elif backend is not None and dist.is_initialized() and dist.get_backend() != backend:
        raise ConfigError(f"distributed.backend={backend}, but this process already joined a "
                          f"{dist.get_backend()} process group; set distributed.backend={dist.get_backend()}")
    return DistInfo(rank, local, world, device)
