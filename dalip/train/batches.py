"""Deterministic, resumable batches for the training loop.

Micro-batch ``k`` of a run is always the same samples with the same
augmentations: the epoch's order is a permutation drawn from ``(seed, epoch)``,
each sample's transforms run under an RNG seeded by ``(seed, epoch, index)``, and
a resumed run starts the loader at the batch it stopped at.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

import dalip.data as dalip_data
from dalip.runs.config import TrainConfig
from dalip.runs.data import make_spec
from dalip.train.distributed import DistInfo
from dalip.train.frozen_cache import KeyedSamples, check_cacheable_dataset, collate_keyed

__all__ = ["RunData", "RunOrder", "SeededSamples", "TrainBatches", "build_data"]


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
    batches (what ``drop_last`` would keep), so batches never straddle two epochs;
    the first epoch starts at batch ``start_batch``. One loader over this order lives
    for the whole run: its workers keep prefetching across epoch boundaries instead of
    a new loader (and a pipeline refilled from empty) at every epoch.
    """

    def __init__(self, size: int, seed: int, rank: int, world: int, batch_size: int, per_epoch: int,
                 start_epoch: int = 0, start_batch: int = 0) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.batch_size, self.per_epoch = batch_size, per_epoch
        self.start_epoch, self.start_batch = start_epoch, start_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.start_epoch, self.start_batch * self.batch_size
        while True:
            order = epoch_order(self.size, self.seed, epoch, self.rank, self.world)
            for index in order[start : self.per_epoch * self.batch_size]:
                yield epoch, index
            epoch, start = epoch + 1, 0


class TrainBatches:
    """``get(k)``: micro-batch ``k`` of the run; sequential calls reuse one loader."""

    def __init__(self, dataset: Dataset, collate, batch_size: int, workers: int, seed: int, dist: DistInfo) -> None:
        self.iterable = isinstance(dataset, IterableDataset)
        self.dataset = dataset if self.iterable else SeededSamples(dataset, seed)
        self.collate, self.batch_size, self.workers, self.seed, self.dist = collate, batch_size, workers, seed, dist
        if not self.iterable:
            self.per_epoch = len(dataset) // (batch_size * dist.world_size)  # type: ignore[arg-type]
            if self.per_epoch == 0:
                raise ValueError(
                    f"the training set has {len(dataset)} samples, fewer than one batch of "  # type: ignore[arg-type]
                    f"{batch_size} x {dist.world_size} ranks"
                )
        self._next, self._iter = -1, None

    def _loader(self, **kwargs: Any) -> Iterator[Any]:
        return iter(DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.workers,
                               collate_fn=self.collate, pin_memory=self.dist.device.type == "cuda", **kwargs))

    def _stream(self, k: int) -> Iterator[Any]:
        """Micro-batches from ``k`` on, across epochs."""
        if not self.iterable:
            epoch, within = divmod(k, self.per_epoch)
            order = RunOrder(len(self.dataset), self.seed, self.dist.rank, self.dist.world_size, self.batch_size,
                             self.per_epoch, epoch, within)
            yield from self._loader(sampler=order)
            return
        epoch, seen = 0, 0
        while True:  # a stream cannot seek: consume what a resumed run already used
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            for batch in self._loader():
                if seen >= k:
                    yield batch
                seen += 1
            epoch += 1

    def get(self, k: int) -> Any:
        """Micro-batch ``k`` of the run (sequential access is cheap, a jump restarts the loader)."""
        if self._iter is None or k != self._next:
            self._iter = self._stream(k)
        self._next = k + 1
        return next(self._iter)


@dataclass
class RunData:
    """Everything data-related a run needs."""

    train: TrainBatches
    eval_sets: dict
    spec: Any
    train_set: Any = None  # the training dataset itself (items (image, caption))


def build_data(config: TrainConfig, dist: DistInfo, model: Any = None, keyed: bool = False) -> RunData:
    """Training batches and evaluation sets from ``config.data`` (preprocessing from ``model`` where unset).

    ``keyed``: batches of ``(dataset index, caption)`` keys instead of images
    (`dalip.train.frozen_cache.KeyedBatch`, for ``model.cache_frozen``), in the same order.
    """
    spec = make_spec(config, model)
    train_set = dalip_data.build_train_dataset(spec)
    samples, collate = train_set, dalip_data.collate
    if keyed:
        check_cacheable_dataset(train_set)
        samples, collate = KeyedSamples(train_set), collate_keyed
    batches = TrainBatches(samples, collate, config.data.batch_size, config.data.workers, config.run.seed, dist)
    return RunData(batches, dalip_data.build_eval_sets(spec), spec, train_set)


