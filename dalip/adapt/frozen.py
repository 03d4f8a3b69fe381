"""The frozen model of a few-shot run: a config's model, optionally with a `dalip train` checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from dalip.models import get_tokenizer
from dalip.runs import build_model, load_config, load_run
from dalip.runs.data import make_spec

__all__ = ["FrozenModel", "freeze", "load_frozen_model"]


@dataclass
class FrozenModel:
    """A model in eval mode with gradients off, its tokenizer and its image input.

    Attributes:
        source: what was loaded, for reports (``"config quickstart"`` / ``"checkpoint ..."``).
    """

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    source: str


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter; returns the model."""
    return model.eval().requires_grad_(False)


def load_frozen_model(config: str | Path = "quickstart", checkpoint: str | Path | None = None) -> FrozenModel:
    """The model of ``config`` (a shipped name or YAML path), or of ``checkpoint``'s own config.

    Without a checkpoint the towers are the config's (pretrained) towers and any DALIP
    heads are freshly initialised -- untrained -- so the second-order and combined
    embeddings are random projections of the tokens. A ``checkpoint.pt`` from
    ``dalip train`` restores the trained heads and projection.
    """
    if checkpoint is not None:
        model, cfg = load_run(checkpoint)
        source = model.load_report.source
    else:
        cfg = load_config(config)
        model = build_model(cfg)
        source = f"config {config} (untrained DALIP heads)" if getattr(model, "has_second_order", False) \
            else f"config {config}"
    size, mean, std = make_spec(cfg, model).preprocess
    return FrozenModel(freeze(model), get_tokenizer(cfg.model.name), size, mean, std, source)
