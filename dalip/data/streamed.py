"""Image files decoded batch by batch through a DataLoader, so a large set never sits in memory at full size.

Unreadable files are skipped and counted: after a pass, `StreamedImages.kept`
holds the indices of the images that were encoded, so labels and captions can be
dropped consistently (`dalip.eval.evaluate_set` does this).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dalip.data.batch import decode_image
from dalip.data.transforms import PilTransform

__all__ = ["ImageFiles", "StreamedImages"]

logger = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """``dataset[i]``: ``(transform(image_i) (3, H, W), i)``, or None when file ``i`` is unreadable."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], transform: PilTransform) -> None:
        self.paths, self.transform = [Path(p) for p in paths], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        image = decode_image(self.paths[index])
        return None if image is None else (self.transform(image), index)


def collate_indexed(samples: Sequence[tuple[Tensor, int] | None]) -> tuple[Tensor, Tensor, int]:
    """``(images (B', 3, H, W), indices (B',), skipped)``: a batch's readable samples, the count of the others."""
    good = [s for s in samples if s is not None]
    indices = torch.tensor([i for _, i in good], dtype=torch.long)
    images = torch.stack([x for x, _ in good]) if good else torch.empty(0)
    return images, indices, len(samples) - len(good)


class StreamedImages:
    """Float image batches ``(B, 3, H, W)`` decoded from ``paths`` in order, ``batch_size`` files at a time.

    Iterating runs a DataLoader (``workers`` processes, 0: in this process) over
    the files with ``transform`` (PIL image -> ``(3, H, W)``). When ``transform``
    is None, `dalip.eval.encode_images` uses the model's own
    (`dalip.eval.model_transform`). After a complete pass, `kept` is the LongTensor
    of the indices of the images that were read and `skipped` the number of
    unreadable ones (logged as a warning).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        transform: PilTransform | None = None,
        batch_size: int = 64,
        workers: int = 0,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
        self.paths, self.transform = list(paths), transform
        self.batch_size, self.workers, self.source = batch_size, workers, source
        self.kept: Tensor | None = None
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Tensor]:
        if self.transform is None:
            raise ValueError("StreamedImages without a transform: pass one, or use dalip.eval.encode_images")
        return self.batches(self.transform)

    def batches(self, transform: PilTransform) -> Iterator[Tensor]:
        """The float batches with ``transform``; sets `kept` and `skipped` at the end of the pass."""
        self.kept, self.skipped = None, 0
        loader = DataLoader(
            ImageFiles(self.paths, transform), batch_size=self.batch_size, num_workers=self.workers,
            collate_fn=collate_indexed,
        )
        kept, skipped = [], 0
        for images, indices, bad in loader:
            kept.append(indices)
            skipped += bad
            if len(indices):
                yield images
        self.kept, self.skipped = torch.cat(kept) if kept else torch.empty(0, dtype=torch.long), skipped
        if skipped:
            where = self.source or "image files"
            logger.warning("%s: skipped %d unreadable image(s) of %d", where, skipped, len(self.paths))
