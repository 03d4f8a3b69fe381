"""Deterministic, resumable training batches of exactly ``data.batch_size`` readable samples on every rank.

Micro-batch ``k`` of a run is always the same samples with the same
augmentations, and every rank holds the same number of samples in every batch
(the feature all-gather of the contrastive loss needs equal sizes):

- map-style datasets: the epoch's order is a permutation drawn from ``(seed, epoch)``
  (`RunOrder`), each sample's transforms run under an RNG seeded by ``(seed, epoch,
  index)``; an unreadable sample is replaced by the next index of the rank's order.
  The position (how many indices of the run's order were consumed) is one integer.
- streams (webdataset shards): each reader (rank x loader worker) reads its own endless
  stream (`dalip.data.kinds.wds.WebDatasetShards.reader_stream`); an unreadable sample is
  replaced by the next one of the stream. The position is each reader's stream position
  (shard and offset), so a resumed run skips to it at the tar level instead of decoding
  what it already trained on.

The loader's workers read *chunks* (``batch_size`` raw samples, readable ones collated,
captions tokenized there); the training process cuts them into batches (`Refill`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

import dalip.data as dalip_data
from dalip.data.batch import first_bad_samples
from dalip.errors import ConfigError
from dalip.runs.config import TrainConfig
from dalip.runs.data import make_spec, zero_shot_sets
from dalip.train.distributed import DistInfo
from dalip.train.frozen_cache import KeyedSamples, check_cacheable_dataset, collate_keyed

__all__ = [
    "MAX_BAD_BATCHES", "Chunk", "ChunkCollate", "Refill", "RunData", "RunOrder", "SeededSamples", "TrainBatches",
    "build_data", "epoch_order",
]

MAX_BAD_BATCHES = 20
"""A run stops when this many batches' worth of consecutive samples were unreadable (the data is unreadable)."""


class SeededSamples(Dataset):
    """Runs the wrapped dataset's ``__getitem__`` under an RNG seeded by (seed, epoch, index).

    Keys are ``(epoch, index)`` pairs (as `RunOrder` yields them); a plain ``index``
    uses the ``epoch`` attribute.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample_seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + index
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            np_state = np.random.get_state()
            np.random.seed(sample_seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


def epoch_order(size: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """This rank's share of the epoch's permutation (equal shares, so every rank runs the same steps)."""
    generator = torch.Generator().manual_seed(seed * 7919 + epoch)
    per_rank = size // world
    return torch.randperm(size, generator=generator)[rank * per_rank : (rank + 1) * per_rank].tolist()


class RunOrder(Sampler[tuple[int, int]]):
    """``(epoch, index)`` keys for the whole run, epoch after epoch without end.

    Each epoch gives this rank's share of its permutation, cut to ``per_epoch`` whole
    batches (what ``drop_last`` would keep); the order starts at key ``start`` of the run
    (keys consumed before, in all epochs). One loader over this order lives for the
    whole run: its workers keep prefetching across epoch boundaries instead of a new
    loader (and a pipeline refilled from empty) at every epoch.
    """

    def __init__(self, size: int, seed: int, rank: int, world: int, batch_size: int, per_epoch: int,
                 start: int = 0) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch_keys, self.start = per_epoch * batch_size, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.epoch_keys)
        while True:
            order = epoch_order(self.size, self.seed, epoch, self.rank, self.world)
            for index in order[offset : self.epoch_keys]:
                yield epoch, index
            epoch, offset = epoch + 1, 0


@dataclass
class Chunk:
    """Raw samples read together by one loader worker.

    Attributes:
        batch: the readable samples, collated (`dalip.data.Batch` or a keyed batch).
        kept: raw indices (``0 .. size-1``) of the readable samples, in order.
        size: raw samples read, readable or not.
        positions: streams: the reader's position after each raw sample; None for map-style data.
        reader: the logical reader (loader worker) that read it.
    """

    batch: Any
    kept: list[int]
    size: int
    positions: list | None = None
    reader: int = 0

    def pin_memory(self) -> Chunk:
        """Called by ``DataLoader(pin_memory=True)``: pins the collated samples."""
        return dataclasses.replace(self, batch=self.batch.pin_memory())


class ChunkCollate:
    """A loader's ``collate_fn``: raw samples (None: unreadable) -> `Chunk`, tokenizing captions in the worker."""

    def __init__(self, collate: Callable[[list], Any], tokenizer: Callable[[list[str]], torch.Tensor] | None = None):
        self.collate, self.tokenizer = collate, tokenizer

    def __call__(self, samples: list) -> Chunk:
        batch = self.collate(samples)
        if self.tokenizer is not None and len(batch):
            batch.tokens = self.tokenizer(batch.texts)
        return Chunk(batch, [i for i, s in enumerate(samples) if s is not None], len(samples))


def take(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a collated batch (a dataclass of tensors and lists), ``skipped`` reset."""
    if start == 0 and stop == len(batch):
        return dataclasses.replace(batch, skipped=0)
    rows = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if f.name != "skipped"}
    return dataclasses.replace(batch, skipped=0, **{k: v[start:stop] for k, v in rows.items() if v is not None})


def join(parts: list[Any], skipped: int) -> Any:
    """One batch from row slices of batches (tensors concatenated, lists chained), with ``skipped`` set."""
    if len(parts) == 1:
        return dataclasses.replace(parts[0], skipped=skipped)
    first, joined = parts[0], {}
    for f in dataclasses.fields(first):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "skipped" or values[0] is None:
            continue
        joined[f.name] = torch.cat(values) if isinstance(values[0], torch.Tensor) else [x for v in values for x in v]
    return dataclasses.replace(first, skipped=skipped, **joined)


class Refill:
    """Batches of exactly ``batch_size`` readable samples cut from a sequence of `Chunk`s.

    An unreadable sample is replaced by the next readable one; a batch's ``skipped``
    counts the unreadable samples consumed since the previous batch. `state` is the
    position after the last sample of the last batch: for map-style chunks the number
    of keys consumed (``position``), for stream chunks each reader's stream position,
    the reader whose chunk comes next and the samples left in that chunk (readers are this
    rank's loader workers, by logical number).

    Raises:
        ConfigError: `MAX_BAD_BATCHES` batches' worth of consecutive samples were unreadable.
    """

    def __init__(self, chunks: Iterator[Chunk], batch_size: int, state: dict | None = None, workers: int = 1):
        state = state or {}
        self.chunks, self.batch_size, self.workers = chunks, batch_size, workers
        self.chunk: Chunk | None = None
        self.row = self.raw = self.bad_run = 0  # next readable row / raw sample of the chunk; unreadable in a row
        self.key_base = int(state.get("position", 0))  # map-style: key of the chunk's first raw sample
        self.readers: dict[str, Any] = dict(state.get("readers", {}))
        self.next_reader, self.left = int(state.get("next", 0)), int(state.get("left", 0))

    def __iter__(self) -> Refill:
        return self

    def _next_chunk(self) -> Chunk:
        """Move past the current chunk (its trailing unreadable samples are consumed) to the next one."""
        if self.chunk is not None:
            self.key_base += self.chunk.size
            if self.chunk.positions is not None and self.chunk.positions:
                self.readers[str(self.chunk.reader)] = self.chunk.positions[-1]
        self.chunk, self.row, self.raw = next(self.chunks), 0, 0
        return self.chunk

    def _count_bad(self, bad: int, any_good: bool) -> None:
        """Stop when the unreadable samples since the last readable one reach the limit."""
        self.bad_run += bad
        if self.bad_run >= MAX_BAD_BATCHES * self.batch_size:
            first = first_bad_samples()
            raise ConfigError(
                f"data: no readable sample in {self.bad_run} consecutive samples; first bad files: "
                + (", ".join(first) if first else "named in the warnings of the data-loader workers above"))
        if any_good:
            self.bad_run = 0

    def __next__(self) -> Any:
        parts, need, skipped = [], self.batch_size, 0
        while need:
            chunk = self.chunk
            if chunk is None or self.row == len(chunk.kept):
                if chunk is not None:  # the unreadable samples after its last readable one
                    skipped += chunk.size - self.raw
                    self._count_bad(chunk.size - self.raw, False)
                chunk = self._next_chunk()
                continue
            n = min(need, len(chunk.kept) - self.row)
            last = chunk.kept[self.row + n - 1]
            bad = last + 1 - self.raw - n
            skipped += bad
            self._count_bad(bad, True)
            parts.append(take(chunk.batch, self.row, self.row + n))
            self.row, self.raw, need = self.row + n, last + 1, need - n
        self._mark_end()
        return join(parts, skipped)

    def _mark_end(self) -> None:
        """Record the position after the batch's last sample (in the current chunk)."""
        chunk = self.chunk
        if chunk.positions is not None:
            self.readers[str(chunk.reader)] = chunk.positions[self.raw - 1]
            self.left = chunk.size - self.raw
            self.next_reader = chunk.reader if self.left else (chunk.reader + 1) % self.workers

    def state(self) -> dict:
        """The position after the last batch (JSON-able; stored in checkpoints)."""
        if self.chunk is None or self.chunk.positions is None:
            return {"position": self.key_base + self.raw}
        return {"readers": dict(self.readers), "next": self.next_reader, "left": self.left}


def counted_stream(dataset: IterableDataset, position: dict | None) -> Iterator[tuple[Any, dict]]:
    """Samples of a stream without `reader_stream`, epoch after epoch, with ``{epoch, seen}`` positions.

    Resuming such a stream reads (and decodes) the samples of the epoch it already used: only
    webdataset shards (``reader_stream``) skip without decoding.
    """
    epoch, skip = (position or {}).get("epoch", 0), (position or {}).get("seen", 0)
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for seen, sample in enumerate(dataset, start=1):
            if seen > skip:
                yield sample, {"epoch": epoch, "seen": seen}
        epoch, skip = epoch + 1, 0


class ReaderChunks(IterableDataset):
    """A stream cut into `Chunk`s of ``batch_size`` raw samples, in each loader worker (one reader each).

    A resumed run continues every reader at its stored position; the worker that read the
    batch in progress starts with the rest of its chunk, and workers are renumbered so that
    it comes first: the loader's round-robin then yields the chunks of the uninterrupted run.
    """

    def __init__(self, dataset: IterableDataset, batch_size: int, collate: ChunkCollate, dist: DistInfo,
                 state: dict | None = None) -> None:
        self.dataset, self.batch_size, self.collate, self.dist = dataset, batch_size, collate, dist
        self.state = state or {}

    def _reader(self) -> tuple[int, int, int]:
        """``(logical worker, reader, readers)`` of this worker of this rank."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        exact = hasattr(self.dataset, "reader_stream")
        logical = (worker + int(self.state.get("next", 0))) % workers if exact else worker
        return logical, self.dist.rank * workers + logical, self.dist.world_size * workers

    def __iter__(self) -> Iterator[Chunk]:
        logical, reader, readers = self._reader()
        position = self.state.get("readers", {}).get(str(logical))
        if hasattr(self.dataset, "reader_stream"):
            stream = self.dataset.reader_stream(reader, readers, position)
            size = int(self.state.get("left", 0)) if logical == int(self.state.get("next", 0)) else 0
        else:
            stream, size = counted_stream(self.dataset, position), 0
        while True:
            pairs = [pair for _, pair in zip(range(size or self.batch_size), stream)]
            chunk = self.collate([sample for sample, _ in pairs])
            chunk.positions, chunk.reader, size = [p for _, p in pairs], logical, 0
            yield chunk


class TrainBatches:
    """The run's training batches, in order: ``next(batches)`` gives exactly ``batch_size`` readable samples.

    Args:
        dataset: map-style (read in `RunOrder`, each sample seeded) or a stream (an IterableDataset).
        collate: raw samples (None: unreadable) -> a batch dataclass (`dalip.data.collate`).
        batch_size: samples per batch on this rank.
        workers: loader worker processes (0: read in this process).
        seed: the run's seed (order and per-sample augmentation).
        dist: this process's rank and world size.
        tokenizer: tokenizes each batch's captions in the loader workers (``Batch.tokens``).

    `state_dict` is the position after the last batch returned; `load_state_dict` (before the
    first batch) continues from one.

    Raises:
        ConfigError: a map-style dataset smaller than one batch on every rank.
    """

    def __init__(self, dataset: Dataset, collate: Callable[[list], Any], batch_size: int, workers: int, seed: int,
                 dist: DistInfo, tokenizer: Callable[[list[str]], torch.Tensor] | None = None) -> None:
        self.stream = isinstance(dataset, IterableDataset)
        self.dataset = dataset if self.stream else SeededSamples(dataset, seed)
        self.collate = ChunkCollate(collate, tokenizer)
        self.batch_size, self.workers, self.seed, self.dist = batch_size, workers, seed, dist
        if not self.stream:
            size = len(dataset)  # type: ignore[arg-type]
            self.per_epoch = size // (batch_size * dist.world_size)
            if self.per_epoch == 0:
                raise ConfigError(
                    f"data.batch_size: {batch_size} x {dist.world_size} rank(s) is more than the {size} training "
                    f"samples; lower data.batch_size to at most {size // dist.world_size}")
        self._state: dict = {}
        self._refill: Refill | None = None

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> Any:
        if self._refill is None:
            self._refill = self._start()
        return next(self._refill)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> Iterator[Chunk]:
        # its own generator: creating the loader never draws from the global RNG (dropout), so a resumed
        # run, which creates it at another step, keeps the global RNG sequence of the uninterrupted run
        generator = torch.Generator().manual_seed(self.seed)
        return iter(DataLoader(dataset, num_workers=self.workers, pin_memory=self.dist.device.type == "cuda",
                               generator=generator, **kwargs))

    def _start(self) -> Refill:
        state = self._state
        if not self.stream:
            order = RunOrder(len(self.dataset), self.seed, self.dist.rank, self.dist.world_size, self.batch_size,
                             self.per_epoch, int(state.get("position", 0)))
            chunks = self._loader(self.dataset, sampler=order, batch_size=self.batch_size, collate_fn=self.collate)
            return Refill(chunks, self.batch_size, state)
        readers = self.dist.world_size * max(self.workers, 1)
        if state and state.get("readers_total", readers) != readers:
            raise ConfigError(
                f"data.workers: this stream was read by {state['readers_total']} readers (ranks x workers) and "
                f"resumes only with as many; now {readers}: set data.workers back")
        chunks = self._loader(ReaderChunks(self.dataset, self.batch_size, self.collate, self.dist, state),
                              batch_size=None)
        return Refill(chunks, self.batch_size, state, max(self.workers, 1))

    def state_dict(self) -> dict:
        """Where the next batch starts (JSON-able; empty before the first batch of a fresh run)."""
        if self._refill is None:
            return dict(self._state)
        state = self._refill.state()
        if self.stream:
            state["readers_total"] = self.dist.world_size * max(self.workers, 1)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict` of an earlier run (call before the first batch)."""
        self._state, self._refill = dict(state), None


@dataclass
class RunData:
    """Everything data-related a run needs."""

    train: TrainBatches
    eval_sets: dict
    spec: Any
    train_set: Any = None  # the training dataset itself (items (image, caption))
    zero_shot: dict = dataclasses.field(default_factory=dict)  # eval.zero_shot sets, built (and checked) at start


def build_data(config: TrainConfig, dist: DistInfo, model: Any = None, keyed: bool = False,
               tokenizer: Callable[[list[str]], torch.Tensor] | None = None) -> RunData:
    """Training batches and evaluation sets from ``config.data`` (preprocessing from ``model`` where unset).

    ``keyed``: batches of ``(dataset index, caption)`` keys instead of images
    (`dalip.train.frozen_cache.KeyedBatch`, for ``model.cache_frozen``), in the same order.
    ``tokenizer``: captions are tokenized in the loader workers (not for keyed batches).
    """
    spec = make_spec(config, model)
    train_set = dalip_data.build_train_dataset(spec)
    samples, collate = train_set, dalip_data.collate
    if keyed:
        check_cacheable_dataset(train_set)
        samples, collate, tokenizer = KeyedSamples(train_set), collate_keyed, None
    batches = TrainBatches(samples, collate, config.data.batch_size, config.data.workers, config.run.seed, dist,
                           tokenizer)
    return RunData(batches, dalip_data.build_eval_sets(spec), spec, train_set, zero_shot_sets(config))
