"""The run summary plot: loss curve and zero-shot accuracies."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_run"]


def plot_run(metrics: list[dict], results: dict, path: str | Path, task: str = "subcategory/top1") -> Path:
    """Two panels: training loss per step; ``task`` accuracy per embedding and subset (with chance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [m["step"] for m in metrics]
    left.plot(steps, [m["loss"] for m in metrics], label="total")
    for key in sorted({k for m in metrics for k in m if k.startswith("loss/")}):
        left.plot(steps, [m.get(key) for m in metrics], label=key[5:], alpha=0.7)
    left.set(xlabel="step", ylabel="loss", title="training loss")
    left.legend(fontsize=8)
    embeddings = list(results)
    subsets = sorted({s for e in embeddings for s in results[e]})
    width = 0.8 / max(1, len(embeddings))
    for i, emb in enumerate(embeddings):
        values = [results[emb].get(s, {}).get(task, 0.0) for s in subsets]
        right.bar([j + i * width for j in range(len(subsets))], values, width, label=emb)
    for j, s in enumerate(subsets):
        chance = next((results[e][s].get(task.replace("top1", "chance_top1")) for e in embeddings if s in results[e]), None)
        if chance:
            right.hlines(chance, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="dotted")
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(subsets))], subsets)
    right.set(ylabel=task, ylim=(0, 1), title=f"zero-shot {task} (dotted: chance)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
