"""One optimizer step: ``accum_steps`` micro-batches, backward, clip, optimizer and schedule step.

``train_step`` never reads a value on the host (no synchronisation with the GPU); its
`StepStats` are device tensors the loop reads at logging time.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from dalip.train.frozen_cache import FrozenTowerCache
from dalip.train.precision import autocast

__all__ = ["StepStats", "train_step"]


@dataclass
class StepStats:
    """Losses and counts of one optimizer step, or summed over a logging window."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    steps: int = 0
    images: int = 0
    skipped: int = 0

    @classmethod
    def empty(cls, device: torch.device) -> StepStats:
        return cls(torch.zeros((), device=device), {})

    def add(self, other: StepStats) -> None:
        self.loss = self.loss + other.loss
        for key, value in other.parts.items():
            self.parts[key] = self.parts.get(key, 0) + value
        self.steps += other.steps
        self.images += other.images
        self.skipped += other.skipped

    def means(self) -> dict[str, float]:
        """Mean loss and parts per step (one host sync, at logging time only)."""
        n = max(self.steps, 1)
        return {"loss": self.loss.item() / n, **{f"loss/{k}": v.item() / n for k, v in self.parts.items()}}


def train_step(net, model, loss_fn, tokenizer, micro_iter, optimizer, scheduler, config, dist_info,
                frozen: FrozenTowerCache | None = None) -> StepStats:
    """One optimizer step over ``accum_steps`` micro-batches (no host synchronisation).

    With ``frozen`` the batches are keys and ``net`` takes the cached tower outputs (`CachedTowersForward`).
    """
    o = config.optim
    stats = StepStats.empty(dist_info.device)
    stats.steps = 1
    for micro in range(o.accum_steps):
        batch = next(micro_iter)
        if frozen is not None:
            inputs = frozen.lookup(batch)
        else:
            inputs = (batch.images.to(dist_info.device, non_blocking=True),
                      tokenizer(batch.texts).to(dist_info.device, non_blocking=True))
        last = micro == o.accum_steps - 1
        no_sync = net.no_sync() if isinstance(net, DistributedDataParallel) and not last else contextlib.nullcontext()
        with no_sync, autocast(config, dist_info.device):
            out = net(*inputs)
            loss, parts = loss_fn(**out, output_dict=True)
        (loss / o.accum_steps).backward()
        stats.add(StepStats(loss.detach() / o.accum_steps,
                            {k: v.detach().float() / o.accum_steps for k, v in parts.items()},
                            images=len(batch), skipped=batch.skipped))
    if o.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    with torch.no_grad():  # as open_clip: keep the temperatures below 100
        model.clip.logit_scale.clamp_(0, math.log(100))
        if model.second_logit_scale is not None:
            model.second_logit_scale.clamp_(0, math.log(100))
    return stats
