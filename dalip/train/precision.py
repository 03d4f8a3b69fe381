"""Numeric precision of a run (``run.precision``): autocast contexts, the fp16 GradScaler, pure bf16 weights.

| ``run.precision`` | weights | forward | loss scaling |
|---|---|---|---|
| ``fp32`` | fp32 | fp32 | none |
| ``bf16`` | fp32 | bf16 autocast | none |
| ``fp16`` | fp32 | fp16 autocast | `build_scaler`: ``GradScaler`` (`FsdpGradScaler` under FSDP; its state goes in the checkpoint) |
| ``pure_bf16`` | bf16 (`prepare_precision`) | bf16, inputs cast by `input_dtype` | none |
| ``auto`` | as ``bf16`` on a GPU, as ``fp32`` on a CPU | | |

As open_clip's ``--precision amp_bf16 / amp / pure_bf16``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from dalip.runs.config import TrainConfig

__all__ = ["FsdpGradScaler", "autocast", "build_scaler", "input_dtype", "prepare_precision", "resolve_precision"]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    """``run.precision`` with ``auto`` resolved: bf16 on a GPU, fp32 on a CPU."""
    precision = config.run.precision
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's autocast: bf16 or fp16 for ``run.precision`` bf16 / fp16 (bf16 for auto on a GPU), else none."""
    dtype = _AUTOCAST_DTYPES.get(resolve_precision(config, device))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class FsdpGradScaler(ShardedGradScaler):
    """FSDP's ``ShardedGradScaler`` (the ranks agree on an overflow), safe with a fused optimizer.

    A fused AdamW over FSDP2's DTensor parameters ignores the overflow flag a scaler hands it
    (torch 2.14: it steps with the infinite gradients, every weight NaN); and torch's flags are
    ``(1,)``, which it cannot subtract from its 0-dim step counts. So the flags are 0-dim and
    `step` takes or skips the optimizer step on the host, as the scaler does for unfused
    optimizers: one host synchronisation per step, under FSDP with fp16 only.
    """

    def _unscale_grads_(self, optimizer: torch.optim.Optimizer, inv_scale: torch.Tensor, found_inf: torch.Tensor,
                        allow_fp16: bool = True) -> dict[torch.device, torch.Tensor]:
        return super()._unscale_grads_(optimizer, inv_scale, found_inf.reshape(()), allow_fp16)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        fused = optimizer.__dict__.get("_step_supports_amp_scaling", False)
        optimizer._step_supports_amp_scaling = False  # the scaler's host-checked path: skip on an overflow
        try:
            return super().step(optimizer, *args, **kwargs)
        finally:
            optimizer._step_supports_amp_scaling = fused


def build_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for ``run.precision=fp16`` (fp16 gradients underflow without it), else None.

    Under ``distributed.strategy=fsdp`` (a process group running) it is FSDP's (`FsdpGradScaler`),
    which agrees over the ranks on whether a gradient overflowed (each rank holds only its shards).
    Its ``state_dict()`` belongs in the training checkpoint (the scale it has grown or backed off to).
    """
    if resolve_precision(config, device) != "fp16":
        return None
    if config.distributed.strategy == "fsdp" and dist.is_available() and dist.is_initialized():
        return FsdpGradScaler(device.type)
    return torch.amp.GradScaler(device.type)


def prepare_precision(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The model with its weights and buffers in bf16 for ``run.precision=pure_bf16`` (in place), else unchanged.

    Call it before building the optimizer (its state then is bf16 too); feed inputs in `input_dtype`.
    """
    return model.to(torch.bfloat16) if config.run.precision == "pure_bf16" else model


def input_dtype(config: TrainConfig) -> torch.dtype | None:
    """The dtype images (and other float inputs) must be cast to: bf16 for pure_bf16, else None (as loaded)."""
    return torch.bfloat16 if config.run.precision == "pure_bf16" else None
