"""A run's model from its config: the towers and heads, tower locking, gradient checkpointing."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from dalip.errors import ConfigError, CorruptCheckpointError, PretrainedMismatchError
from dalip.models import DALIPModel, create_model
from dalip.runs.config import TrainConfig


def build_model(config: TrainConfig, load_weights: bool = True) -> DALIPModel:
    """The DALIP model of a config, with tower locking and gradient checkpointing applied.

    ``load_weights=False`` builds the architecture only (no ``model.pretrained``, hub or
    packaged weights), for loading a checkpoint that holds every weight.
    """
    m = config.model
    try:
        model = _create_model(config, load_weights)
    except (PretrainedMismatchError, CorruptCheckpointError) as err:
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
    """`create_model` with the config's model name, weights, heads and open_clip options."""
    m = config.model
    return create_model(
        m.name,
        pretrained=m.pretrained if load_weights else None,
        pretrained_towers=load_weights,
        pretrained_strict=m.pretrained_strict,
        init_seed=None,  # a run seeds its model from run.seed (the trainer sets it before building)
        **m.heads.as_kwargs(),
        **m.open_clip,
    )
