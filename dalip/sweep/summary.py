"""A sweep's outputs: tables and plot from the run folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .aggregate import collect, summarise, write_tables
from .plots import plot_sweep
from .runner import Run

__all__ = ["summarise_sweep"]


def summarise_sweep(runs: Sequence[Run], output: Path, title: str, notes: Sequence[str] = ()) -> list[Path]:
    """Write ``results.md``, ``results.csv`` and ``results.png`` of the finished runs; returns their paths."""
    results = collect((r.variant, r.seed, r.folder) for r in runs)
    if not results:
        raise FileNotFoundError(f"no finished run (eval.json) under {output}")
    missing = [r.name for r in runs if (r.variant, r.seed) not in results]
    if missing:
        notes = [*notes, f"missing runs (not in the table): {', '.join(missing)}"]
    rows = summarise(results)
    md, csv = write_tables(rows, output, "results", title, notes)
    return [md, csv, plot_sweep(rows, output / "results.png")]
