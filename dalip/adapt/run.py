"""One call for a whole benchmark: cache features once, fit every method, write the report."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import torch

from dalip.adapt.base import FewShotMethod
from dalip.adapt.features import FewShotImages, cache_features
from dalip.adapt.frozen import FrozenModel
from dalip.adapt.harness import ResultRow, default_methods, run_few_shot
from dalip.adapt.report import write_results

__all__ = ["benchmark"]


def benchmark(
    frozen: FrozenModel,
    task: FewShotImages,
    output: str | Path,
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    seeds: Sequence[int] = (0, 1, 2),
    embeddings: Sequence[str] = ("first", "second", "combined"),
    methods: Mapping[str, FewShotMethod] | None = None,
    views: int = 4,
    stem: str = "results",
    command: str = "",
    progress: bool = True,
) -> list[ResultRow]:
    """Encode ``task`` once per embedding, run `run_few_shot`, write ``<stem>.{csv,md,png}`` in ``output``."""
    bad = [k for k in shots if not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"shots must be integers >= 1, got {bad}")
    start = time.perf_counter()
    features = cache_features(frozen.model, frozen.tokenizer, task, embeddings, views, frozen.image_size,
                              frozen.mean, frozen.std, progress=progress)
    encoded = time.perf_counter() - start
    rows = run_few_shot(features, methods or default_methods(), shots, seeds, task.name, progress)
    first = next(iter(features.values()))
    header = [
        f"## Few-shot adaptation of a frozen model: {task.name}",
        "",
        f"- command: `{command}`" if command else "- command: (library call)",
        f"- model: {frozen.source}",
        (f"- task: {len(task.classnames)} classes ({', '.join(task.classnames)}); support pool "
         f"{first.pool.shape[1]} images x {first.num_views} views (1 plain + {views} augmented), "
         f"test {len(task.test_labels)} images; chance {100 / len(task.classnames):.1f} %"),
        (f"- seeds {list(seeds)} (support sets shared by all methods and embeddings); "
         "test top-1 in %, mean ± sample std over seeds"),
        (f"- machine: {os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} torch threads; "
         f"date {date.today()}; encoding {encoded:.0f} s, fitting {time.perf_counter() - start - encoded:.0f} s"),
    ]
    write_results(rows, output, stem, header)
    return rows
