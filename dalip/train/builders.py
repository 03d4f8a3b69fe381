"""Building a run's parts from its config: loss, optimizer, schedule, train mode (precision: `dalip.train.precision`).

Everything here is a pure function of the config (and the model), shared by the
training loop, ``dalip eval``, exports, interpolation and the benchmarks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from dalip.losses import AlignmentLoss, create_loss
from dalip.models import DALIPModel
from dalip.runs.config import TrainConfig
from dalip.runs.validate import loss_options
from dalip.train.schedule import lr_multiplier

__all__ = ["build_loss", "build_optimizer", "build_scheduler", "no_decay", "set_train_mode"]


def set_train_mode(model: DALIPModel, config: TrainConfig) -> None:
    """Train mode, except fully locked towers stay in eval mode (no dropout, fixed norms)."""
    model.train()
    m = config.model
    if m.lock_image and m.unlocked_image_groups == 0:
        model.clip.visual.eval()
    if m.lock_text and m.unlocked_text_layers == 0:
        getattr(model.clip, "text", getattr(model.clip, "transformer", None)).eval()


def no_decay(name: str, param: nn.Parameter, patterns: list[str]) -> bool:
    """Whether a parameter is exempt from weight decay: fewer than 2 dims (gains, biases, norms, the
    logit scale) or a name matching one of ``patterns`` (fnmatch, ``optim.no_decay``)."""
    return param.ndim < 2 or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def build_optimizer(model: DALIPModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW: towers at ``lr``, new heads (and ``head_patterns``) at ``head_lr``; no decay on
    parameters with fewer than 2 dims and those matching ``optim.no_decay`` (see `no_decay`)."""
    o = config.optim
    heads = {id(p) for p in model.head_parameters()}
    heads |= {id(p) for n, p in model.named_parameters() if any(fnmatch.fnmatchcase(n, pat) for pat in o.head_patterns)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "heads": [], "heads_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = no_decay(name, p, o.no_decay)
        key = ("heads" if id(p) in heads else "decay") if not exempt else ("heads_no_decay" if id(p) in heads else "no_decay")
        groups[key].append(p)
    lr = {"decay": o.lr, "no_decay": o.lr, "heads": o.head_lr, "heads_no_decay": o.head_lr}
    decay = {"decay": o.weight_decay, "heads": o.weight_decay, "no_decay": 0.0, "heads_no_decay": 0.0}
    params = [{"params": ps, "lr": lr[k], "weight_decay": decay[k], "name": k} for k, ps in groups.items() if ps]
    # torch's fused AdamW (one kernel over all tensors) on CUDA and CPU: on a CPU the default
    # per-tensor loop is ~10x slower, and that step is a large share of a run (benchmarks/results)
    fused = all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for g in params for p in g["params"])
    return torch.optim.AdamW(params, betas=tuple(o.betas), eps=o.eps, fused=fused or None)


def build_loss(config: TrainConfig) -> AlignmentLoss:
    """The registered loss of ``config.loss``; the distribution loss takes ``model.alpha`` unless set."""
    return create_loss(config.loss.name, **loss_options(config.loss, config.model))  # as validation built it


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``optim.warmup_steps``, then ``optim.schedule`` (`dalip.train.schedule`) up to ``optim.steps``.

    ``const-cooldown`` ends at the learning rate ``optim.lr_cooldown_end`` in every group (an
    absolute rate, as open_clip's ``--lr-cooldown-end``), so each group gets its own multiplier.
    """
    o = config.optim

    def shape(base_lr: float) -> Callable[[int], float]:
        end = o.lr_cooldown_end / base_lr if base_lr > 0 else 0.0
        return lambda s: lr_multiplier(o.schedule, s, o.warmup_steps, o.steps, o.cooldown_steps, end, o.cooldown_power)

    # initial_lr: the base rate even when a resumed optimizer state (with a scheduled lr) came first
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [shape(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups])
