"""Training augmentation as a config (data.spec.augment): open_clip's default, the Twemoji quickstart's emoji settings."""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
from torchvision.transforms import v2

from dalip.data import create_dataset
from dalip.data.transforms import EMOJI_AUGMENTATION, Augmentation, augmentation_steps, image_transform
from dalip.data.twemoji.dataset import TwemojiCaptions
from dalip.errors import ConfigError
from dalip.runs import load_config

HALVES = torch.zeros(3, 40, 40, dtype=torch.uint8)
HALVES[:, :, 20:] = 255  # dark left half, white right half: a mirror swaps them


def crop_of(steps: list) -> v2.RandomResizedCrop:
    (crop,) = [s for s in steps if isinstance(s, v2.RandomResizedCrop)]
    return crop


def test_default_for_csv_is_open_clip_train_transform() -> None:
    """``augment: true`` for csv data: open_clip's crop (scale 0.9-1, its ratios, bicubic), no flip, no jitter."""
    spec = create_dataset("csv", train="unused.csv", image_size=32)
    aug = spec.augmentation()
    assert aug == Augmentation() and aug.scale == (0.9, 1.0) and aug.hflip == 0 and aug.color_jitter is None
    steps = augmentation_steps((32, 32), aug)
    assert [type(s) for s in steps] == [v2.RandomResizedCrop]
    reference = open_clip.image_transform(32, is_train=True).transforms[0]  # open_clip's own train transform
    crop = crop_of(steps)
    assert (tuple(crop.scale), tuple(crop.ratio)) == (tuple(reference.scale), tuple(reference.ratio))
    assert crop.interpolation == reference.interpolation == v2.InterpolationMode.BICUBIC
    assert create_dataset("folder", train="unused/").augmentation() == aug
    assert create_dataset("wds", train="unused-{000..001}.tar").augmentation() == aug


def test_default_transform_never_flips_or_jitters() -> None:
    transform = create_dataset("csv", train="unused.csv", image_size=16, mean=[0.0] * 3, std=[1.0] * 3).train_transform()
    grey = torch.full((3, 40, 40), 100, dtype=torch.uint8)
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(HALVES)
        assert out[:, :, :3].mean() < 0.3 and out[:, :, -3:].mean() > 0.7  # the left edge stays dark
        torch.testing.assert_close(transform(grey), torch.full((3, 16, 16), 100 / 255))  # no colour jitter


def test_augment_false_is_the_evaluation_resize() -> None:
    spec = create_dataset("csv", train="unused.csv", image_size=16, augment=False, mean=[0.5] * 3, std=[0.5] * 3)
    assert spec.augmentation() is None
    torch.testing.assert_close(spec.train_transform()(HALVES), image_transform(16, False, 0.5, 0.5)(HALVES))


def todays_emoji_transform(size: int, flip: bool) -> v2.Compose:
    """A copy of the training pipeline of dalip.data.transforms.image_transform before augment became a config."""
    steps = [v2.RandomResizedCrop((size, size), scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True)]
    steps += [v2.RandomHorizontalFlip()] if flip else []
    steps += [v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1)]
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])


@pytest.mark.parametrize("subset", ["domain", "general"])
def test_twemoji_transform_is_bit_identical_to_todays(subset: str) -> None:
    """The quickstart's items (flips on domain emoji only) are exactly those of the old pipeline, seed for seed."""
    spec = create_dataset({"dataset": "twemoji", "subsets": [subset], "image_size": 24, "mean": [0.5] * 3,
                           "std": [0.5] * 3})
    ours = spec.source()
    old = todays_emoji_transform(24, flip=subset == "domain")
    before = TwemojiCaptions(spec.split(), [subset], transform=lambda image: old(torch.from_numpy(image).permute(2, 0, 1)))
    for item in range(0, len(ours), max(1, len(ours) // 25)):
        torch.manual_seed(item)
        image, caption = ours[item]
        torch.manual_seed(item)
        expected, expected_caption = before[item]
        assert caption == expected_caption
        assert torch.equal(image, expected)


def test_twemoji_dict_replaces_the_emoji_default() -> None:
    spec = create_dataset({"dataset": "twemoji", "augment": {"scale": [0.5, 1.0]}})
    assert spec.augmentation(EMOJI_AUGMENTATION) == Augmentation(scale=(0.5, 1.0))


def test_dict_fields_build_the_steps() -> None:
    spec = create_dataset("csv", train="unused.csv", image_size=16, augment={
        "scale": [0.5, 1], "ratio": [0.8, 1.25], "hflip": True, "color_jitter": [0.4, 0.4, 0.4, 0.1],
        "color_jitter_prob": 0.8, "gray_scale_prob": 0.2, "interpolation": "bilinear"})
    aug = spec.augmentation()
    assert aug.hflip == 0.5 and aug.color_jitter == (0.4, 0.4, 0.4, 0.1)
    steps = augmentation_steps((16, 16), aug)
    assert [type(s) for s in steps] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandomApply,
                                       v2.RandomGrayscale]
    crop = crop_of(steps)
    assert tuple(crop.scale) == (0.5, 1.0) and tuple(crop.ratio) == (0.8, 1.25)
    assert crop.interpolation == v2.InterpolationMode.BILINEAR
    assert steps[1].p == 0.5 and steps[2].p == 0.8 and steps[3].p == 0.2
    assert spec.train_transform()(HALVES).shape == (3, 16, 16)


def test_hflip_one_mirrors_every_image() -> None:
    transform = create_dataset("csv", train="unused.csv", image_size=16, mean=[0.0] * 3, std=[1.0] * 3,
                               augment={"hflip": 1.0}).train_transform()
    out = transform(HALVES)
    assert out[:, :, :3].mean() > 0.7 and out[:, :, -3:].mean() < 0.3


def test_unknown_augment_key_names_it_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown data.spec.augment field 'flip'; valid fields: scale, ratio, .*hflip"):
        create_dataset("csv", train="unused.csv", augment={"flip": True})
    with pytest.raises(ConfigError, match=r"data.spec: unknown data.spec.augment field 'scal'"):
        load_config("quickstart", ["data.spec.augment={scal: [0.8, 1]}"])


@pytest.mark.parametrize(("augment", "message"), [
    ({"scale": [0.9]}, "augment.scale must be two numbers"),
    ({"scale": [0.5, 1.5]}, r"augment.scale must lie in \(0, 1\]"),
    ({"hflip": 2}, "augment.hflip must be true, false or a probability"),
    ({"interpolation": "lanczos"}, "augment.interpolation must be one of bicubic, bilinear"),
    ({"re_prob": 0.25}, "re_prob and re_count .* need use_timm"),
    ({"color_jitter": [0.1, 0.1]}, "augment.color_jitter must be one number or 3 or 4 numbers"),
    ({"gray_scale_prob": 1.5}, "augment.gray_scale_prob must be a probability"),
])
def test_bad_augment_values_are_refused(augment: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_dataset("csv", train="unused.csv", augment=augment)


def test_override_sets_one_field_and_cache_frozen_refuses_any_augmentation() -> None:
    config = load_config("quickstart", ["data.spec.augment.scale=[0.8,1]"])
    assert create_dataset(dict(config.data.spec)).augmentation() == Augmentation(scale=(0.8, 1.0))
    with pytest.raises(ConfigError, match="training augmentation is on"):
        load_config("quickstart", ["model.cache_frozen=true", "data.spec.augment={}"])


def test_use_timm_hands_the_pipeline_to_open_clip() -> None:
    pytest.importorskip("timm")
    aug = Augmentation(use_timm=True, re_prob=0.25, color_jitter=0.4)
    assert aug.open_clip_cfg() == {"scale": (0.9, 1.0), "color_jitter": 0.4, "re_prob": 0.25, "use_timm": True}
    torch.manual_seed(0)
    out = image_transform(16, True, 0.5, 0.5, augmentation=aug)(HALVES)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="not available with use_timm"):
        Augmentation(use_timm=True, hflip=True)


def test_image_transform_train_default_is_the_emoji_augmentation() -> None:
    """`image_transform(train=True)` without an augmentation (few-shot views): the emoji settings, as before."""
    assert dataclasses.replace(EMOJI_AUGMENTATION) == Augmentation(
        scale=(0.7, 1.0), ratio=(0.9, 1.1), color_jitter=(0.1, 0.1, 0.1), hflip=0.5, interpolation="bilinear")
    torch.manual_seed(3)
    ours = image_transform(24, True)(HALVES)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, todays_emoji_transform(24, flip=True)(HALVES), rtol=0, atol=0)
