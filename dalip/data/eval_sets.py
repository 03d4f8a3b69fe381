"""Evaluation sets: images, one caption each (retrieval) and zero-shot tasks."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dalip.data.batch import decode_image
from dalip.data.labelled import LabelledImages, load_templates, read_labelled
from dalip.data.streamed import StreamedImages
from dalip.data.transforms import PilTransform, image_transform

__all__ = ["TASK", "EvalSet", "ZeroShotSet", "ZeroShotTask", "readable_classes", "zero_shot_eval_set"]

logger = logging.getLogger(__name__)


@dataclass
class ZeroShotTask:
    """Classify each image of an eval set (`EvalSet`, `ZeroShotSet`) among `classnames`.

    Attributes:
        name: the task name, the prefix of its metrics (e.g. ``"concepts"``, ``"zero_shot"``).
        labels: `(N,)` int64, indices into `classnames`.
        classnames: readable class phrases, e.g. ``"mammal"``.
        templates: prompts with one ``"{}"`` for the class phrase; average their text embeddings.
        per_class_recall: also report ``<name>/per_class_recall`` (``{classname: recall}``).
    """

    name: str
    labels: torch.Tensor
    classnames: list[str]
    templates: list[str]
    per_class_recall: bool = False

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
        name: the subset name of its results.
        images: `(N, H, W, 3)` uint8.
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
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        batch_size: int = 256,
    ) -> Iterator[torch.Tensor]:
        """Model inputs in order: float batches `(b, 3, image_size, image_size)`, evaluation transform.

        ``mean`` / ``std`` default to `image_transform`'s 0.5 (pixels in [-1, 1]); pass the
        model's own (`dalip.data.transforms.model_preprocess`) to feed a model.
        """
        transform = image_transform(image_size, train=False, mean=mean, std=std)
        for start in range(0, len(self), batch_size):
            chunk = self.images[start : start + batch_size].permute(0, 3, 1, 2)
            yield transform(chunk) if len(chunk) else chunk.float()

    @property
    def summary(self) -> str:
        """One line: sizes and classes per task."""
        tasks = ", ".join(f"{t.name}: {len(t.classnames)} classes" for t in self.tasks.values())
        return f"{self.name}: {len(self)} images" + (f" ({tasks})" if tasks else "")


TASK = "zero_shot"
"""The task name of a `ZeroShotSet`: its metrics are ``zero_shot/top1``, ``zero_shot/balanced_accuracy`` ..."""


@dataclass
class ZeroShotSet:
    """An eval set (`EvalSetLike`) of image files with one zero-shot task, ``zero_shot``; no captions.

    Attributes:
        name: the subset name of its results.
        images: the files, decoded batch by batch (unreadable ones skipped and counted).
        tasks: ``{"zero_shot": ZeroShotTask}`` (with per-class recall).
        source: the folder or CSV it was read from.
    """

    name: str
    images: StreamedImages
    tasks: dict[str, ZeroShotTask]
    source: Path
    captions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def summary(self) -> str:
        """One line: files, classes and templates."""
        task = self.tasks[TASK]
        return (f"{self.name}: {len(self)} images in {len(task.classnames)} classes, "
                f"{len(task.templates)} templates ({self.source})")


def zero_shot_eval_set(
    source: str | os.PathLike[str] | LabelledImages,
    classnames: str | os.PathLike[str] | None = None,
    templates: str | os.PathLike[str] | Sequence[str] = "openai_imagenet",
    transform: PilTransform | None = None,
    name: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    img_key: str = "filepath",
    label_key: str = "label",
    separator: str | None = None,
) -> ZeroShotSet:
    """A `ZeroShotSet` from an image folder, a CSV/TSV or `LabelledImages`.

    Args:
        source: ``ImageFolder`` layout or a CSV/TSV (see `dalip.data.read_labelled`).
        classnames: a classnames file (one per line) replacing the folder / label names.
        templates: a named set or a file (see `dalip.data.load_templates`), or the
            templates themselves (each with ``"{}"``).
        transform: PIL image -> ``(3, H, W)``; None: the evaluated model's own
            (`model_transform`).
        name: the subset name in the results (default: the folder or file stem).
        batch_size: files per batch of the DataLoader decoding them.
        workers: its worker processes (0: decode in this process).
        img_key: the CSV image-path column.
        label_key: the CSV label column.
        separator: the CSV separator (default: a tab for ``.tsv``, else a comma).

    Classes whose images are all unreadable are left out (`readable_classes`).

    Raises:
        FileNotFoundError, ValueError: bad input, naming the file (see `dalip.data.read_labelled`);
            fewer than two classes with a readable image.
    """
    if isinstance(source, LabelledImages):
        data = source if classnames is None else source.with_classnames(classnames)
    else:
        data = read_labelled(source, classnames, img_key, label_key, separator)
    if isinstance(templates, (str, os.PathLike)):
        templates = load_templates(templates)
    elif not templates or not all("{}" in t for t in templates):
        raise ValueError(f"templates must be non-empty, each with '{{}}' for the class name: {list(templates)}")
    name = name or (data.source.name if data.source.is_dir() else data.source.stem)
    data = readable_classes(data, name)
    images = StreamedImages(data.paths, transform, batch_size, workers, source=data.source)
    task = ZeroShotTask(TASK, torch.as_tensor(data.labels, dtype=torch.long), list(data.classnames), list(templates),
                        per_class_recall=True)
    return ZeroShotSet(name, images, {TASK: task}, data.source)


def readable_classes(data: LabelledImages, name: str) -> LabelledImages:
    """``data`` fit for zero-shot classification: at least two classes with a readable image.

    Files are decoded in order until each class has one that reads (one per class when all are
    good). A class none of whose images reads is named in a warning and left out, as if its folder
    were absent (its files are not counted in ``num_skipped`` either): a candidate class that no
    image can have would only change ``num_classes``, the chance levels and the predictions. A class
    without any image (a classnames file naming more
    classes than a CSV uses) stays a candidate.

    Raises:
        ValueError: fewer than two classes with a readable image (a one-class folder, say).
    """
    readable: set[int] = set()
    for path, label in zip(data.paths, data.labels):
        if label not in readable and decode_image(path) is not None:
            readable.add(label)
    unreadable = sorted(set(data.labels) - readable)
    if unreadable:
        logger.warning("zero-shot set %r (%s): class(es) %s left out: none of their images is readable", name,
                       data.source, ", ".join(repr(data.classnames[c]) for c in unreadable))
        data = data.without_classes(unreadable)
    if len(readable) < 2:
        found = ", ".join(repr(data.classnames[c]) for c in sorted(set(data.labels))) or "none"
        raise ValueError(f"{data.source}: zero-shot classification needs at least two classes with a readable "
                         f"image; found {len(readable)} ({found})")
    return data
