"""The trainer's entry points: `DataSpec`, `build_train_dataset`, `build_eval_sets`.

```python
spec = DataSpec()                                     # embedded Twemoji, both subsets
train = build_train_dataset(spec)                     # items: ((3, 128, 128) float, caption) or None
loader = DataLoader(train, batch_size=64, shuffle=True, collate_fn=collate)
evals = build_eval_sets(spec)                         # {"twemoji-domain": EvalSet, "twemoji-general": EvalSet}
mixed = DataSpec(subsets=("domain",), mix_with="twemoji:general", domain_fraction=0.5)
```
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, IterableDataset

from .batch import Sample
from .csv_dataset import CsvCaptions
from .eval_sets import EvalSet
from .mixing import MapAsIterable, MixedDataset, MixedIterableDataset
from .splits import SUBSETS
from .transforms import DEFAULT_MEAN, DEFAULT_STD, image_transform
from .twemoji_dataset import TwemojiCaptions, TwemojiSplit, twemoji_eval_sets, twemoji_split
from .wds import WebDatasetShards

__all__ = ["DataSpec", "build_eval_sets", "build_train_dataset", "source_kind"]

logger = logging.getLogger(__name__)
DATASETS = ("twemoji", "csv", "wds")


@dataclass
class DataSpec:
    """What to train and evaluate on.

    Attributes:
        dataset: ``"twemoji"`` (embedded), ``"csv"`` or ``"wds"`` (webdataset shards).
        train: the CSV path or shard pattern (``"data-{000..009}.tar"``) for csv / wds.
        val: an extra caption CSV or shard pattern for retrieval evaluation.
        csv_img_key, csv_caption_key, csv_separator: open_clip's CSV options.
        subsets: Twemoji subsets to train on (``"domain"``, ``"general"``).
        eval_subsets: Twemoji subsets to evaluate on.
        twemoji_eval: add the Twemoji zero-shot sets to `build_eval_sets` whatever `dataset` is.
        mix_with: a second, general source mixed with the first (the domain source):
            ``"twemoji"`` (= ``"twemoji:general"``), ``"twemoji:domain"``, a ``.csv``/``.tsv``
            path, or a shard pattern.
        domain_fraction: share of the domain source per batch (in expectation). With
            ``dataset="twemoji"`` and no `mix_with`, mixes the domain and general subsets.
        mix_length: items per epoch of a map-style mix; default the two sizes summed.
        image_size: model input size; images are upscaled to it.
        augment: light training augmentation (else the evaluation resize).
        mean, std: normalisation of the model (0.5 / 0.5 for effl0-minilm).
        seed: mixing plan, shard order and shuffle buffer.
        shuffle_buffer: webdataset shuffle buffer size.
        val_fraction: Twemoji hash threshold for held-out concepts.
        cache_dir: Twemoji cache folder (default ``$DALIP_CACHE`` or ``~/.cache/dalip``).
        val_max_samples: cap on a `val` CSV / shard set held in memory.
    """

    dataset: str = "twemoji"
    train: str | None = None
    val: str | None = None
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str = "\t"
    subsets: Sequence[str] = SUBSETS
    eval_subsets: Sequence[str] = SUBSETS
    twemoji_eval: bool = True
    mix_with: str | None = None
    domain_fraction: float | None = None
    mix_length: int | None = None
    image_size: int = 128
    augment: bool = True
    mean: Sequence[float] = field(default=DEFAULT_MEAN)
    std: Sequence[float] = field(default=DEFAULT_STD)
    seed: int = 0
    shuffle_buffer: int = 1000
    val_fraction: float = 0.25
    cache_dir: str | None = None
    val_max_samples: int = 10000

    def __post_init__(self) -> None:
        self.subsets, self.eval_subsets = tuple(self.subsets), tuple(self.eval_subsets)
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {list(DATASETS)}")
        if self.dataset != "twemoji" and not self.train:
            raise ValueError(f"dataset={self.dataset!r} needs 'train' (a CSV path or a shard pattern)")
        for label, subsets in (("subsets", self.subsets), ("eval_subsets", self.eval_subsets)):
            unknown = [s for s in subsets if s not in SUBSETS]
            if unknown:
                raise ValueError(f"unknown Twemoji {label} {unknown}; choose from {list(SUBSETS)}")
        if self.domain_fraction is not None and not 0.0 <= self.domain_fraction <= 1.0:
            raise ValueError(f"domain_fraction must be in [0, 1], got {self.domain_fraction}")
        if self.mix_with and self.domain_fraction is None:
            raise ValueError(f"mix_with={self.mix_with!r} needs domain_fraction (e.g. 0.5)")
        if self.domain_fraction is not None and not self.mix_with and self.dataset != "twemoji":
            raise ValueError("domain_fraction needs mix_with (the general source) unless dataset='twemoji'")


def source_kind(location: str) -> str:
    """``"twemoji"``, ``"csv"`` or ``"wds"`` for a `mix_with` / `val` string."""
    if location == "twemoji" or location.startswith("twemoji:"):
        return "twemoji"
    if Path(location.split("::")[0]).suffix.lower() in (".csv", ".tsv"):
        return "csv"
    return "wds"


def _twemoji_subsets(location: str, default: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(location.split(":", 1)[1].split(",")) if ":" in location else tuple(default)
    unknown = [s for s in chosen if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown Twemoji subset(s) {unknown} in {location!r}; choose from {list(SUBSETS)}")
    return chosen


def _twemoji_train(spec: DataSpec, split: TwemojiSplit, subsets: Sequence[str]) -> Dataset:
    parts = [
        # no flips for general emoji: letters, arrows and flags have a handedness
        TwemojiCaptions(split, [s], transform=image_transform(
            spec.image_size, spec.augment, spec.mean, spec.std, flip=(s == "domain")))
        for s in subsets
    ]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def _source(spec: DataSpec, kind: str, location: str | None, subsets: Sequence[str]) -> Dataset | IterableDataset:
    transform = image_transform(spec.image_size, spec.augment, spec.mean, spec.std)
    if kind == "twemoji":
        return _twemoji_train(spec, twemoji_split(spec.cache_dir, spec.val_fraction), subsets)
    if kind == "csv":
        return CsvCaptions(location, transform, spec.csv_img_key, spec.csv_caption_key, spec.csv_separator)
    return WebDatasetShards(location, transform, spec.shuffle_buffer, spec.seed)


def build_train_dataset(spec: DataSpec) -> Dataset | IterableDataset:
    """The training dataset of `spec`: items `((3, S, S) float, caption)`, or None for a bad sample.

    Use it with ``collate_fn=dalip.data.collate``. Map-style results (Twemoji,
    CSV, their mixes) want ``shuffle=True``; iterable ones (shards or any mix
    with shards) shuffle themselves. Call ``set_epoch(epoch)`` where present.
    """
    if spec.dataset == "twemoji" and spec.domain_fraction is not None and not spec.mix_with:
        domain = _source(spec, "twemoji", None, ["domain"])
        general = _source(spec, "twemoji", None, ["general"])
    else:
        domain = _source(spec, spec.dataset, spec.train, spec.subsets)
        if not spec.mix_with:
            return domain
        kind = source_kind(spec.mix_with)
        general = _source(spec, kind, spec.mix_with, _twemoji_subsets(spec.mix_with, ["general"]))
    if isinstance(domain, IterableDataset) or isinstance(general, IterableDataset):
        domain, general = (d if isinstance(d, IterableDataset) else MapAsIterable(d, spec.seed) for d in (domain, general))
        return MixedIterableDataset(domain, general, spec.domain_fraction, spec.seed)
    return MixedDataset(domain, general, spec.domain_fraction, spec.seed, spec.mix_length)


def _caption_eval_set(name: str, samples: Iterable[Sample | None], size: int, limit: int) -> EvalSet:
    """Hold up to `limit` good samples as `(N, size, size, 3)` uint8 with their captions."""
    images, captions, skipped = [], [], 0
    for sample in samples:
        if sample is None:
            skipped += 1
            continue
        image, text = sample
        images.append(np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC)))
        captions.append(text)
        if len(images) >= limit:
            break
    if skipped:
        logger.warning("eval set %s: skipped %d unreadable samples", name, skipped)
    if not images:
        raise ValueError(f"eval set {name}: no readable samples")
    return EvalSet(name, torch.from_numpy(np.stack(images)), captions)


def build_eval_sets(spec: DataSpec) -> dict[str, EvalSet]:
    """Evaluation sets by name: ``twemoji-<subset>`` (zero-shot + retrieval) and ``val`` (retrieval) if set."""
    sets: dict[str, EvalSet] = {}
    uses_twemoji = spec.dataset == "twemoji" or (spec.mix_with and source_kind(spec.mix_with) == "twemoji")
    if (spec.twemoji_eval or uses_twemoji) and spec.eval_subsets:
        sets.update(twemoji_eval_sets(twemoji_split(spec.cache_dir, spec.val_fraction), spec.eval_subsets))
    if spec.val:
        kind = source_kind(spec.val)
        if kind == "csv":
            data = CsvCaptions(spec.val, None, spec.csv_img_key, spec.csv_caption_key, spec.csv_separator)
            samples = (data[i] for i in range(len(data)))
        elif kind == "wds":
            samples = iter(WebDatasetShards(spec.val, None, shuffle_buffer=0, shuffle_shards=False))
        else:
            raise ValueError("val='twemoji' is not needed: the Twemoji sets come with eval_subsets")
        sets["val"] = _caption_eval_set("val", samples, spec.image_size, spec.val_max_samples)
    return sets
