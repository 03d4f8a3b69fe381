"""Learning-rate schedules: linear warmup, then a cosine decay, a constant rate, or a constant rate with a cooldown.

The shapes of open_clip's ``open_clip_train/scheduler.py`` (``cosine_lr``, ``const_lr``,
``const_lr_cooldown``; its ``--lr-scheduler``), written as multipliers of a parameter
group's base rate for ``torch.optim.lr_scheduler.LambdaLR``. Steps are optimizer steps,
0-based; the warmup reaches the base rate at step ``warmup_steps - 1``.
"""

from __future__ import annotations

import math

__all__ = ["SHAPES", "lr_multiplier", "warmup_const", "warmup_const_cooldown", "warmup_cosine"]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): warmup, then cosine to zero.

    Beyond ``total_steps`` (a resumed run whose ``optim.steps`` shrank) it stays at zero.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_const(step: int, warmup_steps: int) -> float:
    """Warmup, then the base rate (open_clip's ``const_lr``)."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def warmup_const_cooldown(
    step: int, warmup_steps: int, total_steps: int, cooldown_steps: int, end: float = 0.0, power: float = 1.0
) -> float:
    """Warmup, the base rate, then over the last ``cooldown_steps`` a decay to ``end`` (open_clip's ``const_lr_cooldown``).

    The decay is ``end + (1 - end) * (1 - e / cooldown_steps) ** power`` at the ``e``-th
    cooldown step: linear for ``power`` 1, square-root for 0.5. ``end`` is a multiplier
    of the base rate; it is held beyond ``total_steps``.
    """
    start = total_steps - cooldown_steps
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step < start or cooldown_steps <= 0:
        return 1.0
    decay = (1 - min(step - start, cooldown_steps) / cooldown_steps) ** power
    return decay * (1 - end) + end


#: the schedule names of ``optim.schedule``
SHAPES = ("cosine", "const", "const-cooldown")


def lr_multiplier(
    schedule: str,
    step: int,
    warmup_steps: int,
    total_steps: int,
    cooldown_steps: int = 0,
    end: float = 0.0,
    power: float = 1.0,
) -> float:
    """The multiplier of the base rate at ``step`` under the named schedule (one of `SHAPES`).

    Args:
        schedule: ``cosine``, ``const`` or ``const-cooldown``.
        step: the optimizer step, 0-based.
        warmup_steps: steps of the linear warmup (0: none).
        total_steps: the run's length (``optim.steps``).
        cooldown_steps: ``const-cooldown``: the steps of the final decay (see `warmup_const_cooldown`).
        end: ``const-cooldown``: the multiplier reached at the last step.
        power: ``const-cooldown``: the decay's exponent (1 linear).
    """
    if schedule == "cosine":
        return warmup_cosine(step, warmup_steps, total_steps)
    if schedule == "const":
        return warmup_const(step, warmup_steps)
    if schedule == "const-cooldown":
        return warmup_const_cooldown(step, warmup_steps, total_steps, cooldown_steps, end, power)
    raise ValueError(f"unknown schedule {schedule!r}: set optim.schedule to one of {', '.join(SHAPES)}")
