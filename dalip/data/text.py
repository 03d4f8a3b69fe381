"""Text files a user gives (caption CSVs, labelled CSVs, class names, templates): errors that name the line."""

from __future__ import annotations

from pathlib import Path

__all__ = ["utf8_error"]


def utf8_error(path: Path, err: UnicodeDecodeError, what: str) -> ValueError:
    """A ValueError naming the file and the line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        start = err.start
    except UnicodeDecodeError as first:
        start = first.start
    line = data[:start].count(b"\n") + 1
    return ValueError(f"{what} {path}, line {line}: not UTF-8 text (byte {data[start:start + 1]!r} at offset "
                      f"{start}); save the file as UTF-8")
