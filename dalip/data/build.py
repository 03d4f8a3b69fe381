"""Building a dataset spec's data: the training set (mixed with a second source when asked) and its eval sets."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from dalip.data.batch import Sample
from dalip.data.eval_sets import EvalSet
from dalip.data.mixing import MapAsIterable, MixedDataset, MixedIterableDataset
from dalip.data.spec import DATASETS, DatasetSpec, create_dataset, list_datasets
from dalip.errors import ConfigError

__all__ = [
    "build_eval_sets", "build_train_dataset", "caption_eval_set", "claimed_source", "reading", "source_kind",
    "source_spec",
]

logger = logging.getLogger(__name__)


def claimed_source(location: str, common: Mapping[str, Any]) -> DatasetSpec | None:
    """The spec of the first registered kind (in name order) that claims `location` (`DatasetSpec.from_location`)."""
    for name in list_datasets():
        spec = DATASETS.get(name).constructor.from_location(location, common)
        if spec is not None:
            return spec
    return None


def source_kind(location: str) -> str:
    """The dataset kind of a `mix_with` / `val` string.

    A registered kind that claims it (`DatasetSpec.from_location`), else ``csv`` (a
    ``.csv`` / ``.tsv`` path), ``folder`` (a directory) or ``wds`` (anything else).
    """
    claimed = claimed_source(location, {})
    return claimed.kind if claimed is not None else _path_kind(location)


def _path_kind(location: str) -> str:
    """The generic kinds, by the path alone: csv (``.csv`` / ``.tsv``), folder (a directory), else wds."""
    first = location.split("::")[0]
    if Path(first).suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if Path(first).expanduser().is_dir():
        return "folder"
    return "wds"


def source_spec(spec: DatasetSpec, location: str) -> DatasetSpec:
    """The spec of a second source at `location` (`mix_with`, `val`), sharing `spec`'s preprocessing."""
    claimed = claimed_source(location, spec.common_options())
    if claimed is not None:
        return claimed
    kind = _path_kind(location)
    if kind == spec.kind:  # same kind: keep its options (CSV columns, shuffle buffer ...)
        return spec.second_source(location)
    return create_dataset(kind, train=location, **spec.common_options())


@contextmanager
def reading(key: str) -> Iterator[None]:
    """Turn the ValueError of a data source that cannot be used (an empty folder, a missing CSV column,
    text that is not UTF-8, ...) into a `ConfigError` naming the setting ``key`` that points at it."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from err


def build_train_dataset(spec: DatasetSpec) -> Dataset | IterableDataset:
    """The training dataset of `spec`: items ``((3, S, S) float, caption)``, or None for a bad sample.

    Use it with ``collate_fn=dalip.data.collate``. Map-style results (embedded
    data, CSV, folders, their mixes) want ``shuffle=True``; iterable ones (shards or any
    mix with shards) shuffle themselves. Call ``set_epoch(epoch)`` where present.

    Raises:
        ConfigError: a source that cannot be read (the message names ``data.spec.train`` /
            ``data.spec.mix_with`` and the problem).
    """
    if spec.domain_fraction is not None and not spec.mix_with:
        with reading("data.spec"):
            domain, general = spec.mix_sources()  # a kind's own two sources
    else:
        with reading("data.spec.train" if getattr(spec, "train", None) else "data.spec"):
            domain = spec.source()
        if spec.domain_fraction is None:
            return domain
        with reading("data.spec.mix_with"):
            general = source_spec(spec, spec.mix_with).source()
    if isinstance(domain, IterableDataset) or isinstance(general, IterableDataset):
        domain, general = (d if isinstance(d, IterableDataset) else MapAsIterable(d, spec.seed) for d in (domain, general))
        return MixedIterableDataset(domain, general, spec.domain_fraction, spec.seed)
    return MixedDataset(domain, general, spec.domain_fraction, spec.seed, spec.mix_length)


def caption_eval_set(name: str, samples: Iterable[Sample | None], size: int, limit: int) -> EvalSet:
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


def build_eval_sets(spec: DatasetSpec) -> dict[str, EvalSet]:
    """Evaluation sets by name: the kind's own (and the mixed-in source's), plus ``val`` when set.

    Raises:
        ConfigError: a set that cannot be read (the message names the setting: ``data.spec``,
            ``data.spec.mix_with`` or ``data.spec.val``).
    """
    with reading("data.spec"):
        sets = dict(spec.own_eval_sets())
    if spec.mix_with:
        with reading("data.spec.mix_with"):
            sets.update(source_spec(spec, spec.mix_with).own_eval_sets())
    if spec.val and spec.val_is_captions:
        kind = source_kind(spec.val)
        if kind not in ("csv", "wds"):
            raise ConfigError(f"data.spec.val={spec.val!r}: a caption CSV/TSV or shard pattern is expected for "
                              "retrieval (labelled image folders go to eval.zero_shot)")
        with reading("data.spec.val"):
            samples = source_spec(spec, spec.val).raw_samples()
            sets["val"] = caption_eval_set("val", samples, spec.preprocess[0], spec.val_max_samples)
    return sets

