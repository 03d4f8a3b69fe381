"""Small shared pieces for fitting on cached features: seeding and a full-batch optimiser loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["optimize", "seeded"]


@contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
    """Inside: the global torch RNG seeded with ``seed`` (restored afterwards); yields a seeded generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed + 1)


def optimize(
    params: Iterable[nn.Parameter],
    loss_fn: Callable[[int], Tensor],
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
) -> list[float]:
    """Full-batch AdamW with cosine decay: ``steps`` steps of ``loss_fn(step)``; returns the losses.

    Raises:
        ValueError: ``steps < 1`` or nothing to train.
    """
    params = [p for p in params if p.requires_grad]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not params:
        raise ValueError("nothing to train: no parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses
