"""Image transforms: configurable augmentation for training (open_clip's by default), a plain resize for
evaluation; the normalisation fallback.

Normalisation comes from the dataset spec when it sets ``mean`` / ``std``, else from
the model's own open_clip preprocess config (`model_preprocess`; e.g. effl0-minilm
brings 0.5 / 0.5), else from the one fallback, `FALLBACK_MEAN` / `FALLBACK_STD`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2

__all__ = [
    "EMOJI_AUGMENTATION", "FALLBACK_MEAN", "FALLBACK_SIZE", "FALLBACK_STD", "INTERPOLATIONS", "Augmentation",
    "PilTransform", "augmentation_steps", "image_transform", "model_preprocess", "model_transform", "to_uint8_chw",
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


#: the crop's resize modes of `Augmentation.interpolation`
INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation (``data.spec.augment``): open_clip's ``AugmentationCfg`` fields, plus ``hflip``.

    The defaults are open_clip's training transform (``open_clip.image_transform(is_train=True)``):
    a bicubic random resized crop of 0.9-1 of the area at torchvision's aspect ratios, nothing else.

    Attributes:
        scale: range of the cropped share of the image area.
        ratio: range of the crop's aspect ratio; None: torchvision's (3/4, 4/3), open_clip's.
            (open_clip reads it with ``use_timm`` only; dalip always applies it.)
        color_jitter: brightness, contrast, saturation (and hue) jitter: one number for the
            first three, or 3 or 4 numbers; None: no jitter.
        color_jitter_prob: share of images jittered; None: all of them (timm's way; open_clip
            without timm jitters only when this is set).
        gray_scale_prob: share of images turned grey (open_clip's SimCLR-style option); None: none.
        hflip: share of images mirrored (``true``: 0.5); dalip's own field, off as in open_clip
            (captions that say "left" or "right" stay true).
        interpolation: ``bicubic`` (open_clip's) or ``bilinear``, for the crop's resize.
        re_prob, re_count: timm's random erasing; need ``use_timm``.
        use_timm: hand the whole pipeline to timm's ``create_transform`` through open_clip
            (``scale``, ``ratio``, ``color_jitter``, ``re_prob``, ``re_count``, ``interpolation``).
    """

    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] | None = None
    color_jitter: float | tuple[float, ...] | None = None
    color_jitter_prob: float | None = None
    gray_scale_prob: float | None = None
    hflip: float = 0.0
    interpolation: str = "bicubic"
    re_prob: float | None = None
    re_count: int | None = None
    use_timm: bool = False

    def __post_init__(self) -> None:
        for key in ("scale", "ratio"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _pair(value, key))
        if isinstance(self.color_jitter, (list, tuple)):
            object.__setattr__(self, "color_jitter", tuple(float(v) for v in self.color_jitter))
        if isinstance(self.hflip, bool):
            object.__setattr__(self, "hflip", 0.5 if self.hflip else 0.0)
        _check_augmentation(self)

    @classmethod
    def from_config(cls, value: bool | Mapping[str, Any] | Augmentation, default: Augmentation | None = None
                    ) -> Augmentation | None:
        """``data.spec.augment`` as an `Augmentation`: None for ``false``, ``default`` (else open_clip's)
        for ``true``, the given fields over open_clip's defaults for a mapping.

        Raises:
            ValueError: an unknown field (naming it and the valid ones) or a value out of range.
            TypeError: neither a bool nor a mapping.
        """
        if isinstance(value, Augmentation) or value is False or value is None:
            return value or None
        if value is True:
            return default or cls()
        if not isinstance(value, Mapping):
            raise TypeError(f"data.spec.augment must be true, false or a mapping of augmentation fields, got {value!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in value if k not in valid]
        if unknown:
            raise ValueError(f"unknown data.spec.augment field {unknown[0]!r}; valid fields: {', '.join(valid)}")
        return cls(**value)

    def open_clip_cfg(self) -> dict[str, Any]:
        """The fields of open_clip's ``AugmentationCfg`` that are set (for its timm pipeline)."""
        keys = ("scale", "ratio", "color_jitter", "re_prob", "re_count", "use_timm")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _pair(value: Sequence[float], key: str) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"data.spec.augment.{key} must be two numbers [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not 0 < low <= high:
        raise ValueError(f"data.spec.augment.{key} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def _check_augmentation(aug: Augmentation) -> None:
    """Range checks of the fields; a ValueError names the field of ``data.spec.augment``."""
    problems = [
        (aug.scale[1] <= 1, f"scale must lie in (0, 1], got {aug.scale}"),
        (aug.interpolation in INTERPOLATIONS,
         f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {aug.interpolation!r}"),
        (0 <= aug.hflip <= 1, f"hflip must be true, false or a probability in [0, 1], got {aug.hflip!r}"),
        (aug.use_timm or (aug.re_prob is None and aug.re_count is None),
         "re_prob and re_count (random erasing) need use_timm: true"),
        (not (aug.use_timm and (aug.hflip or aug.gray_scale_prob or aug.color_jitter_prob)),
         "hflip, gray_scale_prob and color_jitter_prob are not available with use_timm: true"),
        (aug.color_jitter is None or len(_jitter(aug.color_jitter)) in (3, 4),
         "color_jitter must be one number or 3 or 4 numbers (brightness, contrast, saturation, hue), got "
         + repr(aug.color_jitter)),
    ]
    problems += [(p is None or 0 <= p <= 1, f"{key} must be a probability in [0, 1], got {p!r}")
                 for key, p in (("color_jitter_prob", aug.color_jitter_prob), ("gray_scale_prob", aug.gray_scale_prob),
                                ("re_prob", aug.re_prob))]
    for ok, message in problems:
        if not ok:
            raise ValueError(f"data.spec.augment.{message}")


def _jitter(value: float | tuple[float, ...]) -> tuple[float, ...]:
    """``color_jitter`` as ``(brightness, contrast, saturation[, hue])`` (one number: the first three, as timm)."""
    return (float(value),) * 3 if isinstance(value, (int, float)) else tuple(value)


#: the light emoji augmentation of the quickstart's embedded data (and of `image_transform`'s ``train=True``):
#: a near-square crop of 0.7-1 of the area (emoji keep their shape), half the images mirrored,
#: small brightness / contrast / saturation jitter (no hue: "green apple" must stay true)
EMOJI_AUGMENTATION = Augmentation(scale=(0.7, 1.0), ratio=(0.9, 1.1), color_jitter=(0.1, 0.1, 0.1), hflip=0.5,
                                  interpolation="bilinear")


def augmentation_steps(size: tuple[int, int], aug: Augmentation) -> list[Callable[[Tensor], Tensor]]:
    """The random steps of ``aug`` on a uint8 ``(3, H, W)`` tensor -> ``(3, *size)``, drawn from torch's RNG."""
    ratio = {} if aug.ratio is None else {"ratio": aug.ratio}
    steps = [v2.RandomResizedCrop(size, scale=aug.scale, **ratio, interpolation=INTERPOLATIONS[aug.interpolation],
                                  antialias=True)]
    steps += [v2.RandomHorizontalFlip(p=aug.hflip)] if aug.hflip else []
    if aug.color_jitter is not None:
        jitter = v2.ColorJitter(*_jitter(aug.color_jitter))
        prob = 1.0 if aug.color_jitter_prob is None else aug.color_jitter_prob
        steps += [jitter if prob >= 1 else v2.RandomApply([jitter], p=prob)]
    steps += [v2.RandomGrayscale(p=aug.gray_scale_prob)] if aug.gray_scale_prob else []
    return steps


def _timm_transform(size: tuple[int, int], aug: Augmentation, mean: list[float], std: list[float]
                    ) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """open_clip's timm training pipeline (``use_timm``), fed a PIL image."""
    from open_clip.transform import image_transform as open_clip_transform

    pipeline = open_clip_transform(size, True, tuple(mean), tuple(std), interpolation=aug.interpolation,
                                   aug_cfg=aug.open_clip_cfg())
    return lambda image: pipeline(v2.functional.to_pil_image(to_uint8_chw(image)))


def image_transform(
    image_size: int | tuple[int, int] | None = 128,
    train: bool = False,
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
    augmentation: Augmentation | None = None,
) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """Image -> normalised float `(3, S, S)` (a `(B, 3, H, W)` uint8 batch -> `(B, 3, S, S)`).

    The one image pipeline of dalip: training data, evaluation sets and
    `dalip.eval.to_float_images` all resize with it.

    Training: the random steps of ``augmentation`` (`augmentation_steps`); by default
    `EMOJI_AUGMENTATION` (dataset specs pass theirs: open_clip's unless configured).
    Evaluation: a bicubic, antialiased resize of the whole image (none when
    ``image_size`` is None or the image has that size already).

    Args:
        image_size: the side ``S``, or ``(height, width)``; None keeps the size (evaluation only).
        train: augment (else the evaluation resize).
        mean: normalisation mean, one number or one per RGB channel. The default 0.5 (with
            ``std`` 0.5) maps pixels to [-1, 1]; dalip's own callers always pass the spec's or
            the model's values, or the fallback (`FALLBACK_MEAN` / `FALLBACK_STD`).
        std: normalisation standard deviation, one number or one per RGB channel.
        augmentation: the training augmentation; None: `EMOJI_AUGMENTATION`.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    mean, std = _triple(mean, "mean"), _triple(std, "std")
    if train:
        if size is None:
            raise ValueError("training transforms need an image_size")
        augmentation = augmentation or EMOJI_AUGMENTATION
        if augmentation.use_timm:
            return _timm_transform(tuple(size), augmentation, mean, std)
        steps = augmentation_steps(tuple(size), augmentation)
    else:
        steps = [] if size is None else [v2.Resize(tuple(size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    pipeline = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

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
