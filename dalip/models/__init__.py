"""Models: towers and offline pretrained weights."""

from .pretrained import efficientnet_lite0_weights, load_efficientnet_lite0

__all__ = ["efficientnet_lite0_weights", "load_efficientnet_lite0"]
