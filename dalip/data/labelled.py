"""Labelled images on disk: an image folder (one sub-folder per class) or a CSV/TSV, class names, prompt templates.

Reading only lists files and labels; images are decoded later (unreadable ones
are skipped and counted then, see `dalip.data.batch.decode_image`).

```python
data = read_labelled("leaves/")                      # leaves/<class>/*.jpg
data = read_labelled("val.csv", classnames="names.txt", label_key="label")
templates = load_templates("openai_imagenet")        # or "simple", or a file
```
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from dalip.data.text import utf8_error

__all__ = [
    "TEMPLATE_SETS",
    "LabelledImages",
    "load_templates",
    "read_classnames",
    "read_image_folder",
    "read_labelled",
    "read_labelled_csv",
]

SIMPLE_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.")
TEMPLATE_SETS = ("openai_imagenet", "openai_imagenet_simple", "simple")
"""Named template sets of `load_templates`."""


@dataclass
class LabelledImages:
    """Image files with one class each.

    Attributes:
        paths: ``N`` image files.
        labels: ``N`` indices into `classnames`.
        classnames: the ``C`` class names (prompted in zero-shot evaluation).
        source: the folder or CSV file they were read from (named in errors).
    """

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    source: Path

    def __len__(self) -> int:
        return len(self.paths)

    def with_classnames(self, path: str | os.PathLike[str]) -> LabelledImages:
        """A copy whose class names come from a classnames file (same order, same count)."""
        names = read_classnames(path)
        check_num_classes(names, len(self.classnames), path, self.source)
        return LabelledImages(self.paths, self.labels, names, self.source)

    def without_classes(self, dropped: Collection[int]) -> LabelledImages:
        """A copy without the classes ``dropped`` (indices) and their images; the others renumbered in order."""
        dropped = set(dropped)
        keep = [c for c in range(len(self.classnames)) if c not in dropped]
        index = {old: new for new, old in enumerate(keep)}
        rows = [(path, index[label]) for path, label in zip(self.paths, self.labels) if label in index]
        return LabelledImages([p for p, _ in rows], [y for _, y in rows], [self.classnames[c] for c in keep],
                              self.source)


def _image_extensions() -> tuple[str, ...]:
    return tuple(IMG_EXTENSIONS)


def read_image_folder(root: str | os.PathLike[str]) -> LabelledImages:
    """Images in torchvision's ``ImageFolder`` layout: ``root/<class>/**/<image>``.

    Classes are the sorted sub-folder names (class index = position), images the
    files with torchvision's ``IMG_EXTENSIONS`` (any case), in ``ImageFolder``'s
    order. Class names are the folder names with underscores replaced by spaces
    (``golden_retriever`` -> ``"golden retriever"``); a classnames file replaces them
    (`LabelledImages.with_classnames`).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no class sub-folders, or a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise ValueError(
            f"{root}: no class sub-folders (expected {root}/<class>/<image>, as torchvision's ImageFolder)"
        )
    extensions = _image_extensions()
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = [
            Path(folder) / file
            for folder, _, files in sorted(os.walk(root / name, followlinks=True))
            for file in sorted(files)
            if file.lower().endswith(extensions)
        ]
        if not found:
            raise ValueError(f"{root / name}: class folder without images ({', '.join(extensions)})")
        paths += found
        labels += [index] * len(found)
    return LabelledImages(paths, labels, [c.replace("_", " ") for c in classes], root)


def _separator(path: Path, separator: str | None) -> str:
    if separator is not None:
        return separator
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_labelled_csv(
    path: str | os.PathLike[str],
    img_key: str = "filepath",
    label_key: str = "label",
    separator: str | None = None,
    classnames: str | os.PathLike[str] | None = None,
) -> LabelledImages:
    """Images and labels from a CSV/TSV with a header row.

    Image paths are relative to the file's folder (absolute ones are kept). Labels
    are class names (classes = sorted unique labels) or integers (class indices;
    then ``classnames``, a classnames file, is required). ``classnames`` also
    replaces string labels' names, in sorted-label order.

    Args:
        separator: the column separator; by default a tab for ``.tsv``, else a comma.

    Raises:
        FileNotFoundError: ``path`` or ``classnames`` is missing.
        ValueError: a missing column, no rows, an empty label, integer labels without
            a classnames file or outside it, a classnames file of the wrong length, text
            that is not UTF-8 (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        try:
            reader = csv.DictReader(f, delimiter=_separator(path, separator))
            columns = reader.fieldnames or []
            missing = [k for k in (img_key, label_key) if k not in columns]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; columns are {columns} "
                                 f"(set img_key / label_key, or the separator)")
            rows = [(row[img_key], (row[label_key] or "").strip()) for row in reader]
        except UnicodeDecodeError as err:

            raise utf8_error(path, err, "labelled CSV") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    empty = [i + 2 for i, (_, label) in enumerate(rows) if not label]
    if empty:
        raise ValueError(f"{path}: empty {label_key!r} on line(s) {empty[:10]}")
    paths = [path.parent / file for file, _ in rows]
    raw = [label for _, label in rows]
    if all(label.lstrip("-").isdigit() for label in raw):
        if classnames is None:
            raise ValueError(f"{path}: integer labels need a classnames file (one class name per line)")
        names = read_classnames(classnames)
        labels = [int(label) for label in raw]
        bad = sorted({x for x in labels if not 0 <= x < len(names)})
        if bad:
            raise ValueError(f"{path}: labels {bad[:10]} outside [0, {len(names)}) of {classnames}")
        return LabelledImages(paths, labels, names, path)
    classes = sorted(set(raw))
    index = {name: i for i, name in enumerate(classes)}
    data = LabelledImages(paths, [index[label] for label in raw], classes, path)
    return data if classnames is None else data.with_classnames(classnames)


def read_labelled(
    source: str | os.PathLike[str],
    classnames: str | os.PathLike[str] | None = None,
    img_key: str = "filepath",
    label_key: str = "label",
    separator: str | None = None,
) -> LabelledImages:
    """`read_image_folder` for a folder, `read_labelled_csv` for a file; ``classnames`` replaces the names."""
    source = Path(source)
    if source.is_dir():
        data = read_image_folder(source)
        return data if classnames is None else data.with_classnames(classnames)
    if source.is_file():
        return read_labelled_csv(source, img_key, label_key, separator, classnames)
    raise FileNotFoundError(f"labelled images not found: {source} (an image folder or a CSV/TSV file)")


def read_classnames(path: str | os.PathLike[str]) -> list[str]:
    """Class names, one per line (clip_benchmark's format); surrounding spaces and blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classnames file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names")
    return names


def check_num_classes(names: list[str], num_classes: int, path: str | os.PathLike[str], source: Path) -> None:
    """A classnames file must name every class of ``source``."""
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, but {source} has {num_classes} classes")


def _named_templates(name: str) -> list[str]:
    if name == "simple":
        return list(SIMPLE_TEMPLATES)
    from open_clip import zero_shot_metadata

    found = {
        "openai_imagenet": zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES,
        "openai_imagenet_simple": zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES,
    }[name]
    # open_clip ships them as `lambda c: f"... {c} ..."` (older versions as format strings)
    return [t if isinstance(t, str) else t("{}") for t in found]


def load_templates(name_or_path: str | os.PathLike[str]) -> list[str]:
    """Prompt templates with ``"{}"`` where the class name goes.

    ``name_or_path`` is a named set, or a file with one template per line using
    ``{c}`` (clip_benchmark's form) or ``{}`` (blank lines ignored). Named sets:

    - ``"openai_imagenet"``: the 80 ImageNet templates of CLIP, as open_clip ships them
      (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``);
    - ``"openai_imagenet_simple"``: open_clip's 7-template subset (``SIMPLE_IMAGENET_TEMPLATES``);
    - ``"simple"``: ``"a photo of a {}."``, ``"a photo of the {}."``, ``"a picture of a {}."``,
      ``"an image of a {}."``.

    Raises:
        FileNotFoundError: neither a named set nor a file.
        ValueError: an empty file, or a line without a placeholder (file and line named).
    """
    if str(name_or_path) in TEMPLATE_SETS:
        return _named_templates(str(name_or_path))
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"templates {str(name_or_path)!r}: neither a file nor a named set ({', '.join(TEMPLATE_SETS)})"
        )
    templates = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        template = line.replace("{c}", "{}")
        if "{}" not in template:
            raise ValueError(
                f"{path}:{number}: template {line!r} has no '{{c}}' or '{{}}' placeholder for the class name"
            )
        templates.append(template)
    if not templates:
        raise ValueError(f"{path}: no templates")
    return templates
