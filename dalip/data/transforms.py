"""Image transforms: light augmentation for training, a plain resize for evaluation; the normalisation fallback.

Normalisation comes from the dataset spec when it sets ``mean`` / ``std``, else from
the model's own open_clip preprocess config (`model_preprocess`; e.g. effl0-minilm
brings 0.5 / 0.5), else from the one fallback, `FALLBACK_MEAN` / `FALLBACK_STD`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2

__all__ = [
    "FALLBACK_MEAN", "FALLBACK_SIZE", "FALLBACK_STD", "PilTransform", "image_transform", "model_preprocess",
    "model_transform", "to_uint8_chw",
]

#: The one normalisation fallback, for when neither the dataset spec nor the model names one:
#: open_clip's OpenAI values (``open_clip.OPENAI_DATASET_MEAN`` / ``OPENAI_DATASET_STD``), which
#: open_clip itself uses for a model whose config gives none (``open_clip.transform.PreprocessCfg``),
#: so dalip's transforms and the model's own (`model_transform`) agree. Models built by open_clip or
#: dalip always carry their own values (effl0-minilm: 0.5, the pretrained_cfg of timm's
#: tf_efficientnet_lite0); the fallback serves bare modules only.
FALLBACK_MEAN = (0.48145466, 0.4578275, 0.40821073)
FALLBACK_STD = (0.26862954, 0.26130258, 0.27577711)
#: input side when neither the dataset spec nor the model gives one (open_clip's default)
FALLBACK_SIZE = 224


def to_uint8_chw(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A PIL image or `(H, W, 3)` uint8 array as a `(3, H, W)` uint8 tensor; tensors `(3, H, W)` / `(B, 3, H, W)` pass."""
    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) image array, got shape {image.shape}")
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = np.ascontiguousarray(image).copy()  # torch warns on read-only arrays
        return torch.from_numpy(image).permute(2, 0, 1)
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) image tensor, got shape {tuple(image.shape)}")
    return image


def _triple(value: float | Sequence[float], name: str) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} must be a number or one value per RGB channel, got {value!r}")
    return values


def image_transform(
    image_size: int | tuple[int, int] | None = 128,
    train: bool = False,
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
    flip: bool = True,
) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """Image -> normalised float `(3, S, S)` (a `(B, 3, H, W)` uint8 batch -> `(B, 3, S, S)`).

    The one image pipeline of dalip: training data, evaluation sets and
    `dalip.eval.to_float_images` all resize with it (bicubic, antialiased).

    Training: random resized crop (scale 0.7-1, near-square so emoji keep their
    shape), optional horizontal flip, small brightness/contrast/saturation
    jitter (no hue: colour names such as "green apple" must stay true).
    Evaluation: a bicubic, antialiased resize of the whole image (none when
    ``image_size`` is None or the image has that size already).

    Args:
        image_size: the side ``S``, or ``(height, width)``; None keeps the size (evaluation only).
        mean: normalisation mean, one number or one per RGB channel. The default 0.5 (with
            ``std`` 0.5) maps pixels to [-1, 1]; dalip's own callers always pass the spec's or
            the model's values, or the fallback (`FALLBACK_MEAN` / `FALLBACK_STD`).
        std: normalisation standard deviation, one number or one per RGB channel.
        flip: mirror half the training images; turn off for text, arrows and flags.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    if train:
        if size is None:
            raise ValueError("training transforms need an image_size")
        steps = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True)]
        steps += [v2.RandomHorizontalFlip()] if flip else []
        steps += [v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1)]
    else:
        steps = [] if size is None else [v2.Resize(tuple(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    normalise = v2.Normalize(_triple(mean, "mean"), _triple(std, "std"))
    pipeline = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), normalise])

    def transform(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        return pipeline(to_uint8_chw(image))

    return transform


PilTransform = Callable[[Image.Image], Tensor]
"""Maps one RGB PIL image to a float tensor ``(3, H, W)``."""


def model_preprocess(model: nn.Module) -> dict[str, Any]:
    """The model's open_clip preprocess config: ``size``, ``mean``, ``std`` ... (only the keys it sets).

    ``open_clip.get_model_preprocess_cfg`` of the model (or of a `DALIPModel`'s wrapped
    ``model.clip``): ``visual.preprocess_cfg``, else the legacy ``visual.image_size`` /
    ``image_mean`` / ``image_std`` attributes; ``{}`` for a module without them (no fallbacks
    applied: see `FALLBACK_MEAN`).
    """
    from open_clip import get_model_preprocess_cfg

    try:
        return dict(get_model_preprocess_cfg(getattr(model, "clip", model)))
    except AttributeError:  # a bare module without open_clip's image_size attribute
        return {}


def model_transform(model: nn.Module) -> PilTransform:
    """open_clip's evaluation transform (resize, centre crop, normalise) from the model's preprocess config.

    The config is `model_preprocess`: the ``visual.preprocess_cfg`` open_clip sets,
    else ``visual.image_size`` / ``image_mean`` / ``image_std``, with open_clip's defaults
    for what it leaves unset (the OpenAI mean and std, `FALLBACK_MEAN` / `FALLBACK_STD`,
    bicubic, shortest-side resize).
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2

    config = model_preprocess(model)
    known = {f.name for f in dataclasses.fields(PreprocessCfg)}
    return image_transform_v2(PreprocessCfg(**{k: v for k, v in config.items() if k in known}), is_train=False)
