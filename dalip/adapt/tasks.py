"""Few-shot tasks: the embedded Twemoji domain subset and any labelled image CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dalip.adapt.features import FewShotImages
from dalip.data import (
    SUBCATEGORY_TEMPLATES,
    decode_image,
    read_caption_csv,
    subcategory_phrase,
    twemoji_eval_sets,
    twemoji_split,
)
from dalip.data.twemoji.splits import stable_fraction

__all__ = ["DEFAULT_TEMPLATES", "csv_task", "twemoji_domain_task"]

#: prompts for CSV labels
DEFAULT_TEMPLATES = ("a photo of a {}.", "an image of a {}.", "{}.")


def twemoji_domain_task(cache_dir: str | Path | None = None, val_fraction: float = 0.25) -> FewShotImages:
    """The domain subset at the subcategory level (9 classes: mammal, bird, ... vegetable).

    Pool: every image of the training-side concepts; test: the held-out concepts' base
    images, i.e. the eval set ``"twemoji-domain"`` with its ``"subcategories"`` task.
    """
    split = twemoji_split(cache_dir, val_fraction)
    test = twemoji_eval_sets(split, ["domain"])["twemoji-domain"]
    task = test.tasks["subcategories"]
    lookup = {name: k for k, name in enumerate(task.classnames)}
    pool = split.indices("domain", "train")
    a = split.arrays
    missing = sorted({subcategory_phrase(a.subcategories[i]) for i in pool} - set(lookup))
    if missing:
        raise ValueError(f"twemoji-domain: training classes {missing} have no held-out images")
    return FewShotImages(
        name="twemoji-domain",
        pool_images=torch.from_numpy(a.images[pool]),
        pool_labels=torch.tensor([lookup[subcategory_phrase(a.subcategories[i])] for i in pool]),
        test_images=test.images,
        test_labels=task.labels,
        classnames=list(task.classnames),
        templates=list(task.templates or SUBCATEGORY_TEMPLATES),
    )


def _read_images(rows: Sequence[tuple[Path, str]], size: int) -> tuple[torch.Tensor, list[str]]:
    images, labels = [], []
    for path, label in rows:
        image = decode_image(path)
        if image is None:
            raise ValueError(f"cannot read image {path}")
        images.append(np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC)))
        labels.append(label)
    return torch.from_numpy(np.stack(images)), labels


def csv_task(
    path: str | Path,
    test_path: str | Path | None = None,
    img_key: str = "filepath",
    label_key: str = "title",
    separator: str = "\t",
    test_fraction: float = 0.3,
    image_size: int = 128,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> FewShotImages:
    """A few-shot task from a CSV of image paths and class labels (the caption column holds the label).

    Args:
        path: the CSV (open_clip's format; relative paths are relative to its folder).
        test_path: a second CSV with the test images; without one, a stable hash of each
            image path sends ``test_fraction`` of every class's rows to the test side.
        image_size: images are resized to this square size and held as uint8.
    """
    flags = ("--csv-img-key", "--csv-label-key", "--csv-separator")  # the adapt command's own names for them
    rows = read_caption_csv(path, img_key, label_key, separator, settings=flags)
    if test_path is not None:
        pool_rows, test_rows = rows, read_caption_csv(test_path, img_key, label_key, separator, settings=flags)
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        by_hash = sorted(rows, key=lambda r: stable_fraction(str(r[0])))
        pool_rows, test_rows = [], []
        for label in sorted({r[1] for r in rows}):
            members = [r for r in by_hash if r[1] == label]
            cut = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
            test_rows += members[:cut]
            pool_rows += members[cut:]
    classnames = sorted({r[1] for r in pool_rows})
    unknown = sorted({r[1] for r in test_rows} - set(classnames))
    if unknown:
        raise ValueError(f"{path}: test labels {unknown[:5]} have no training images (empty class)")
    lookup = {c: k for k, c in enumerate(classnames)}
    pool_images, pool_labels = _read_images(pool_rows, image_size)
    test_images, test_labels = _read_images(test_rows, image_size)
    return FewShotImages(
        name=Path(path).stem,
        pool_images=pool_images,
        pool_labels=torch.tensor([lookup[x] for x in pool_labels]),
        test_images=test_images,
        test_labels=torch.tensor([lookup[x] for x in test_labels]),
        classnames=classnames,
        templates=list(templates),
    )
