"""Image-caption CSV files in open_clip's format.

open_clip's defaults: a tab-separated file with a header naming an image
column ``filepath`` and a caption column ``title`` (open_clip's ``--csv-img-key``,
``--csv-caption-key``, ``--csv-separator``; dalip's ``data.spec.csv_img_key``,
``data.spec.csv_caption_key``, ``data.spec.csv_separator``). Relative image
paths are relative to the CSV file's folder.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from dalip.data.batch import Sample, decode_image
from dalip.data.spec import DatasetSpec, register_dataset
from dalip.data.text import utf8_error

__all__ = ["CSV_SETTINGS", "CsvCaptions", "CsvSpec", "read_caption_csv"]

CSV_SETTINGS = ("data.spec.csv_img_key", "data.spec.csv_caption_key", "data.spec.csv_separator")
"""The settings that choose the image column, the caption column and the separator (named in errors)."""


def read_caption_csv(
    path: str | Path, img_key: str = "filepath", caption_key: str = "title", separator: str = "\t",
    settings: tuple[str, str, str] = CSV_SETTINGS,
) -> list[tuple[Path, str]]:
    """`(image path, caption)` rows of a caption CSV.

    Args:
        settings: the names of the user's settings for ``img_key``, ``caption_key`` and
            ``separator`` (a config key or a command-line flag), named in the errors.

    Raises:
        FileNotFoundError: no such CSV file.
        ValueError: an empty file, a missing column (the message lists the columns
            found and names the setting to change), a row with the wrong number of fields
            or text that is not UTF-8 (the message gives the line).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"caption CSV {path} does not exist")
    if len(separator) != 1:
        raise ValueError(f"{settings[2]} must be one character, got {separator!r}")
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=separator)
        try:
            header = next(reader, None)
            if not header:
                raise ValueError(f"caption CSV {path} is empty (no header line)")
            for key, setting in ((img_key, settings[0]), (caption_key, settings[1])):
                if key not in header:
                    hint = f" (is {settings[2]} right?)" if len(header) == 1 else ""
                    raise ValueError(
                        f"caption CSV {path} has no column {key!r} (set {setting} to one of its columns); "
                        f"columns found: {header}{hint}, separator {separator!r}"
                    )
            i_img, i_cap = header.index(img_key), header.index(caption_key)
            for row in reader:
                if not row or row == [""]:
                    continue  # blank lines
                if len(row) != len(header):
                    raise ValueError(
                        f"caption CSV {path}, line {reader.line_num}: {len(row)} fields where the header has "
                        f"{len(header)} ({header})"
                    )
                image = Path(row[i_img]).expanduser()
                rows.append((image if image.is_absolute() else path.parent / image, row[i_cap]))
        except csv.Error as err:
            raise ValueError(f"caption CSV {path}, line {reader.line_num}: malformed ({err})") from err
        except UnicodeDecodeError as err:
            raise utf8_error(path, err, "caption CSV") from None
    return rows


class CsvCaptions(Dataset):
    """A caption CSV as a map-style dataset of `(image, caption)`; an unreadable image gives None.

    Missing and corrupt image files are not checked up front (that would read
    every file); they become ``None`` samples that `collate` drops and counts.
    """

    def __init__(
        self,
        path: str | Path,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        img_key: str = "filepath",
        caption_key: str = "title",
        separator: str = "\t",
    ) -> None:
        self.path = Path(path)
        self.rows = read_caption_csv(path, img_key, caption_key, separator)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> Sample | None:
        image_path, text = self.rows[item]
        image = decode_image(image_path)
        if image is None:
            return None
        return (self.transform(image) if self.transform else image), text


@register_dataset("csv", description="your image-caption CSV/TSV in open_clip's format")
@dataclass
class CsvSpec(DatasetSpec):
    """Image-caption pairs from a CSV/TSV file (open_clip's ``--csv-*`` options).

    Attributes:
        train: the CSV/TSV path; relative image paths are relative to its folder.
        csv_img_key, csv_caption_key: the image-path and caption columns.
        csv_separator: one character; tab by default as in open_clip (``","`` for a comma CSV).
    """

    train: str | None = None
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str = "\t"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train:
            raise ValueError("dataset 'csv' needs 'train': the path of an image-caption CSV/TSV")
        if not isinstance(self.csv_separator, str) or len(self.csv_separator) != 1:
            raise ValueError(f"csv_separator must be one character (\"\\t\" or \",\"), got {self.csv_separator!r}")

    def _captions(self, transform: Callable | None) -> CsvCaptions:
        return CsvCaptions(self.train, transform, self.csv_img_key, self.csv_caption_key, self.csv_separator)

    def source(self) -> CsvCaptions:
        return self._captions(self.train_transform())

    def raw_samples(self) -> Iterator[Sample | None]:
        data = self._captions(None)
        return (data[i] for i in range(len(data)))
