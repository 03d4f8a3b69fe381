"""Robust samples: image decoding that never raises, and a collate that drops bad samples.

A dataset returns ``None`` for an unreadable or missing sample; `collate`
drops those and counts them in `Batch.skipped`, so one bad file never ends a
run and the training loop can sum and report the count.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = [
    "Batch", "CaptionVariants", "Sample", "collate", "decode_image", "first_bad_samples", "report_bad_sample",
]

logger = logging.getLogger(__name__)
_MAX_LOGGED = 5  # per process: the first few bad samples are named, the rest only counted
_logged = 0
_first_bad: list[str] = []
_lock = threading.Lock()

#: one training sample: a `(3, H, W)` float image and its caption
Sample = tuple[torch.Tensor, str]


@runtime_checkable
class CaptionVariants(Protocol):
    """A map-style dataset that draws each access's caption from a known, finite set per index.

    Implemented by the datasets that caption from templates (e.g. labelled images with
    prompt templates); the frozen-tower cache encodes every variant up front.
    """

    def caption_variants(self, item: int) -> list[str]:
        """Every caption ``dataset[item]`` can come with (its image is the same each time)."""
        ...


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: `(B, 3, H, W)` float.
        texts: `B` captions.
        skipped: unreadable samples dropped while this batch was filled.
        tokens: `(B, L)` token ids of `texts` (tokenized in the data workers), or None.
    """

    images: torch.Tensor
    texts: list[str]
    skipped: int = 0
    tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""
        tokens = None if self.tokens is None else self.tokens.pin_memory()
        return Batch(self.images.pin_memory(), self.texts, self.skipped, tokens)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        tokens = None if self.tokens is None else self.tokens.to(device, non_blocking=non_blocking)
        return Batch(self.images.to(device, non_blocking=non_blocking), self.texts, self.skipped, tokens)


def collate(samples: Sequence[Sample | None]) -> Batch:
    """Stack the good samples, count the ``None`` ones.

    An all-bad batch gives `images` of shape `(0,)` and empty `texts`.
    """
    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        return Batch(torch.empty(0), [], skipped)
    return Batch(torch.stack([s[0] for s in good]), [s[1] for s in good], skipped)


def report_bad_sample(where: str, reason: object) -> None:
    """Log the first few bad samples of this process (rate-limited) with logging.warning."""
    global _logged
    with _lock:
        _logged += 1
        count = _logged
        if count <= _MAX_LOGGED:
            _first_bad.append(where)
    if count <= _MAX_LOGGED:
        more = "; later bad samples are only counted (Batch.skipped)" if count == _MAX_LOGGED else ""
        logger.warning("skipping bad sample %s: %s%s", where, reason, more)


def first_bad_samples() -> list[str]:
    """The first few bad samples reported in this process (data-loader workers keep their own)."""
    with _lock:
        return list(_first_bad)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale (modes ``I;16*``, and ``I`` holding 16-bit values) scaled to 8-bit ``L``: 65535 -> 255."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def decode_image(source: str | Path | bytes, where: str | None = None) -> Image.Image | None:
    """An RGB image, upright (EXIF orientation applied) with transparency composited on white, or None with a
    logged reason when unreadable."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            opened.load()  # decode now: truncated files fail here, not later in a transform
            image = ImageOps.exif_transpose(opened)  # phone photos store "rotate 90" in EXIF, not in the pixels
            if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                canvas.alpha_composite(rgba)
                return canvas.convert("RGB")
            if image.mode.startswith("I"):  # convert("RGB") would clip 16-bit values at 255 (white)
                return _to_8bit(image).convert("RGB")
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        report_bad_sample(where or (str(source) if not isinstance(source, bytes) else "<bytes>"), f"{type(err).__name__}: {err}")
        return None
