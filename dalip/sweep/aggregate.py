"""Sweep results as tables: mean +- std over seeds of every metric, per variant x embedding x subset."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dalip._markdown import markdown_table
from dalip.io import atomic_write_text

__all__ = ["Row", "collect", "summarise_runs", "sweep_markdown", "write_csv", "write_tables"]

_MAIN = re.compile(r"(^|/)top\d+$|^(image_to_text|text_to_image)_R@\d+$")  # accuracies and recalls (chance_* / counts excluded)


@dataclass
class Row:
    """One table row: a variant's embedding on one subset, summarised over seeds.

    Attributes:
        mean, std: metric -> mean and sample standard deviation (0 for one seed).
        chance: metric -> chance level (when the evaluation reports one).
    """

    variant: str
    embedding: str
    subset: str
    seeds: list[int]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)


def _chance_key(metric: str) -> str:
    if "_R@" in metric:
        return "chance_R@" + metric.rsplit("@", 1)[1]
    head, _, tail = metric.rpartition("/")
    return f"{head}/chance_{tail}" if head else f"chance_{tail}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def collect(runs: Iterable[tuple[str, int, Path]]) -> dict[tuple[str, int], dict]:
    """``{(variant, seed): eval.json contents}`` of the runs whose ``eval.json`` exists."""
    found = {}
    for variant, seed, folder in runs:
        path = Path(folder) / "eval.json"
        if path.is_file():
            found[(variant, seed)] = json.loads(path.read_text())
    return found


def summarise_runs(results: dict[tuple[str, int], dict]) -> list[Row]:
    """Rows in first-seen order of variant, embedding, subset."""
    grouped: dict[tuple[str, str, str], list[tuple[int, dict]]] = {}
    for (variant, seed), result in results.items():
        for embedding, subsets in result.items():
            for subset, metrics in subsets.items():
                grouped.setdefault((variant, embedding, subset), []).append((seed, metrics))
    rows = []
    for (variant, embedding, subset), per_seed in grouped.items():
        row = Row(variant, embedding, subset, [s for s, _ in per_seed])
        names = dict.fromkeys(k for _, m in per_seed for k in m if _MAIN.search(k))
        for name in names:
            values = [m[name] for _, m in per_seed if name in m]
            row.mean[name], row.std[name] = _mean_std(values)
            chance = per_seed[0][1].get(_chance_key(name))
            if chance is not None:
                row.chance[name] = chance
        rows.append(row)
    return rows


def _metrics(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r.mean))


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    """One line per row: ``variant, embedding, subset, n_seeds, <metric>_mean, <metric>_std, <metric>_chance ...``."""
    metrics = _metrics(rows)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["variant", "embedding", "subset", "n_seeds"]
                    + [f"{m}_{part}" for m in metrics for part in ("mean", "std", "chance")])
    for r in rows:
        cells = [(r.mean.get(m, ""), r.std.get(m, ""), r.chance.get(m, "")) for m in metrics]
        writer.writerow([r.variant, r.embedding, r.subset, len(r.seeds)] + [c for cell in cells for c in cell])
    return atomic_write_text(path, text.getvalue())


def _cell(row: Row, metric: str) -> str:
    if metric not in row.mean:
        return "-"
    mean = f"{100 * row.mean[metric]:.1f}"
    return mean if len(row.seeds) < 2 else f"{mean} +- {100 * row.std[metric]:.1f}"


def sweep_markdown(rows: Sequence[Row], title: str = "Sweep results", notes: Sequence[str] = ()) -> str:
    """A table per subset (rows: variant x embedding; cells: mean +- std over seeds, in %)."""
    lines = [f"# {title}", ""] + [f"{n}  " for n in notes] + ([""] if notes else [])
    lines.append("Values in %: mean +- sample standard deviation over seeds (the mean alone for one seed); "
                 "chance level in the header.")
    for subset in dict.fromkeys(r.subset for r in rows):
        subset_rows = [r for r in rows if r.subset == subset]
        metrics = _metrics(subset_rows)
        chance = {m: next((r.chance[m] for r in subset_rows if m in r.chance), None) for m in metrics}
        header = [m if chance[m] is None else f"{m} ({100 * chance[m]:.1f})" for m in metrics]
        cells = [[r.variant, r.embedding, len(r.seeds), *(_cell(r, m) for m in metrics)] for r in subset_rows]
        lines += ["", f"## {subset}", "", *markdown_table(["variant", "embedding", "seeds", *header], cells, 2)]
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[Row], output: Path, stem: str = "results", title: str = "Sweep results",
                 notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """``output/<stem>.md`` and ``output/<stem>.csv``."""
    output.mkdir(parents=True, exist_ok=True)
    md = output / f"{stem}.md"
    atomic_write_text(md, sweep_markdown(rows, title, notes))
    return md, write_csv(rows, output / f"{stem}.csv")
