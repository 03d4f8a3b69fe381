"""Rebuilding a run's model from its ``checkpoint.pt``: checkpoint -> config -> model -> weights."""

from __future__ import annotations

from pathlib import Path

from ..models import DALIPModel, LoadReport
from .checkpoint import load_training_checkpoint
from .config import TrainConfig, config_from_dict

__all__ = ["load_run"]


def load_run(checkpoint_path: str | Path, overrides: list[str] | None = None) -> tuple[DALIPModel, TrainConfig]:
    """The trained model of a ``dalip train`` checkpoint and the run's config.

    The model is built from the config stored in the checkpoint without any
    pretrained weights (no ``model.pretrained`` file, hub download or packaged
    towers is needed: the checkpoint holds every weight), then the checkpoint's
    state dict is loaded strictly. ``model.load_report`` names the checkpoint.

    Args:
        checkpoint_path: a ``checkpoint.pt`` written by ``dalip train``.
        overrides: config overrides (``section.key=value``), e.g. for evaluation settings.

    Returns:
        ``(model, config)``; the model is in eval mode on the CPU.

    Raises:
        FileNotFoundError: no checkpoint at the path.
        ValueError: not a dalip training checkpoint (``ConfigError`` for a bad stored config).
    """
    from .builders import build_model

    state = load_training_checkpoint(checkpoint_path)
    if "config" not in state:
        raise ValueError(f"{checkpoint_path} holds no run config; it was not written by dalip train")
    config = config_from_dict(state["config"], overrides)
    model = build_model(config, load_weights=False)
    model.load_state_dict(state["model"])
    model.load_report = LoadReport(source=f"run checkpoint {checkpoint_path} (step {state['step']})")
    return model.eval(), config
