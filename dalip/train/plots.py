"""The run summary plot: loss curve and zero-shot accuracies."""

from __future__ import annotations

from pathlib import Path

from dalip._optional import require
from dalip.eval.fusion import without_fusion

__all__ = ["plot_run"]


def plot_run(metrics: list[dict], results: dict, path: str | Path) -> Path:
    """Two panels: training loss per step; zero-shot top-1 per task, subset and embedding (with chance)."""
    # no pyplot: the caller's backend and figures are untouched
    Figure = require("matplotlib.figure", "train", "the run plot").Figure

    fig = Figure(figsize=(12, 4.2))
    left, right = fig.subplots(1, 2)
    steps = [m["step"] for m in metrics]
    left.plot(steps, [m["loss"] for m in metrics], label="total")
    for key in sorted({k for m in metrics for k in m if k.startswith("loss/")}):
        left.plot(steps, [m.get(key) for m in metrics], label=key[5:], alpha=0.7)
    left.set(xlabel="step", ylabel="loss", title="training loss")
    left.legend(fontsize=8)

    results = without_fusion(results)
    embeddings = list(results)
    groups = [  # (subset, task) pairs that have a top-1 accuracy
        (subset, key[: -len("/top1")])
        for subset, values in results[embeddings[0]].items()
        for key in values
        if key.endswith("/top1")
    ] if embeddings else []
    width = 0.8 / max(1, len(embeddings))
    for i, emb in enumerate(embeddings):
        values = [results[emb].get(s, {}).get(f"{t}/top1", 0.0) for s, t in groups]
        right.bar([j + i * width for j in range(len(groups))], values, width, label=emb)
    for j, (s, t) in enumerate(groups):
        chance = results[embeddings[0]][s].get(f"{t}/chance_top1")
        if chance is not None:
            right.hlines(chance, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="dotted")
    labels = [f"{s}\n{t}" for s, t in groups]
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], labels, fontsize=8)
    right.set(ylabel="top-1 accuracy", ylim=(0, 1), title="zero-shot top-1 on held-out data (dotted: chance)")
    if embeddings:
        right.legend(fontsize=8)
    else:  # a run without evaluation sets
        right.text(0.5, 0.5, "no evaluation", ha="center", va="center", transform=right.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
