"""The one atomic file writer: every file dalip writes for keeps (checkpoints, results, configs, caches).

A temporary file in the target's folder is written, flushed and fsynced, then
renamed over the target and the folder fsynced: a kill or power loss at any moment
leaves the old file or the new one under the real name, never a torn file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_text", "folder_entries", "fsync_dir", "preview", "write_synced"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the renames inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_synced(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on ``path`` opened for binary writing, then flush and fsync it (no rename)."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], None],
    before_replace: Callable[[Path], None] | None = None,
) -> Path:
    """Call ``write(file)`` on a temporary binary file, fsync it and rename it to ``path``.

    The parent folder is created. On any error (or interruption) the temporary file is
    removed and ``path`` keeps its previous content.

    Args:
        path: the file to write.
        write: writes the content to the binary file object it is given.
        before_replace: called with the temporary file's path once it is written and
            synced, just before the rename (a checkpoint checksums it there and moves the
            previous file aside); an error there removes the temporary file and skips the rename.

    Returns:
        ``path`` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, write)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """`atomic_write` of ``text`` encoded as UTF-8."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def folder_entries(folder: str | os.PathLike[str]) -> list[str]:
    """The sorted names in ``folder`` (``[]`` when it does not exist): what an output folder already holds."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def preview(names: Sequence[str], at_most: int = 4) -> str:
    """The first ``at_most`` names, comma-separated, ``, ...`` when there are more (for one-line messages)."""
    return ", ".join(names[:at_most]) + (", ..." if len(names) > at_most else "")
