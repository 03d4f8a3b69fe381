"""Zero-shot evaluation on your own labelled images (an image folder or a CSV/TSV).

```python
from dalip.eval import evaluate_zero_shot, format_results

results = evaluate_zero_shot(model, tokenizer, "leaves/", templates="openai_imagenet")
results["first"]["leaves"]["zero_shot/balanced_accuracy"]
```
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from dalip.data.labelled import LabelledImages, load_templates, read_labelled
from dalip.eval.preprocess import PilTransform
from dalip.eval.run import Results, evaluate
from dalip.eval.streamed import StreamedImages

__all__ = ["LabelledTask", "ZeroShotSet", "evaluate_zero_shot", "zero_shot_eval_set"]

TASK = "zero_shot"
"""The task name of a `ZeroShotSet`: its metrics are ``zero_shot/top1``, ``zero_shot/balanced_accuracy`` ..."""


@dataclass
class LabelledTask:
    """The ``zero_shot`` task of a `ZeroShotSet` (a `TaskLike` that also reports per-class recall).

    Attributes:
        labels: ``(N,)`` int64, indices into `classnames`, one per file.
        classnames: the ``C`` class names.
        templates: prompts with ``"{}"`` for the class name.
    """

    labels: Tensor
    classnames: list[str]
    templates: list[str]
    per_class_recall: bool = True


@dataclass
class ZeroShotSet:
    """An eval set (`EvalSetLike`) of image files with one zero-shot task, ``zero_shot``; no captions.

    Attributes:
        name: the subset name of its results.
        images: the files, decoded batch by batch (unreadable ones skipped and counted).
        tasks: ``{"zero_shot": LabelledTask}``.
        source: the folder or CSV it was read from.
    """

    name: str
    images: StreamedImages
    tasks: dict[str, LabelledTask]
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

    Raises:
        FileNotFoundError, ValueError: bad input, naming the file (see `dalip.data.read_labelled`).
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
    images = StreamedImages(data.paths, transform, batch_size, workers, source=data.source)
    task = LabelledTask(torch.as_tensor(data.labels, dtype=torch.long), list(data.classnames), list(templates))
    return ZeroShotSet(name, images, {TASK: task}, data.source)


def evaluate_zero_shot(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    sources: str | os.PathLike[str] | ZeroShotSet | Sequence[str | os.PathLike[str] | ZeroShotSet],
    classnames: str | os.PathLike[str] | None = None,
    templates: str | os.PathLike[str] | Sequence[str] = "openai_imagenet",
    embeddings: Sequence[str] | None = None,
    transform: PilTransform | None = None,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> Results:
    """Zero-shot metrics of ``model`` on one or several labelled image folders / CSVs.

    Paths become sets with `zero_shot_eval_set` (``classnames``, ``templates``,
    ``transform`` apply to each; the model's own transform by default); ready
    `ZeroShotSet`s are used as they are.

    Returns:
        ``{embedding: {set name: metrics}}`` (as `evaluate`) with ``zero_shot/top1``,
        ``zero_shot/top5`` (5+ classes), ``zero_shot/balanced_accuracy``,
        ``zero_shot/per_class_recall`` (``{classname: recall}``), ``zero_shot/num_classes``,
        ``zero_shot/num_samples`` (images read), ``zero_shot/num_skipped`` (unreadable).
    """
    if isinstance(sources, (str, os.PathLike, ZeroShotSet)):
        sources = [sources]
    sets: dict[str, ZeroShotSet] = {}
    for source in sources:
        if not isinstance(source, ZeroShotSet):
            source = zero_shot_eval_set(
                source, classnames, templates, transform, batch_size=batch_size, workers=workers
            )
        if source.name in sets:
            raise ValueError(f"two eval sets named {source.name!r} ({sets[source.name].source}, {source.source}); "
                             "pass ZeroShotSets with distinct names")
        sets[source.name] = source
    return evaluate(model, tokenizer, sets, embeddings, batch_size=batch_size, progress=progress)

