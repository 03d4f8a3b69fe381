"""Results of `run_few_shot` as CSV, a Markdown table (mean +- std over seeds) and a plot."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from dalip._markdown import markdown_table
from dalip._optional import require
from dalip.adapt.harness import ResultRow
from dalip.io import atomic_write_text

__all__ = ["BASELINES", "few_shot_markdown", "plot_results", "summarise_few_shot", "write_results"]

#: the methods the DAC adapter is compared against in the Markdown verdict lines
BASELINES = ("zero-shot", "linear-probe", "tip-adapter", "tip-adapter-f")

Summary = dict[tuple[str, str, int], tuple[float, float, int]]
"""``{(embedding, method, shots): (mean, std, seeds)}`` of test top-1 in %."""


def summarise_few_shot(rows: Sequence[ResultRow]) -> Summary:
    """Mean and sample standard deviation (0 for one seed) of test top-1 over seeds."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r.embedding, r.method, r.shots)].append(r.top1)
    return {
        key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for key, v in groups.items()
    }


def _ordered(rows: Sequence[ResultRow], field: str) -> list:
    return list(dict.fromkeys(getattr(r, field) for r in rows))


def few_shot_markdown(rows: Sequence[ResultRow], header: Sequence[str] = ()) -> str:
    """One table per embedding (methods x shots, ``mean ± std``, best mean in bold) and DAC-vs-baseline lines."""
    summary = summarise_few_shot(rows)
    embeddings, methods, shots = _ordered(rows, "embedding"), _ordered(rows, "method"), sorted(_ordered(rows, "shots"))
    lines = [*header, ""] if header else []
    for e in embeddings:
        best = {k: max(summary[(e, m, k)][0] for m in methods) for k in shots}
        table = []
        for m in methods:
            cells = []
            for k in shots:
                mean, std, _ = summary[(e, m, k)]
                cell = f"{mean:.1f} ± {std:.1f}"
                cells.append(f"**{cell}**" if mean == best[k] else cell)
            table.append([m, *cells])
        lines += [f"### {e} embedding", "", *markdown_table(["method", *(f"K={k}" for k in shots)], table)]
        baselines = [m for m in methods if m in BASELINES]
        if "dac" in methods and baselines:
            deltas = []
            for k in shots:
                top = max(baselines, key=lambda b: summary[(e, b, k)][0])
                deltas.append(f"K={k}: {summary[(e, 'dac', k)][0] - summary[(e, top, k)][0]:+.1f} vs {top}")
            lines += ["", "dac minus the best baseline (points): " + "; ".join(deltas)]
        lines.append("")
    short = {(r.shots, r.short_classes) for r in rows if r.short_classes}
    if short:
        lines.append("Classes with fewer than K pool images (all of them taken):")
        lines += [f"- K={k}: {s}" for k, s in sorted(short)]
        lines.append("")
    return "\n".join(lines)


def plot_results(rows: Sequence[ResultRow], path: str | Path, title: str = "") -> Path:
    """Test top-1 against shots (log 2 axis, mean ± std bars), one line per method, one panel per embedding."""
    # no pyplot: the caller's backend and figures are untouched
    Figure = require("matplotlib.figure", "train", "the few-shot plot").Figure

    summary = summarise_few_shot(rows)
    embeddings, methods, shots = _ordered(rows, "embedding"), _ordered(rows, "method"), sorted(_ordered(rows, "shots"))
    fig = Figure(figsize=(5 * len(embeddings), 4))
    axes = fig.subplots(1, len(embeddings), sharey=True, squeeze=False)
    for ax, e in zip(axes[0], embeddings):
        for m in methods:
            means, stds = zip(*(summary[(e, m, k)][:2] for k in shots))
            style = "-" if m in (*BASELINES, "dac") else ":"
            ax.errorbar(shots, means, yerr=stds, label=m, marker="o", ms=3, capsize=2, linestyle=style,
                        linewidth=2 if m == "dac" else 1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(f"{e} embedding")
        ax.set_xlabel("shots per class (K)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def write_results(rows: Sequence[ResultRow], output: str | Path, stem: str = "results",
                  header: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``<stem>.csv`` (one line per fit), ``<stem>.md`` and ``<stem>.png`` into ``output``."""
    if not rows:
        raise ValueError("no results to write")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {ext: output / f"{stem}.{ext}" for ext in ("csv", "md", "png")}
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0].as_dict()))
    writer.writeheader()
    writer.writerows(r.as_dict() for r in rows)
    atomic_write_text(paths["csv"], text.getvalue())
    atomic_write_text(paths["md"], few_shot_markdown(rows, header))
    plot_results(rows, paths["png"], title=rows[0].dataset)
    return paths
