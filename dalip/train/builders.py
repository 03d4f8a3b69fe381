"""Building a run's parts from its config: loss, optimizer, schedule, train mode (precision: `dalip.train.precision`).

Everything here is a pure function of the config (and the model), shared by the
training loop, ``dalip eval``, exports, interpolation and the benchmarks.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from dalip.losses import AlignmentLoss, create_loss
from dalip.models import DALIPModel
from dalip.runs.config import TrainConfig
from dalip.train.schedule import warmup_cosine

__all__ = ["build_loss", "build_optimizer", "build_scheduler", "set_train_mode"]


def set_train_mode(model: DALIPModel, config: TrainConfig) -> None:
    """Train mode, except fully locked towers stay in eval mode (no dropout, fixed norms)."""
    model.train()
    m = config.model
    if m.lock_image and m.unlocked_image_groups == 0:
        model.clip.visual.eval()
    if m.lock_text and m.unlocked_text_layers == 0:
        getattr(model.clip, "text", getattr(model.clip, "transformer", None)).eval()


def build_optimizer(model: DALIPModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW: towers at ``lr``, new heads (and ``head_patterns``) at ``head_lr``; no decay on
    gains, biases, norms and the logit scale."""
    o = config.optim
    heads = {id(p) for p in model.head_parameters()}
    heads |= {id(p) for n, p in model.named_parameters() if any(fnmatch.fnmatchcase(n, pat) for pat in o.head_patterns)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "heads": [], "heads_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "logit_scale" in name or "logit_bias" in name
        key = ("heads" if id(p) in heads else "decay") if not no_decay else ("heads_no_decay" if id(p) in heads else "no_decay")
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
    options = dict(config.loss.options)
    if config.loss.name == "distribution":
        options.setdefault("alpha", config.model.alpha)
    return create_loss(config.loss.name, **options)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``optim.warmup_steps``, then cosine decay to zero at ``optim.steps``."""
    o = config.optim
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, o.warmup_steps, o.steps))
