"""Results as a markdown table (chance level alongside) and as JSON, written atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["format_results", "save_results"]

# accuracy / recall columns; chance_*, counts and per-class dicts (e.g. "<task>/per_class_recall") are not
_MAIN = re.compile(r"(^|/)(top\d+|balanced_accuracy)$|^(image_to_text|text_to_image)_R@\d+$")


def _chance_key(metric: str) -> str:
    """``"concepts/top1"`` -> ``"concepts/chance_top1"``, ``"image_to_text_R@5"`` -> ``"chance_R@5"``."""
    if "_R@" in metric:
        return "chance_R@" + metric.rsplit("@", 1)[1]
    head, _, tail = metric.rpartition("/")
    return f"{head}/chance_{tail}" if head else f"chance_{tail}"


def format_results(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A markdown table: a row per (embedding, subset), a column per accuracy / recall metric.

    Columns are top-k and balanced accuracies and retrieval recalls; counts and
    per-class recall dicts stay in the JSON only.

    Cells are percentages with the chance level in parentheses, e.g. ``51.2 (2.5)``;
    ``-`` where a subset lacks the metric.
    """
    rows = [(e, subset, m) for e, subsets in results.items() for subset, m in subsets.items()]
    columns = list(dict.fromkeys(k for *_, m in rows for k in m if _MAIN.search(k)))
    lines = [
        "| embedding | subset | n | " + " | ".join(columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for e, subset, m in rows:
        cells = [_cell(m, c) for c in columns]
        lines.append(f"| {e} | {subset} | {m.get('num_samples', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", "values in %, chance level in parentheses"])


def _cell(metrics: Mapping[str, Any], column: str) -> str:
    if column not in metrics:
        return "-"
    chance = metrics.get(_chance_key(column))
    value = f"{100 * metrics[column]:.1f}"
    return value if chance is None else f"{value} ({100 * chance:.1f})"


def save_results(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes ``results`` as indented JSON to ``path`` atomically (temporary file, then `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
