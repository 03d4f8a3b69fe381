"""Building a run's parts from its config: model, loss, optimizer, schedule, precision.

Everything here is a pure function of the config (and the model), shared by the
training loop, ``dalip eval``, exports, interpolation and the benchmarks.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings

import torch
from torch import nn

from dalip.losses import AlignmentLoss, create_loss
from dalip.models import DALIPModel, create_model
from dalip.models.checkpoint import PretrainedMismatchError
from dalip.train.config import ConfigError, TrainConfig
from dalip.train.schedule import warmup_cosine

__all__ = ["autocast", "build_loss", "build_model", "build_optimizer", "build_scheduler", "set_train_mode"]


def build_model(config: TrainConfig, load_weights: bool = True) -> DALIPModel:
    """The DALIP model of a config, with tower locking and gradient checkpointing applied.

    ``load_weights=False`` builds the architecture only (no ``model.pretrained``, hub or
    packaged weights), for loading a checkpoint that holds every weight.
    """
    m = config.model
    try:
        model = _create_model(config, load_weights)
    except PretrainedMismatchError as err:
        raise ConfigError(f"model.pretrained: {err}") from None
    if load_weights and (m.pretrained or ":" in m.name):  # say where the towers came from
        print(f"model {m.name}: {model.load_report}", flush=True)
    if m.lock_image:
        with warnings.catch_warnings():  # open_clip imports timm's deprecated helpers module
            warnings.simplefilter("ignore", FutureWarning)
            # open_clip's own BN freezing turns timm's BatchNormAct2d into a plain frozen BN and
            # drops its activation (EfficientNet's outputs then explode); timm's keeps it
            model.clip.lock_image_tower(unlocked_groups=m.unlocked_image_groups, freeze_bn_stats=False)
        trunk = getattr(model.clip.visual, "trunk", None)
        if trunk is not None:
            model.clip.visual.trunk = freeze_locked_batch_norm(trunk)
    if m.lock_text:
        lock_text_tower(model.clip, m.unlocked_text_layers)
    if m.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    if m.channels_last:  # 4-d (conv) weights only; convolutions then run NHWC, inputs may stay NCHW
        model.to(memory_format=torch.channels_last)
    return model


def lock_text_tower(clip: nn.Module, unlocked_layers: int) -> None:
    """open_clip's ``lock_text_tower`` (layer norms frozen too), with the last ``unlocked_layers`` trainable.

    open_clip's table of Hugging Face architectures lacks the layer attribute of BERT
    (MiniLM), so their partial unlocking is done here the way open_clip does it for
    the others: the embeddings and all but the last layers of ``encoder.layer`` frozen.
    """
    try:
        clip.lock_text_tower(unlocked_layers=unlocked_layers, freeze_layer_norm=True)
        return
    except KeyError:  # raised before any parameter is changed
        encoder = getattr(getattr(getattr(clip, "text", None), "transformer", None), "encoder", None)
        if unlocked_layers == 0 or not hasattr(encoder, "layer"):
            raise
    transformer = clip.text.transformer
    for module in [transformer.embeddings, *encoder.layer][:-unlocked_layers]:
        for p in module.parameters():
            p.requires_grad = False


def freeze_locked_batch_norm(module: nn.Module) -> nn.Module:
    """timm's frozen BatchNorm (fixed running statistics) in every sub-module whose parameters are all locked.

    A partly unlocked CNN trains its last stages with batch statistics while the
    locked stages keep the pretrained ones (in train mode they would otherwise use,
    and overwrite, batch statistics under frozen weights). Returns ``module`` or its replacement.
    """
    from timm.layers import freeze_batch_norm_2d

    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return freeze_batch_norm_2d(module)
    for name, child in module.named_children():
        replacement = freeze_locked_batch_norm(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _create_model(config: TrainConfig, load_weights: bool) -> DALIPModel:
    m = config.model
    return create_model(
        m.name,
        pretrained=m.pretrained if load_weights else None,
        first_order=m.first_order,
        second_order=m.second_order,
        second_options=m.second_options,
        alpha=m.alpha,
        separate_second_scale=m.separate_second_scale,
        alpha_learnable=m.alpha_learnable,
        pretrained_towers=load_weights,
        pretrained_strict=m.pretrained_strict,
        **m.open_clip,
    )


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


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``run.precision`` bf16 (or auto on a GPU), else nothing (fp32)."""
    precision = config.run.precision
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


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
