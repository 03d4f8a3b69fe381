"""WebDataset shards: tar files of ``KEY.jpg|png|webp`` + ``KEY.txt`` members.

The ``webdataset`` package (the one open_clip uses; the ``train`` extra) expands
the shard patterns and reads the tar members grouped by key. What is dalip's own:
shards are split across DataLoader workers and torch.distributed ranks (by
shard when there are enough shards, else by sample), read in a seeded
order, and shuffled through a buffer. Bad samples (undecodable image, no
image or caption, truncated shard) become ``None`` for `collate` to count
instead of stopping the run.
"""

from __future__ import annotations

import itertools
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset

from dalip._optional import require
from dalip.data.batch import Sample, decode_image, report_bad_sample
from dalip.data.sharding import consumer_info
from dalip.data.spec import DatasetSpec, register_dataset

__all__ = ["WdsSpec", "WebDatasetShards", "expand_shards"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt",)


def expand_shards(pattern: str | Sequence[str]) -> list[str]:
    """Shard paths from a list, ``"::"``-separated patterns, or brace patterns (webdataset's expansion).

    ``"data-{000..009}.tar"`` keeps the zero padding; ``"{a,b}.tar"`` lists alternatives;
    ``${NAME}`` is the environment variable ``WDS_NAME``, as in webdataset and open_clip.
    """
    if not isinstance(pattern, str):
        return [s for p in pattern for s in expand_shards(p)]
    return list(require("webdataset.shardlists", "train", "webdataset shards").expand_urls(pattern))


def _tar_samples(shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """`(key, {extension: bytes})` samples of one shard, read and grouped by webdataset.

    A truncated or unreadable shard ends early: the error is reported and one empty
    group yielded (counted as one bad sample); the samples before it are kept.
    """
    tariterators = require("webdataset.tariterators", "train", "webdataset shards")
    failure: list[BaseException] = []

    def stop(err: BaseException) -> bool:  # webdataset's error handler: remember, end this shard
        failure.append(err)
        return False

    def members() -> Iterator[dict]:
        try:
            with open(shard, "rb") as stream:
                for member in tariterators.tar_file_iterator(stream, handler=stop):
                    yield {**member, "__url__": shard}
        except (tarfile.TarError, OSError, EOFError) as err:  # a bad header ends webdataset's loop unhandled
            failure.append(err)

    key = None
    for sample in tariterators.group_by_keys(members(), handler=stop):  # the key ends at the first dot
        key = sample["__key__"]
        yield key, {ext: data for ext, data in sample.items() if not ext.startswith("__")}
    if failure:
        err = failure[0]
        report_bad_sample(shard, f"unreadable shard after key {key!r}: {type(err).__name__}: {err}")
        yield f"{shard}:<rest>", {}  # counted as one bad sample


class WebDatasetShards(IterableDataset):
    """`(image, caption)` samples (or None for bad ones) from tar shards.

    Args:
        shards: paths, or a pattern for `expand_shards`.
        transform: applied to the decoded RGB PIL image.
        shuffle_buffer: samples held for shuffling; 0 or 1 reads in order.
        seed: with `set_epoch`, fixes the shard order and the buffer draws.
        shuffle_shards: visit the shards in a seeded random order each epoch.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        transform: Callable | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        shuffle_shards: bool = True,
    ) -> None:
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError(f"no shards in {shards!r}")
        missing = [s for s in self.shards if not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.shards)} shards do not exist, e.g. {missing[:3]}")
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """A new shard order and shuffle per epoch (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def _sample(self, key: str, members: dict[str, bytes], shard: str) -> Sample | None:
        where = f"{shard}:{key}"
        image_ext = next((e for e in IMAGE_EXTS if e in members), None)
        text_ext = next((e for e in TEXT_EXTS if e in members), None)
        if image_ext is None or text_ext is None:
            if members:  # the empty group marks a truncated shard, already reported
                report_bad_sample(where, f"needs an image ({'/'.join(IMAGE_EXTS)}) and a .txt, has {sorted(members)}")
            return None
        image = decode_image(members[image_ext], where)
        if image is None:
            return None
        text = members[text_ext].decode("utf-8", errors="replace").strip()
        return (self.transform(image) if self.transform else image), text

    def _raw(self) -> Iterator[Sample | None]:
        index, count = consumer_info()
        order = list(self.shards)
        if self.shuffle_shards:  # the same permutation in every reader: the partition stays disjoint
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        if len(order) >= count:
            for shard in order[index::count]:
                for key, members in _tar_samples(shard):
                    yield self._sample(key, members, shard)
        else:  # fewer shards than readers: every reader scans all, keeps every count-th sample
            groups = ((shard, k, m) for shard in order for k, m in _tar_samples(shard))
            for shard, key, members in itertools.islice(groups, index, None, count):
                yield self._sample(key, members, shard)

    def __iter__(self) -> Iterator[Sample | None]:
        index, _ = consumer_info()
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        buffer: list[Sample | None] = []
        for sample in self._raw():
            if len(buffer) < max(self.shuffle_buffer, 1):
                buffer.append(sample)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], sample = sample, buffer[j]
            yield sample
        if self.shuffle_buffer > 1:
            rng.shuffle(buffer)
        yield from buffer


@register_dataset("wds", description="webdataset tar shards of image + .txt caption members")
@dataclass
class WdsSpec(DatasetSpec):
    """Image-caption pairs from webdataset shards.

    Attributes:
        train: shard paths, ``"::"``-separated patterns or a brace pattern (``"data-{000..099}.tar"``).
        shuffle_buffer: samples held for shuffling.
    """

    train: str | None = None
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train:
            raise ValueError("dataset 'wds' needs 'train': shard paths or a pattern such as data-{000..009}.tar")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")

    def source(self) -> WebDatasetShards:
        return WebDatasetShards(self.train, self.train_transform(), self.shuffle_buffer, self.seed)

    def raw_samples(self) -> Iterator[Sample | None]:
        return iter(WebDatasetShards(self.train, None, shuffle_buffer=0, shuffle_shards=False))
