"""Datasets as registered components: ``create_dataset``, ``list_datasets``, ``register_dataset``.

Each dataset kind is a small options dataclass registered under its name, in the
manner of the pooler and loss registries. The options every kind shares
(preprocessing, seed, mixing with a second source, an extra retrieval set) live in
`DatasetSpec`; a kind adds only its own (paths, columns ...).

```python
list_datasets()                                          # the registered kinds, e.g. ['csv', 'folder', 'wds', ...]
spec = create_dataset("csv", train="train.tsv", image_size=224)
spec = create_dataset({"dataset": "folder", "train": "leaves/"})    # a config's data.spec
train = build_train_dataset(spec)    # items ((3, S, S) float, caption) or None (unreadable)
evals = build_eval_sets(spec)        # {name: EvalSet}: the kind's own sets, plus `val` if set
```
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset, IterableDataset

from dalip.data.batch import Sample
from dalip.data.eval_sets import EvalSet
from dalip.data.transforms import (
    FALLBACK_MEAN,
    FALLBACK_SIZE,
    FALLBACK_STD,
    Augmentation,
    image_transform,
    model_preprocess,
)
from dalip.registry import Registry

__all__ = [
    "DATASETS", "DatasetSpec", "create_dataset", "list_datasets",
    "register_dataset",
]

logger = logging.getLogger(__name__)

DATASETS: Registry[DatasetSpec] = Registry("dataset")


@dataclass
class DatasetSpec:
    """Options every dataset kind shares. Subclasses add their own and implement `source`.

    Attributes:
        image_size: model input size; None: the model's (the trainer fills it in from the
            model's open_clip preprocessing), else `dalip.data.transforms.FALLBACK_SIZE` (224).
        augment: training augmentation: ``true`` the kind's default (open_clip's: a crop of
            0.9-1 of the area, no flip, no jitter; the quickstart's embedded emoji bring their
            own, `dalip.data.transforms.EMOJI_AUGMENTATION`), ``false`` the evaluation resize, or a mapping of
            `dalip.data.transforms.Augmentation` fields (open_clip's ``aug_cfg``: ``scale``,
            ``ratio``, ``color_jitter``, ``hflip`` ...) over open_clip's defaults.
        mean, std: input normalisation; None: the model's, else the fallback
            (`dalip.data.transforms.FALLBACK_MEAN` / ``FALLBACK_STD``: open_clip's OpenAI values).
        seed: mixing plan, shard order and shuffle buffer.
        val: an extra caption CSV/TSV or shard pattern for retrieval evaluation.
        val_max_samples: cap on the `val` samples held in memory.
        mix_with: a second, general source mixed with this one (the domain source): a
            location a registered kind claims (see `from_location`), a ``.csv``/``.tsv``
            path, an image folder or a shard pattern.
        domain_fraction: share of this (domain) source per batch, in expectation.
        mix_length: items per epoch of a map-style mix; default the two sizes summed.
    """

    image_size: int | None = None
    augment: bool | dict = True
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    seed: int = 0
    val: str | None = None  # retrieval captions: a CSV/TSV or shards (labelled images for 'folder')
    val_max_samples: int = 10000
    mix_with: str | None = None
    domain_fraction: float | None = None
    mix_length: int | None = None

    kind: ClassVar[str] = ""
    #: the kind can mix two parts of itself when `domain_fraction` is set without `mix_with`
    mixes_itself: ClassVar[bool] = False
    #: `val` is a caption set for retrieval (else the kind evaluates it itself, in `own_eval_sets`)
    val_is_captions: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        for label, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and len(value) != 3:
                raise ValueError(f"{label} needs 3 values (one per RGB channel), got {value!r}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        if self.domain_fraction is not None and not 0.0 <= self.domain_fraction <= 1.0:
            raise ValueError(f"domain_fraction must be in [0, 1], got {self.domain_fraction}")
        if self.mix_with and self.domain_fraction is None:
            raise ValueError(f"mix_with={self.mix_with!r} needs domain_fraction (e.g. 0.5)")
        if self.domain_fraction is not None and not self.mix_with and not self.mixes_itself:
            raise ValueError(f"domain_fraction needs mix_with (the general source) for dataset {self.kind!r}")
        if self.val_max_samples < 1:
            raise ValueError(f"val_max_samples must be >= 1, got {self.val_max_samples}")
        self.augmentation()  # unknown fields and bad values fail here, before any data is read

    # ------------------------------------------------------------- per kind
    @classmethod
    def from_location(cls, location: str, common: Mapping[str, Any]) -> DatasetSpec | None:
        """The spec of a second source named by a `mix_with` / `val` string, if this kind claims it.

        A kind whose sources have names of their own (not file paths or shard patterns)
        overrides this to claim them; the generic rules (`dalip.data.build.source_kind`)
        apply to every location no registered kind claims.

        Args:
            location: the `mix_with` / `val` string.
            common: the shared preprocessing options (`common_options`) of the spec it joins.

        Returns:
            The kind's spec with ``common`` applied, or None (the default: claims nothing).
        """
        return None

    def source(self) -> Dataset | IterableDataset:
        """The training items of this kind alone: ``((3, S, S) float, caption)`` or None."""
        raise NotImplementedError

    def own_eval_sets(self) -> dict[str, EvalSet]:
        """Evaluation sets that come with this kind (e.g. held-out classes of an embedded dataset)."""
        return {}

    def raw_samples(self) -> Iterable[Sample | None]:
        """Untransformed ``(PIL image, caption)`` samples in file order (caption kinds; for `val`)."""
        raise ValueError(f"dataset {self.kind!r} cannot serve as a caption retrieval set (val)")

    def mix_sources(self) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset]:
        """``(domain, general)`` when the kind mixes itself (see `mixes_itself`)."""
        raise NotImplementedError

    # --------------------------------------------------------------- shared
    @property
    def preprocess(self) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        """``(image_size, mean, std)`` with the fallbacks applied."""
        return (self.image_size or FALLBACK_SIZE, tuple(self.mean or FALLBACK_MEAN), tuple(self.std or FALLBACK_STD))

    def augmentation(self, default: Augmentation | None = None) -> Augmentation | None:
        """The training augmentation of `augment`: None when off; ``true`` is ``default``, else open_clip's."""
        return Augmentation.from_config(self.augment, default)

    def train_transform(self, default: Augmentation | None = None) -> Callable[[Any], torch.Tensor]:
        """Image -> normalised float ``(3, S, S)``, augmented as `augmentation` says.

        Args:
            default: the kind's augmentation for ``augment: true`` (None: open_clip's, `Augmentation()`).
        """
        size, mean, std = self.preprocess
        augmentation = self.augmentation(default)
        return image_transform(size, augmentation is not None, mean, std, augmentation=augmentation)

    def with_model_preprocess(self, model: Any) -> DatasetSpec:
        """A copy whose unset `image_size` / `mean` / `std` come from the model's open_clip preprocessing."""
        cfg = model_preprocess(model)
        size = cfg.get("size")
        size = size[0] if isinstance(size, (tuple, list)) else size
        return dataclasses.replace(
            self,
            image_size=self.image_size or (int(size) if size else None),
            mean=self.mean or (tuple(cfg["mean"]) if cfg.get("mean") else None),
            std=self.std or (tuple(cfg["std"]) if cfg.get("std") else None),
        )

    def second_source(self, location: str) -> DatasetSpec:
        """This kind's spec of a second source at ``location`` (``mix_with``, ``val``): the same options
        (CSV columns, shuffle buffer, preprocessing ...), one source, no mix. Kinds override it to drop
        options that belong to the training stream only."""
        return dataclasses.replace(self, train=location, mix_with=None, domain_fraction=None, val=None)

    def common_options(self) -> dict[str, Any]:
        """The shared preprocessing options, for a second source built alongside this one."""
        return {"image_size": self.image_size, "augment": self.augment, "mean": self.mean, "std": self.std,
                "seed": self.seed}


def register_dataset(name: str, *, description: str | None = None) -> Callable[[type], type]:
    """Register a `DatasetSpec` subclass under ``name`` (its ``kind``)."""

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, DatasetSpec)):
            raise TypeError(f"dataset {name!r} must be a DatasetSpec subclass, got {cls!r}")
        cls.kind = name
        return DATASETS.register(name, description=description)(cls)

    return decorator


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset kinds matching a shell-style wildcard, sorted."""
    return DATASETS.list(pattern)


def create_dataset(kind: str | Mapping[str, Any] | None = None, **options: Any) -> DatasetSpec:
    """The options dataclass of a dataset kind.

    Args:
        kind: a registered kind, or a mapping ``{"dataset": kind, **options}`` (a config's
            ``data.spec``); None: the kind is ``options["dataset"]``.
        **options: the kind's options (see its class).

    Raises:
        ValueError: no kind given (no ``dataset`` key; lists the known ones), or a bad option value.
        UnknownComponentError: unknown kind (lists the known ones).
        TypeError: an option the kind does not take (lists the valid ones).
    """
    if isinstance(kind, Mapping):
        options = {**kind, **options}
        kind = None
    if kind is None:
        kind = options.pop("dataset", None)
    if kind is None:
        raise ValueError(f"no dataset kind: set 'dataset' to one of {', '.join(list_datasets())} "
                         "(e.g. data.spec: {dataset: csv, train: train.tsv})")
    return DATASETS.create(kind, **options)
