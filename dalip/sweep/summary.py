"""A sweep's outputs: tables and plot from the run folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dalip.eval.fusion import only_fusion, without_fusion
from dalip.sweep.aggregate import collect, summarise_runs, write_tables
from dalip.sweep.plots import plot_fusion_sweep, plot_sweep
from dalip.sweep.runner import Run

__all__ = ["summarise_sweep"]


def summarise_sweep(runs: Sequence[Run], output: Path, title: str, notes: Sequence[str] = ()) -> list[Path]:
    """Write ``results.md``, ``results.csv`` and ``results.png`` of the finished runs; returns their paths.

    Runs evaluated with ``eval.fusion`` also get ``fusion.md``, ``fusion.csv`` and
    ``fusion.png`` (the curves, mean +- std over seeds, one line per variant).
    """
    results = collect((r.variant, r.seed, r.folder) for r in runs)
    if not results:
        raise FileNotFoundError(f"no finished run (eval.json) under {output}")
    missing = [r.name for r in runs if (r.variant, r.seed) not in results]
    if missing:
        notes = [*notes, f"missing runs (not in the table): {', '.join(missing)}"]
    rows = summarise_runs({key: without_fusion(r) for key, r in results.items()})
    md, csv = write_tables(rows, output, "results", title, notes)
    written = [md, csv, plot_sweep(rows, output / "results.png")]
    curves = {key: fusion for key, r in results.items() if (fusion := only_fusion(r))}
    if curves:  # eval.fusion: the curves get their own tables and plot
        fusion_rows = summarise_runs(curves)
        fusion_notes = [*notes, ("rows fusion@a: every metric at the similarity a * s_first + (1 - a) * s_second "
                                 "(fusion@1 = first order, fusion@0 = second order, fusion@alpha = combined)")]
        written += [*write_tables(fusion_rows, output, "fusion", f"{title}: fusion curves", fusion_notes),
                    plot_fusion_sweep(fusion_rows, output / "fusion.png")]
    return written
