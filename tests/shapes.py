"""A tiny generated labelled image dataset for the zero-shot tests: coloured shapes in an ImageFolder layout."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (235, 215, 40)}
CLASSES = ["red circle", "green circle", "blue square", "yellow square", "red triangle", "blue triangle"]


def draw_shape(classname: str, seed: int, size: int = 72) -> Image.Image:
    """An RGB image of ``classname`` (``"<colour> <circle|square|triangle>"``) on a noisy light background."""
    rng = random.Random(seed)
    colour, shape = classname.split()
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", (size + rng.randint(0, 24), size), background)
    draw = ImageDraw.Draw(image)
    w, h = image.size
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    fill = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLOURS[colour])
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def make_shapes_folder(
    root: Path, classes: Sequence[str] = CLASSES, per_class: int | Sequence[int] = 4, corrupt: bool = False
) -> Path:
    """``root/<colour_shape>/<i>.png`` (mixed .png / .JPG), ``per_class`` images per class (one count or one each).

    With ``corrupt``, the first class also holds one unreadable ``broken.jpg``.
    """
    counts = [per_class] * len(classes) if isinstance(per_class, int) else list(per_class)
    for c, (name, count) in enumerate(zip(classes, counts)):
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = draw_shape(name, seed=100 * c + i)
            image.save(folder / (f"{i}.png" if i % 2 == 0 else f"{i}.JPG"), quality=95)
    if corrupt:
        (root / classes[0].replace(" ", "_") / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "notes.txt").write_text("not a class folder")  # a stray file at the top level is ignored
    return root
