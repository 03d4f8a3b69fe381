"""Evaluation sets: images, one caption each (retrieval) and zero-shot tasks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dalip.data.transforms import DEFAULT_MEAN, DEFAULT_STD, image_transform

__all__ = ["EvalSet", "ZeroShotTask"]


@dataclass
class ZeroShotTask:
    """Classify each image of an `EvalSet` among `classnames`.

    Attributes:
        name: ``"concepts"`` (held-out emoji names) or ``"subcategories"``.
        labels: `(N,)` int64, indices into `classnames`.
        classnames: readable class phrases, e.g. ``"mammal"``.
        templates: prompts with one ``"{}"`` for the class phrase; average their text embeddings.
    """

    name: str
    labels: torch.Tensor
    classnames: list[str]
    templates: list[str]

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.numel() and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classnames):
            raise ValueError(f"task {self.name!r}: labels outside [0, {len(self.classnames)})")
        if not all("{}" in t for t in self.templates):
            raise ValueError(f"task {self.name!r}: every template needs a '{{}}' placeholder, got {self.templates}")

    def prompts(self) -> list[list[str]]:
        """`[class][template]` prompt strings."""
        return [[t.format(c) for t in self.templates] for c in self.classnames]


@dataclass
class EvalSet:
    """Images with captions and zero-shot tasks.

    Attributes:
        name: e.g. ``"twemoji-domain"``.
        images: `(N, H, W, 3)` uint8 (72 x 72 for Twemoji).
        captions: `N` captions, one per image (image-text retrieval).
        tasks: zero-shot tasks by name (may be empty for plain caption data).
    """

    name: str
    images: torch.Tensor
    captions: list[str]
    tasks: dict[str, ZeroShotTask] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = torch.as_tensor(self.images)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"eval set {self.name!r}: images must be (N, H, W, 3) uint8, got "
                             f"{tuple(self.images.shape)} {self.images.dtype}")
        if len(self.captions) != len(self.images):
            raise ValueError(f"eval set {self.name!r}: {len(self.images)} images but {len(self.captions)} captions")
        for task in self.tasks.values():
            if len(task.labels) != len(self.images):
                raise ValueError(f"eval set {self.name!r}: task {task.name!r} has {len(task.labels)} labels "
                                 f"for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def pixels(
        self,
        image_size: int = 128,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        batch_size: int = 256,
    ) -> Iterator[torch.Tensor]:
        """Model inputs in order: float batches `(b, 3, image_size, image_size)`, evaluation transform."""
        transform = image_transform(image_size, train=False, mean=mean, std=std)
        for start in range(0, len(self), batch_size):
            chunk = self.images[start : start + batch_size].permute(0, 3, 1, 2)
            yield transform(chunk) if len(chunk) else chunk.float()

    @property
    def summary(self) -> str:
        """One line: sizes and classes per task."""
        tasks = ", ".join(f"{t.name}: {len(t.classnames)} classes" for t in self.tasks.values())
        return f"{self.name}: {len(self)} images" + (f" ({tasks})" if tasks else "")
