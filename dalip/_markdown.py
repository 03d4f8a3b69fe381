"""The one Markdown table writer behind every results table (eval, sweep, few-shot, demo)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], text_columns: int = 1) -> list[str]:
    """The lines of a Markdown table; the first ``text_columns`` columns left-aligned, the rest (numbers) right.

    Raises:
        ValueError: a row with another number of cells than ``header``.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * text_columns + "---:|" * (len(header) - text_columns)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return lines
