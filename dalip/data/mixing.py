"""Mixing a domain and a general dataset at a set ratio (the data-mixing idea behind PlantMix-13M).

Each drawn sample comes from the domain source with probability
`domain_fraction`, so a batch holds that fraction in expectation. The draws
are fixed by `seed` and the epoch (`set_epoch`); each source is walked in a
seeded permutation, restarting when used up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from dalip.data.batch import Sample
from dalip.data.sharding import consumer_info

__all__ = ["MapAsIterable", "MixedDataset", "MixedIterableDataset"]

logger = logging.getLogger(__name__)


def _check_fraction(domain_fraction: float) -> float:
    if not 0.0 <= domain_fraction <= 1.0:
        raise ValueError(f"domain_fraction must be in [0, 1], got {domain_fraction}")
    return float(domain_fraction)


class MixedDataset(Dataset):
    """Map-style mix of two map-style datasets.

    Args:
        domain: the domain source (may be empty only if ``domain_fraction`` is 0).
        general: the general source (may be empty only if ``domain_fraction`` is 1).
        domain_fraction: probability that an item comes from `domain`.
        seed: fixes the plan of every epoch.
        length: items per epoch; default ``len(domain) + len(general)``.
    """

    def __init__(self, domain: Dataset, general: Dataset, domain_fraction: float, seed: int = 0,
                 length: int | None = None) -> None:
        self.sources = (domain, general)
        self.domain_fraction = _check_fraction(domain_fraction)
        for source, share, label in ((domain, self.domain_fraction, "domain"), (general, 1 - self.domain_fraction, "general")):
            if share > 0 and len(source) == 0:
                raise ValueError(f"the {label} dataset is empty but domain_fraction={domain_fraction} draws from it")
        self.seed = seed
        self.length = int(length) if length is not None else len(domain) + len(general)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's plan: for item i, a source `(L,)` and an index into it `(L,)`."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        self.from_domain = rng.random(self.length) < self.domain_fraction
        self.source_index = np.empty(self.length, np.int64)
        for flag, source in ((True, self.sources[0]), (False, self.sources[1])):
            slots = np.flatnonzero(self.from_domain == flag)
            if len(slots):  # concatenated permutations: every item once before any repeats
                cycles = -(-len(slots) // len(source))
                self.source_index[slots] = np.concatenate([rng.permutation(len(source)) for _ in range(cycles)])[: len(slots)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> Sample | None:
        source = self.sources[0] if self.from_domain[item] else self.sources[1]
        return source[int(self.source_index[item])]


class MapAsIterable(IterableDataset):
    """A map-style dataset walked in a seeded random order, split across workers and ranks."""

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True) -> None:
        self.dataset, self.seed, self.shuffle, self.epoch = dataset, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Sample | None]:
        index, count = consumer_info()
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        for i in order[index::count]:
            yield self.dataset[int(i)]


class MixedIterableDataset(IterableDataset):
    """Iterable mix of two iterable datasets (e.g. webdataset shards).

    A source that runs out restarts; the epoch ends once both have run out at
    least once (each reader, i.e. each worker of each rank, mixes its own share).
    """

    def __init__(self, domain: IterableDataset, general: IterableDataset, domain_fraction: float, seed: int = 0) -> None:
        self.sources = (domain, general)
        self.domain_fraction = _check_fraction(domain_fraction)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for source in self.sources:
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def __iter__(self) -> Iterator[Sample | None]:
        index, _ = consumer_info()
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        iterators = [iter(s) for s in self.sources]
        finished = [self.domain_fraction == 0.0, self.domain_fraction == 1.0]  # a source never drawn needs no pass
        while not all(finished):
            k = 0 if rng.random() < self.domain_fraction else 1
            try:
                yield next(iterators[k])
            except StopIteration:
                finished[k] = True
                iterators[k] = iter(self.sources[k])
                try:
                    yield next(iterators[k])
                except StopIteration:  # empty for this reader: the ratio cannot be kept, end the epoch
                    logger.warning("the %s source of the mix has no samples for reader %d; ending the epoch",
                                   ("domain", "general")[k], index)
                    return
