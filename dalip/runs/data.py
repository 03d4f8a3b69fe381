"""A run's data from its config: the dataset spec, the evaluation sets and their image transform."""

from __future__ import annotations

from functools import partial
from typing import Any

import dalip.data as dalip_data
from dalip.errors import ConfigError
from dalip.eval import ZeroShotSet, to_float_images, zero_shot_eval_set
from dalip.runs.config import TrainConfig


def run_eval_sets(config: TrainConfig, model: Any = None) -> dict:
    """The evaluation sets of ``config.data`` (subset name -> eval set)."""
    return dalip_data.build_eval_sets(make_spec(config, model))


def eval_image_transform(config: TrainConfig, model: Any = None) -> Any:
    """uint8 ``(N, H, W, 3)`` -> normalised float ``(N, 3, S, S)`` with the run's preprocessing.

    The spec's ``image_size`` / ``mean`` / ``std``, else the model's, else the fallback
    (`dalip.data.transforms.FALLBACK_MEAN`: see `dalip.data.DatasetSpec.preprocess`).
    """
    size, mean, std = make_spec(config, model).preprocess
    return partial(to_float_images, image_size=size, mean=mean, std=std)


def make_spec(config: TrainConfig, model: Any = None) -> Any:
    """The dataset spec of ``config.data.spec`` (a registered kind, see ``dalip.data.list_datasets``).

    ``image_size`` / ``mean`` / ``std`` left unset come from ``model``'s open_clip preprocessing.

    Raises:
        ConfigError: unknown kind or option, bad value (the message names it).
    """
    try:
        spec = dalip_data.create_dataset(dict(config.data.spec))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.spec: {err}") from None
    return spec.with_model_preprocess(model) if model is not None else spec


def zero_shot_sets(config: TrainConfig) -> dict[str, ZeroShotSet]:
    """The labelled image sets of ``config.eval.zero_shot`` (decoded with the model's own transform).

    Classes whose images are all unreadable are left out (named in a warning). A training run builds
    these sets before its first step (`dalip.train.batches.build_data`), so a bad entry stops it there.

    Raises:
        ConfigError: an entry's folder / CSV / classnames / templates is bad, or it has fewer than two
            classes with a readable image (the message names the entry and the file).
    """
    sets: dict[str, ZeroShotSet] = {}
    for i, entry in enumerate(config.eval.zero_shot):
        try:
            found = zero_shot_eval_set(
                entry["path"], entry.get("classnames"), entry.get("templates") or "openai_imagenet",
                name=entry.get("name"), batch_size=config.eval.batch_size, workers=config.data.workers,
                img_key=entry.get("img_key", "filepath"), label_key=entry.get("label_key", "label"),
                separator=entry.get("separator"),
            )
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"eval.zero_shot[{i}]: {err}") from None
        sets[found.name] = found
    return sets
