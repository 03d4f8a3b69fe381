"""Rebuilding a run's model from its ``checkpoint.pt``: checkpoint -> config -> model -> weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dalip.models import DALIPModel, LoadReport
from dalip.runs.checkpoint import load_training_checkpoint
from dalip.runs.config import TrainConfig, config_from_dict, parse_overrides
from dalip.runs.model import build_model

__all__ = ["load_run", "read_run"]


def read_run(checkpoint_path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], TrainConfig]:
    """The checkpoint state (checksum verified, no model built) and the run config of a ``dalip train`` checkpoint.

    Args:
        checkpoint_path: a ``checkpoint.pt`` written by ``dalip train``.
        overrides: config overrides (``section.key=value``) applied to the stored config.

    Returns:
        ``(state, config)``: the checkpoint dict (``model``, ``step``, ``config``, ...) and the config.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        ValueError: not a dalip training checkpoint (``ConfigError`` for a bad stored config).
    """
    state = load_training_checkpoint(checkpoint_path)
    if "config" not in state:
        raise ValueError(f"{checkpoint_path} holds no run config; it was not written by dalip train")
    return state, config_from_dict(state["config"], overrides)


def load_run(checkpoint_path: str | Path, overrides: list[str] | None = None) -> tuple[DALIPModel, TrainConfig]:
    """The trained model of a ``dalip train`` checkpoint and the run's config.

    The model is built from the config stored in the checkpoint without any
    pretrained weights (no ``model.pretrained`` file, hub download or packaged
    towers is needed: the checkpoint holds every weight), then the checkpoint's
    state dict is loaded strictly. ``model.load_report`` names the checkpoint.

    An override ``model.alpha=<a>`` sets the fusion weight of the ``combined``
    embedding, also on a run that learned its alpha (``model.alpha_learnable``): the
    weight chosen from a fusion curve replaces the learned one, without retraining.
    ``model.alpha_learnable=false`` alone keeps the learned weight as a fixed one.
    ``model.train_alpha`` is the weight the run trained at (reports mark it apart from ``model.alpha``).

    Args:
        checkpoint_path: a ``checkpoint.pt`` written by ``dalip train``.
        overrides: config overrides (``section.key=value``), e.g. for evaluation settings.

    Returns:
        ``(model, config)``; the model is in eval mode on the CPU.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        ValueError: not a dalip training checkpoint (``ConfigError`` for a bad stored config).
    """
    state, config = read_run(checkpoint_path, overrides)
    model = build_model(config, load_weights=False)
    weights = dict(state["model"])
    learned = weights.pop("alpha_logit", None) if model.alpha_logit is None else None  # alpha_learnable=false given
    model.load_state_dict(weights)
    stored_logit = state["model"].get("alpha_logit")
    model.train_alpha = (torch.sigmoid(stored_logit.double()).item() if stored_logit is not None  # what it trained at
                         else float(state.get("config", {}).get("model", {}).get("alpha", config.model.alpha)))
    if "alpha" in parse_overrides(overrides or []).get("model", {}):
        model.alpha = config.model.alpha  # the chosen weight, also over a learned one
    elif learned is not None:
        model.alpha = torch.sigmoid(learned.double()).item()  # the learned weight, now fixed
    model.load_report = LoadReport(source=f"run checkpoint {checkpoint_path} (step {state['step']})")
    return model.eval(), config
