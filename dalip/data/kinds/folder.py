"""Labelled images as training data: captions made from the class names and prompt templates.

The usual case of domain datasets (plants, fungi, medical images) is labels without
captions. Each access of image ``i`` draws one template with the torch RNG (so it is
reproducible under the trainer's per-sample seeding) and fills in the class name:
``"a photo of a {}."`` + ``"golden retriever"`` -> ``"a photo of a golden retriever."``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from dalip.data.batch import Sample, decode_image
from dalip.data.eval_sets import zero_shot_eval_set
from dalip.data.labelled import LabelledImages, load_templates, read_labelled
from dalip.data.spec import DatasetSpec, register_dataset
from dalip.errors import ConfigError

__all__ = ["FolderSpec", "LabelledCaptions"]


class LabelledCaptions(Dataset):
    """``(transform(image), caption)`` for labelled images, or None for an unreadable file.

    Args:
        data: image files, labels and class names.
        templates: prompts with ``"{}"`` for the class name; one is drawn per access.
        transform: PIL image -> ``(3, S, S)`` float (None: the PIL image itself).
    """

    def __init__(self, data: LabelledImages, templates: Sequence[str], transform: Callable | None = None) -> None:
        if not templates:
            raise ValueError("labelled captions need at least one template")
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ValueError(f"templates need a '{{}}' placeholder for the class name: {bad}")
        self.data, self.templates, self.transform = data, list(templates), transform

    def __len__(self) -> int:
        return len(self.data)

    def caption(self, item: int, template: int) -> str:
        """Caption ``template`` (an index into `templates`) of image ``item``."""
        return self.templates[template].replace("{}", self.data.classnames[self.data.labels[item]])

    def caption_variants(self, item: int) -> list[str]:
        """Every caption ``self[item]`` can draw, one per template (`dalip.data.batch.CaptionVariants`)."""
        return [self.caption(item, t) for t in range(len(self.templates))]

    def __getitem__(self, item: int) -> Sample | None:
        image = decode_image(self.data.paths[item])
        if image is None:
            return None
        template = int(torch.randint(len(self.templates), ()))
        return (self.transform(image) if self.transform else image), self.caption(item, template)


@register_dataset("folder", description="your labelled images (class folders or a CSV/TSV with a label column), "
                                        "captioned from class names and templates")
@dataclass
class FolderSpec(DatasetSpec):
    """Labelled images: a folder with one sub-folder per class (torchvision ``ImageFolder``
    layout) or a CSV/TSV with image-path and label columns.

    Attributes:
        train: the folder or CSV/TSV file.
        val: held-out labelled images of the same form (folder or CSV/TSV), evaluated
            zero-shot with the same class names and templates as eval set ``"val"``.
        classnames: a file with one class name per line (clip_benchmark's format), in
            class-index order; default the folder names (underscores as spaces) or the
            CSV's label strings.
        templates: caption / prompt templates: a named set (``"simple"``,
            ``"openai_imagenet"``) or a file with one template per line (``{c}`` or ``{}``).
        img_key, label_key: the CSV/TSV columns.
        separator: the CSV/TSV separator; default from the suffix (``.tsv``: tab, else comma).
    """

    train: str | None = None
    classnames: str | None = None
    templates: str = "simple"
    img_key: str = "filepath"
    label_key: str = "label"
    separator: str | None = None

    val_is_captions = False  # `val` holds labelled images, evaluated zero-shot (see own_eval_sets)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train:
            raise ValueError("dataset 'folder' needs 'train': a folder of class sub-folders or a labelled CSV/TSV")

    def read(self, source: str) -> LabelledImages:
        """The labelled images of ``source`` with this spec's columns and class names."""
        return read_labelled(source, self.classnames, self.img_key, self.label_key, self.separator)

    def source(self) -> LabelledCaptions:
        return LabelledCaptions(self.read(self.train), load_templates(self.templates), self.train_transform())

    def own_eval_sets(self) -> dict[str, Any]:
        """``{"val": zero-shot set}`` of the held-out labelled images, when `val` is set.

        Raises:
            ConfigError: ``data.spec.val`` has fewer than two classes with a readable image.
        """
        if not self.val:
            return {}

        train = self.read(self.train)
        val = self.read(self.val)
        if val.classnames != train.classnames:
            raise ValueError(f"val {self.val}: classes {val.classnames[:5]}... differ from train {self.train}: "
                             f"{train.classnames[:5]}...")
        templates = load_templates(self.templates)
        try:
            return {"val": zero_shot_eval_set(val, templates=templates, name="val")}
        except ValueError as err:  # too few readable classes: checked here, before any training step
            raise ConfigError(f"data.spec.val: {err}") from None

