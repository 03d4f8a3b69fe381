"""Sweep and interpolation plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dalip._optional import require
from dalip.eval.fusion import FUSION_PREFIX
from dalip.sweep.aggregate import Row

__all__ = ["headline_embedding", "plot_fusion_sweep", "plot_sweep", "plot_tradeoff"]

_PREFERENCE = ("combined", "first", "second")


def _figure(figsize: tuple[float, float]):
    """A standalone figure (no pyplot state, the caller's backend untouched)."""
    return require("matplotlib.figure", "train", "the sweep plots").Figure(figsize=figsize)


def headline_embedding(embeddings: Sequence[str]) -> str:
    """The embedding a variant is judged by: ``combined`` when it has one, else ``first``."""
    return next((e for e in _PREFERENCE if e in embeddings), embeddings[0])


def plot_sweep(rows: Sequence[Row], path: Path, metric_suffix: str = "/top1") -> Path:
    """Grouped bars, one panel per subset: zero-shot top-1 of each task per variant, error bars = std.

    Each variant is shown by its headline embedding (`headline_embedding`); dotted
    lines mark chance.
    """
    subsets = list(dict.fromkeys(r.subset for r in rows))
    variants = list(dict.fromkeys(r.variant for r in rows))
    fig = _figure((max(6.0, 1.1 * len(variants) + 2) * len(subsets), 4.4))
    axes = fig.subplots(1, len(subsets), squeeze=False)
    for ax, subset in zip(axes[0], subsets):
        chosen = {}
        for v in variants:
            candidates = [r for r in rows if r.variant == v and r.subset == subset]
            if candidates:
                best = headline_embedding([r.embedding for r in candidates])
                chosen[v] = next(r for r in candidates if r.embedding == best)
        tasks = list(dict.fromkeys(m for r in chosen.values() for m in r.mean if m.endswith(metric_suffix)))
        width = 0.8 / max(1, len(tasks))
        for i, task in enumerate(tasks):
            xs = [j + i * width for j in range(len(variants))]
            means = [100 * chosen[v].mean.get(task, 0.0) if v in chosen else 0.0 for v in variants]
            stds = [100 * chosen[v].std.get(task, 0.0) if v in chosen else 0.0 for v in variants]
            bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=task.removesuffix(metric_suffix))
            chance = next((r.chance[task] for r in chosen.values() if task in r.chance), None)
            if chance is not None:
                ax.axhline(100 * chance, color=bars.patches[0].get_facecolor(), linestyle="dotted", linewidth=1)
        labels = [f"{v}\n({chosen[v].embedding})" if v in chosen else v for v in variants]
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(variants))], labels, fontsize=8, rotation=20)
        ax.set(ylabel=f"zero-shot {metric_suffix.strip('/')} (%)", title=subset)
        ax.legend(fontsize=8)
    fig.suptitle("mean +- std over seeds (dotted: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_fusion_sweep(rows: Sequence[Row], path: Path) -> Path:
    """Fusion curves of a sweep: a panel per (subset, task), a line per variant, mean +- std band over seeds.

    ``rows`` are the `summarise_runs` rows of the ``fusion@<a>`` entries; each panel draws
    every zero-shot top-1 and image -> text R@1 against the weight ``a``.
    """
    panels = list(dict.fromkeys(
        (r.subset, m) for r in rows for m in r.mean if m.endswith("/top1") or m == "image_to_text_R@1"
    ))
    variants = list(dict.fromkeys(r.variant for r in rows))
    cols = min(3, len(panels)) or 1
    fig = _figure((4.2 * cols, 3.4 * -(-len(panels) // cols)))
    axes = fig.subplots(-(-len(panels) // cols), cols, squeeze=False).flatten()
    for ax, (subset, metric) in zip(axes, panels):
        for variant in variants:
            points = sorted(
                (float(r.embedding[len(FUSION_PREFIX):]), 100 * r.mean[metric], 100 * r.std.get(metric, 0.0))
                for r in rows if r.variant == variant and r.subset == subset and metric in r.mean
            )
            if not points:
                continue
            a, mean, std = (list(x) for x in zip(*points))
            ax.plot(a, mean, marker="o", markersize=3, label=variant)
            ax.fill_between(a, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
        ax.set(title=f"{subset}: {metric}", xlabel="a (1: first order only, 0: second only)", ylabel="%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("inference-time fusion a * s_first + (1 - a) * s_second: mean +- std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_tradeoff(points: Sequence[tuple[float, float, float]], path: Path, xlabel: str, ylabel: str,
                  title: str = "weight interpolation") -> Path:
    """Domain vs general accuracy, one point per ratio ``(ratio, x, y)``, joined in ratio order."""
    fig = _figure((5.5, 4.5))
    ax = fig.subplots()
    points = sorted(points)
    ax.plot([100 * x for _, x, _ in points], [100 * y for *_, y in points], "o-")
    for ratio, x, y in points:
        ax.annotate(f"t={ratio:g}", (100 * x, 100 * y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel=f"{xlabel} (%)", ylabel=f"{ylabel} (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
