"""The model's own open_clip evaluation transform for PIL images."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PIL import Image
from torch import Tensor, nn

__all__ = ["PilTransform", "model_transform"]

PilTransform = Callable[[Image.Image], Tensor]
"""Maps one RGB PIL image to a float tensor ``(3, H, W)``."""


def model_transform(model: nn.Module) -> PilTransform:
    """open_clip's evaluation transform (resize, centre crop, normalise) from the model's preprocess config.

    The config is ``open_clip.get_model_preprocess_cfg`` of the model (or of a
    `DALIPModel`'s wrapped ``model.clip``): the ``visual.preprocess_cfg`` open_clip
    sets for pretrained weights, else ``visual.image_size`` / ``image_mean`` /
    ``image_std`` with open_clip's defaults (OpenAI mean and std, bicubic, shortest-side resize).
    """
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    config = get_model_preprocess_cfg(getattr(model, "clip", model))
    known = {f.name for f in dataclasses.fields(PreprocessCfg)}
    return image_transform_v2(PreprocessCfg(**{k: v for k, v in config.items() if k in known}), is_train=False)
