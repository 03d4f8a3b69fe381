"""K-shot support sets: sampled per seed at the class level, as cached features."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dalip.adapt.features import FewShotFeatures

__all__ = ["SupportSample", "SupportSet", "sample_support", "support_set"]


@dataclass(frozen=True)
class SupportSet:
    """The K-shot training data of one embedding, as cached features.

    Attributes:
        views: `(V, S, D)` unit vectors; ``views[0]`` are the plain images, the rest augmented views.
        labels: `(S,)` class indices.
        text: `(C, D)` class text embeddings of the frozen model.
    """

    views: Tensor
    labels: Tensor
    text: Tensor

    def __post_init__(self) -> None:
        if self.views.ndim != 3 or self.views.shape[1] != len(self.labels) or self.views.shape[2] != self.text.shape[1]:
            raise ValueError(f"support views (V, S, D) = {tuple(self.views.shape)} do not fit labels "
                             f"{tuple(self.labels.shape)} and text {tuple(self.text.shape)}")

    @property
    def features(self) -> Tensor:
        """`(S, D)`: the plain (un-augmented) support features."""
        return self.views[0]

    @property
    def num_classes(self) -> int:
        return self.text.shape[0]

    def flat(self, use_views: bool = True) -> tuple[Tensor, Tensor]:
        """All views as one batch: features `(V * S, D)` and labels `(V * S,)` (view-major)."""
        views = self.views if use_views else self.views[:1]
        return views.reshape(-1, views.shape[-1]), self.labels.repeat(views.shape[0])


@dataclass(frozen=True)
class SupportSample:
    """Which pool items form the support set, and the classes that had fewer than K."""

    indices: Tensor  # (S,) into the pool, class-major
    short: dict[int, int] = field(default_factory=dict)  # class -> shots taken (< K)


def sample_support(labels: Tensor, shots: int, seed: int, num_classes: int | None = None) -> SupportSample:
    """K pool items per class, drawn without replacement from a generator seeded with ``seed``.

    A class with fewer than K items contributes all of them (listed in ``short``).

    Raises:
        ValueError: ``shots < 1``, or a class without any pool item.
    """
    if not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    generator = torch.Generator().manual_seed(seed)
    chosen, short = [], {}
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) == 0:
            raise ValueError(f"class {c} has no images in the support pool (empty class)")
        take = min(shots, len(members))
        if take < shots:
            short[c] = take
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]].sort().values)
    return SupportSample(torch.cat(chosen), short)


def support_set(features: FewShotFeatures, sample: SupportSample) -> SupportSet:
    """The `SupportSet` of ``sample``'s pool items in one embedding's cached features."""
    return SupportSet(features.pool[:, sample.indices], features.pool_labels[sample.indices], features.text)
