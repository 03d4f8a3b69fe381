"""Results as a markdown table (chance level alongside) and as JSON, written atomically."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dalip._markdown import markdown_table
from dalip.eval.fusion import without_fusion
from dalip.io import atomic_write_text

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
    rows = [(e, subset, m) for e, subsets in without_fusion(results).items() for subset, m in subsets.items()]
    columns = list(dict.fromkeys(k for *_, m in rows for k in m if _MAIN.search(k)))
    cells = [[e, subset, m.get("num_samples", "-"), *(_cell(m, c) for c in columns)] for e, subset, m in rows]
    lines = markdown_table(["embedding", "subset", "n", *columns], cells, text_columns=2)
    return "\n".join(lines + ["", "values in %, chance level in parentheses"])


def _cell(metrics: Mapping[str, Any], column: str) -> str:
    if column not in metrics:
        return "-"
    chance = metrics.get(_chance_key(column))
    value = f"{100 * metrics[column]:.1f}"
    return value if chance is None else f"{value} ({100 * chance:.1f})"


def save_results(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes ``results`` as indented JSON to ``path`` with `dalip.io.atomic_write_text`."""
    return atomic_write_text(path, json.dumps(results, indent=2) + "\n")
