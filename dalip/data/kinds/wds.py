"""WebDataset shards: tar files of ``KEY.jpg|png|webp`` + ``KEY.txt`` members.

The ``webdataset`` package (the one open_clip uses; the ``train`` extra) expands
the shard patterns and opens local files, ``pipe:`` commands and URLs
(`dalip.data.kinds.wds_sources`). What is dalip's own: a stream per reader
(torch.distributed rank x DataLoader worker) with a position that resumes it
exactly without reading earlier shards or decoding earlier samples. Shards are
split across readers (by shard when there are enough shards, else by sample) in a
seeded order per epoch, and shuffled in blocks: ``shuffle_buffer`` raw samples are
read, permuted by a seeded RNG and decoded one by one. Resampled streams
(``resampled``) draw shards with replacement per reader, weighted per ``"::"``
source (``upsampling``), ``num_samples // readers`` samples an epoch. Bad samples
(undecodable image, no image or caption, truncated shard) become ``None`` for
`collate` to count instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import IterableDataset

from dalip.data.batch import Sample, decode_image, report_bad_sample
from dalip.data.kinds.wds_sources import (
    RawGroup,
    check_shards,
    check_stream_options,
    expand_shards,
    shard_groups,
    shard_sources,
    shard_weights,
    source_patterns,
)
from dalip.data.sharding import consumer_info
from dalip.data.spec import DatasetSpec, register_dataset

__all__ = ["Position", "WdsSpec", "WebDatasetShards", "expand_shards"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt",)
#: a reader's place in its stream: JSON-able ints (see `WebDatasetShards.reader_stream`)
Position = dict[str, int]
ORDERED_KEYS = ("epoch", "shard", "offset", "block", "index")
RESAMPLED_KEYS = ("epoch", "drawn")
_EMPTY_EPOCHS = 10  # a reader whose stream stays empty this long has no samples at all: an error, not a hang


def epoch_start(epoch: int, resampled: bool) -> Position:
    """The position of the first sample of ``epoch``."""
    return dict.fromkeys(RESAMPLED_KEYS if resampled else ORDERED_KEYS, 0) | {"epoch": epoch}


def _checked_position(position: Mapping[str, int] | None, resampled: bool) -> Position:
    """``position`` as a dict of ints >= 0 with the keys of its kind of stream (None: epoch 0's start)."""
    if position is None:
        return epoch_start(0, resampled)
    keys = RESAMPLED_KEYS if resampled else ORDERED_KEYS
    if not isinstance(position, Mapping) or sorted(position) != sorted(keys) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in position.values()):
        kind = "resampled" if resampled else "non-resampled"
        raise ValueError(f"a {kind} stream resumes from a position with the integer keys {', '.join(keys)} "
                         f"(as yielded by reader_stream), got {position!r}")
    return dict(position)


class WebDatasetShards(IterableDataset):
    """`(image, caption)` samples (or None for bad ones) from tar shards.

    Args:
        shards: paths or URLs, or a pattern for `expand_shards` (brace patterns, ``"::"``-joined sources).
        transform: applied to the decoded RGB PIL image.
        shuffle_buffer: raw samples per shuffled block; 0 or 1 reads in order.
        seed: fixes the shard order, the block permutations and the resampled draws.
        shuffle_shards: visit the shards in a seeded random order each epoch.
        upsampling: one weight per ``"::"`` source for resampled draws (open_clip's
            ``--train-data-upsampling-factors``); needs ``resampled``.
        resampled: draw shards with replacement per reader (webdataset's ``ResampledShards``).
        num_samples: the epoch size of a resampled stream, over all readers.

    Raises:
        ValueError: a bad option or an unknown URL scheme; FileNotFoundError: missing local shards.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        transform: Callable | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        shuffle_shards: bool = True,
        *,
        upsampling: Sequence[float] | None = None,
        resampled: bool = False,
        num_samples: int | None = None,
    ) -> None:
        sources = shard_sources(shards)
        self.shards = [shard for source in sources for shard in source]
        if not self.shards:
            raise ValueError(f"train: no shards in {shards!r}")
        check_stream_options(len(sources), upsampling, resampled, num_samples)
        check_shards(self.shards)
        weights = np.asarray(shard_weights(sources, upsampling))
        self.weights = weights / weights.sum()  # per shard, for resampled draws
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.resampled = resampled
        self.num_samples = num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """A new shard order and shuffle per epoch (call before creating the epoch's iterator)."""
        self.epoch = epoch

    # ------------------------------------------------------------ decoding
    def _sample(self, key: str, members: dict[str, bytes], shard: str) -> Sample | None:
        where = f"{shard}:{key}"
        image_ext = next((e for e in IMAGE_EXTS if e in members), None)
        text_ext = next((e for e in TEXT_EXTS if e in members), None)
        if image_ext is None or text_ext is None:
            report_bad_sample(where, f"needs an image ({'/'.join(IMAGE_EXTS)}) and a .txt, has {sorted(members)}")
            return None
        image = decode_image(members[image_ext], where)
        if image is None:
            return None
        text = members[text_ext].decode("utf-8", errors="replace").strip()
        return (self.transform(image) if self.transform else image), text

    def _decode(self, group: RawGroup) -> Sample | None:
        if group.members is None:  # the unreadable rest of a shard: reported by the one reader it falls to
            report_bad_sample(group.url, f"unreadable shard after key {group.key!r}: {group.error}")
            return None
        return self._sample(group.key, group.members, group.url)

    # ------------------------------------------------------------ ordered streams
    def _ordered_groups(self, reader: int, readers: int, epoch: int, shard: int, offset: int) -> Iterator[RawGroup]:
        """The raw samples of one reader in one epoch, from sample ``offset`` of its ``shard``-th shard on."""
        order = list(self.shards)
        if self.shuffle_shards:  # the same permutation in every reader: the partition stays disjoint
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        by_sample = len(order) < readers  # few shards: every reader scans every one, keeps every readers-th sample
        mine = order if by_sample else order[reader::readers]
        for j in range(shard, len(mine)):
            keep = (lambda k, j=j: (j + k) % readers == reader) if by_sample else (lambda k: True)
            yield from shard_groups(mine[j], offset if j == shard else 0, keep, shard=j)

    def _block_order(self, size: int, epoch: int, reader: int, block: int) -> np.ndarray:
        if self.shuffle_buffer <= 1:
            return np.arange(size)
        return np.random.default_rng([self.seed, epoch, reader, block]).permutation(size)

    def _ordered_epoch(self, reader: int, readers: int, position: Position) -> Iterator[tuple[Sample | None, Position]]:
        """One epoch of an ordered stream from ``position``: blocks of raw samples, permuted, decoded one by one."""
        epoch, block_no, skip = position["epoch"], position["block"], position["index"]
        groups = self._ordered_groups(reader, readers, epoch, position["shard"], position["offset"])
        size = max(self.shuffle_buffer, 1)
        head = next(groups, None)
        while head is not None:
            block = [head, *itertools.islice(groups, size - 1)]
            head = next(groups, None)  # where the next block starts: the position after this block
            after = epoch_start(epoch + 1, False) if head is None else {
                "epoch": epoch, "shard": head.shard, "offset": head.offset, "block": block_no + 1, "index": 0}
            at = {"epoch": epoch, "shard": block[0].shard, "offset": block[0].offset, "block": block_no}
            order = self._block_order(len(block), epoch, reader, block_no)
            for i in range(skip, len(block)):  # on resume, the samples before `skip` are never decoded
                yield self._decode(block[order[i]]), ({**at, "index": i + 1} if i + 1 < len(block) else after)
            block_no, skip = block_no + 1, 0

    # ------------------------------------------------------------ resampled streams
    def _drawn_groups(self, rng: np.random.Generator) -> Iterator[RawGroup]:
        """Raw samples of shards drawn with replacement by ``rng`` (weights per source), endlessly."""
        empty = 0
        while empty < _EMPTY_EPOCHS * len(self.shards):
            j = int(rng.choice(len(self.shards), p=self.weights))
            found = False
            for group in shard_groups(self.shards[j], shard=j):
                found = True
                yield group
            empty = 0 if found else empty + 1
        raise ValueError(f"train: {empty} shards drawn in a row held no samples: are the shards empty?")

    def _epoch_length(self, readers: int) -> int:
        length = (self.num_samples or 0) // readers
        if length < 1:
            raise ValueError(f"num_samples={self.num_samples} gives each of the {readers} readers (processes x "
                             "workers) no sample per epoch: raise num_samples")
        return length

    def _resampled_epoch(self, reader: int, readers: int, position: Position
                         ) -> Iterator[tuple[Sample | None, Position]]:
        """One epoch of a resampled stream from ``position``, reseeded from (seed, reader, epoch, drawn)."""
        epoch, drawn = position["epoch"], position["drawn"]
        length = self._epoch_length(readers)
        rng = np.random.default_rng([self.seed, reader, epoch, drawn])
        groups = self._drawn_groups(rng)
        while drawn < length:
            block = list(itertools.islice(groups, min(max(self.shuffle_buffer, 1), length - drawn)))
            order = rng.permutation(len(block)) if self.shuffle_buffer > 1 else range(len(block))
            for i in order:
                drawn += 1
                yield self._decode(block[i]), (
                    {"epoch": epoch, "drawn": drawn} if drawn < length else epoch_start(epoch + 1, True))
        groups.close()  # ends the shard being read mid-way (a pipe or download)

    # ------------------------------------------------------------ public streams
    def _epoch_items(self, reader: int, readers: int, position: Position
                     ) -> Iterator[tuple[Sample | None, Position]]:
        epoch = self._resampled_epoch if self.resampled else self._ordered_epoch
        return epoch(reader, readers, position)

    def epoch_samples(self, reader: int = 0, readers: int = 1, epoch: int = 0) -> Iterator[Sample | None]:
        """One epoch of reader ``reader`` of ``readers``: with the defaults and ``shuffle_buffer=0``,
        ``shuffle_shards=False``, every sample once in shard order."""
        return (sample for sample, _ in self._epoch_items(reader, readers, epoch_start(epoch, self.resampled)))

    def reader_stream(self, reader: int, readers: int, position: Mapping[str, int] | None = None
                      ) -> Iterator[tuple[Sample | None, Position]]:
        """Endless samples of reader ``reader`` of ``readers``, epoch after epoch, each paired with the position of
        the NEXT sample (a small JSON-able dict of ints; bad samples are None, with a position too).

        ``position=None`` starts at epoch 0. Non-resampled, starting from the position yielded with
        sample n gives exactly samples n+1, n+2, ... of the uninterrupted stream: earlier shards are
        not read, the current shard is skipped at the tar level to the start of the current block
        (``epoch, shard, offset, block, index``: the block's first shard in this reader's list and
        sample offset in it, the block number, the index in the permuted block), and only the block's
        samples still to come are decoded. Resampled (``epoch, drawn``): the draws are reseeded from
        the position, as fast as a fresh start and not the same samples (as open_clip).

        Raises:
            ValueError: ``reader`` not in ``[0, readers)``, a position of the other kind of stream, or a
                reader that gets no samples (fewer samples than readers).
        """
        if not 0 <= reader < readers:
            raise ValueError(f"reader must be in [0, {readers}), got {reader}")
        if self.resampled:
            self._epoch_length(readers)
        return self._endless(reader, readers, _checked_position(position, self.resampled))

    def _endless(self, reader: int, readers: int, position: Position) -> Iterator[tuple[Sample | None, Position]]:
        empty = 0
        while empty < _EMPTY_EPOCHS:
            found = False
            for item in self._epoch_items(reader, readers, position):
                found = True
                yield item
            empty = 0 if found else empty + 1
            position = epoch_start(position["epoch"] + 1, self.resampled)
        raise ValueError(f"reader {reader} of {readers} got no samples in {empty} epochs: the shards hold fewer "
                         "samples than there are readers (processes x data.workers); use fewer workers")

    def __iter__(self) -> Iterator[Sample | None]:
        """One epoch (`set_epoch`) of the reader `consumer_info` names (this rank's DataLoader worker)."""
        index, count = consumer_info()
        return self.epoch_samples(index, count, self.epoch)


@register_dataset("wds", description="webdataset tar shards of image + .txt caption members")
@dataclass
class WdsSpec(DatasetSpec):
    """Image-caption pairs from webdataset shards.

    Attributes:
        train: shards as open_clip takes them: local paths, ``pipe:CMD`` (S3: ``pipe:aws s3 cp
            s3://bucket/shard-0000.tar -``), ``http(s)://`` URLs; brace patterns
            (``"data-{000..099}.tar"``) and ``"::"``-joined sources.
        shuffle_buffer: raw samples per shuffled block (0 or 1: in order).
        resampled: draw shards with replacement, each reader its own seeded draws (open_clip's
            ``--dataset-resampled``); needs `num_samples`.
        num_samples: the epoch size of a resampled stream over all processes and workers (open_clip's
            ``--train-num-samples``).
        upsampling: one draw weight per ``"::"`` source, given to each of its shards (open_clip's
            ``--train-data-upsampling-factors``); needs `resampled`.
    """

    train: str | None = None
    shuffle_buffer: int = 1000
    resampled: bool = False
    num_samples: int | None = None
    upsampling: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train:
            raise ValueError("dataset 'wds' needs 'train': shard paths or a pattern such as data-{000..009}.tar")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        check_stream_options(len(source_patterns(self.train)), self.upsampling, self.resampled, self.num_samples)

    def second_source(self, location: str) -> WdsSpec:
        """Shards at ``location`` (``mix_with``, ``val``) read as one plain, non-resampled source."""
        return dataclasses.replace(self, train=location, mix_with=None, domain_fraction=None, val=None,
                                   upsampling=None, resampled=False, num_samples=None)

    def source(self) -> WebDatasetShards:
        return WebDatasetShards(self.train, self.train_transform(), self.shuffle_buffer, self.seed,
                                upsampling=self.upsampling, resampled=self.resampled, num_samples=self.num_samples)

    def raw_samples(self) -> Iterator[Sample | None]:
        """Every sample once, in shard order (one reader: the same on every process)."""
        return WebDatasetShards(self.train, None, shuffle_buffer=0, shuffle_shards=False).epoch_samples()
