"""Numeric precision of a run (``run.precision``): autocast contexts, the fp16 GradScaler, pure bf16 weights."""

from __future__ import annotations

import contextlib

import torch

from dalip.runs.config import TrainConfig

__all__ = ["autocast"]


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``run.precision`` bf16 (or auto on a GPU), else nothing (fp32)."""
    precision = config.run.precision
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
