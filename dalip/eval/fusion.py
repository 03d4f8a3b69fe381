"""Inference-time fusion curves: every metric at ``a * s_first + (1 - a) * s_second`` for several ``a``.

A model trained with first-order weight ``alpha`` need not be scored at ``alpha``:
`evaluate(..., fusion=[0, 0.1, ..., 1])` adds, from the same single pass of the
towers, one pseudo-embedding ``"fusion@<a>"`` per weight to the results, scored with
the similarity ``a * s_first + (1 - a) * s_second``. ``fusion@1`` equals the
``"first"`` numbers, ``fusion@0`` the ``"second"`` ones and ``fusion@<alpha>`` the
``"combined"`` ones (a zero-shot class embedding is ensembled per order, see
`zero_shot_classifiers`).

```python
results = evaluate(model, tokenizer, sets, fusion=[0, 0.25, 0.5, 0.75, 1])
curves = fusion_curves(results)          # {a: {subset: {metric: value}}}
plot_fusion(results, "fusion.png", alpha=model.alpha)
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from dalip._markdown import markdown_table
from dalip._optional import require

__all__ = [
    "FUSION_PREFIX",
    "best_fusion_weights",
    "check_fusion_weights",
    "format_fusion",
    "fused_similarities",
    "fusion_curves",
    "fusion_key",
    "only_fusion",
    "plot_fusion",
    "without_fusion",
]

FUSION_PREFIX = "fusion@"


def fusion_key(weight: float) -> str:
    """The results key of one fusion weight: ``0.25 -> "fusion@0.25"``."""
    return f"{FUSION_PREFIX}{weight:g}"


def check_fusion_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Weights as floats in [0, 1], de-duplicated in order; a clear error otherwise."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(f"fusion weights must be a list of numbers in [0, 1], got {weights!r}")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and 0 <= w <= 1):
            raise ValueError(f"fusion weights must be numbers in [0, 1], got {w!r} in {list(weights)}")
        out.append(float(w))
    if not out:
        raise ValueError("fusion: no weights given (e.g. [0, 0.25, 0.5, 0.75, 1])")
    return tuple(dict.fromkeys(out))


def fused_similarities(
    queries: Mapping[str, Tensor], keys: Mapping[str, Tensor], embeddings: Sequence[str], fusion: Sequence[float]
) -> dict[str, Tensor]:
    """``{embedding or fusion key: (N, M) similarity}`` of unit query and key embeddings.

    Each embedding scores ``queries[e] @ keys[e].T``; each fusion weight ``a`` scores
    ``a * s_first + (1 - a) * s_second`` (``queries``/``keys`` then need "first" and "second").
    """
    out = {e: queries[e] @ keys[e].T for e in embeddings}
    if fusion:
        first, second = (queries[o] @ keys[o].T for o in ("first", "second"))
        out.update({fusion_key(a): a * first + (1 - a) * second for a in fusion})
    return out


def fusion_curves(results: Mapping[str, Any]) -> dict[float, dict[str, dict[str, Any]]]:
    """``{a: {subset: {metric: value}}}`` of the ``fusion@<a>`` entries of `evaluate` results, by ``a``."""
    curves = {float(k[len(FUSION_PREFIX):]): v for k, v in results.items() if k.startswith(FUSION_PREFIX)}
    return dict(sorted(curves.items()))


def without_fusion(results: Mapping[str, Any]) -> dict[str, Any]:
    """The results of the real embeddings only (first, second, combined)."""
    return {k: v for k, v in results.items() if not k.startswith(FUSION_PREFIX)}


def only_fusion(results: Mapping[str, Any]) -> dict[str, Any]:
    """The ``fusion@<a>`` entries of the results (empty without a fusion curve)."""
    return {k: v for k, v in results.items() if k.startswith(FUSION_PREFIX)}


def _curve_metrics(curves: Mapping[float, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """(subset, metric) pairs to draw: every zero-shot top-1 and both retrieval R@1."""
    first = next(iter(curves.values()), {})
    return [
        (subset, metric)
        for subset, metrics in first.items()
        for metric in metrics
        if metric.endswith("/top1") or metric in ("image_to_text_R@1", "text_to_image_R@1")
    ]


def best_fusion_weights(results: Mapping[str, Any], subset: str, metric: str) -> list[float]:
    """The weights ``a`` at which the curve of ``subset`` / ``metric`` peaks (several on a tie), ascending.

    Read it off validation data: a weight picked on the numbers you report flatters them.

    Raises:
        ValueError: no fusion curve in the results, or no such subset / metric in it.
    """
    return _peaks(_curves_of(results), subset, metric)


def _curves_of(results: Mapping[str, Any]) -> dict[float, dict[str, dict[str, Any]]]:
    """`fusion_curves`, or a ValueError when the results hold none."""
    curves = fusion_curves(results)
    if not curves:
        raise ValueError("no fusion curve in these results (evaluate with fusion=[...])")
    return curves


def _peaks(curves: Mapping[float, Mapping[str, Mapping[str, Any]]], subset: str, metric: str) -> list[float]:
    values = {a: metrics.get(subset, {}).get(metric) for a, metrics in curves.items()}
    if any(v is None for v in values.values()):
        known = sorted({f"{s} {m}" for metrics in curves.values() for s, ms in metrics.items() for m in ms
                        if "chance" not in m and "num_" not in m})  # metrics, not their references or counts
        raise ValueError(f"no {metric!r} of subset {subset!r} in the fusion curve; known: {', '.join(known)}")
    top = max(v for v in values.values() if not math.isnan(v))
    return [a for a, v in values.items() if v == top]


def _spans(chosen: Sequence[float], grid: Sequence[float]) -> str:
    """``0.7-0.8, 1``: the chosen weights as runs of neighbours on the grid."""
    runs: list[list[float]] = []
    for i, a in enumerate(grid):
        if a in chosen:
            if runs and grid[i - 1] == runs[-1][-1]:
                runs[-1].append(a)
            else:
                runs.append([a])
    return ", ".join(f"{r[0]:g}" if len(r) == 1 else f"{r[0]:g}-{r[-1]:g}" for r in runs)


def _weight_label(a: float, alpha: float | None, combined: float | None) -> str:
    """``"0.5 (train alpha)"``: a weight, marked when it is the training alpha or the ``combined`` one's."""
    weights = (("train alpha", alpha), ("combined", combined))
    marks = [name for name, w in weights if w is not None and math.isclose(a, w)]
    return f"{a:g}" + (f" ({', '.join(marks)})" if marks else "")


def format_fusion(results: Mapping[str, Any], alpha: float | None = None, combined: float | None = None) -> str:
    """A markdown table of the fusion curve: a row per weight ``a``, a column per task (in %), then the best ``a``.

    Args:
        results: `evaluate` results with ``fusion@<a>`` entries.
        alpha: the weight the model was trained with, marked ``(train alpha)``.
        combined: the weight of the ``combined`` embedding when it is not ``alpha`` (e.g. a
            ``model.alpha`` chosen at evaluation), marked ``(combined)``.
    """
    curves = fusion_curves(results)
    if not curves:
        return ""
    if combined is not None and alpha is not None and math.isclose(combined, alpha):
        combined = None  # the training alpha is the combined embedding's: one mark says it
    columns = _curve_metrics(curves)
    rows = [
        [_weight_label(a, alpha, combined),
         *(f"{100 * metrics.get(s, {}).get(m, float('nan')):.1f}" for s, m in columns)]
        for a, metrics in curves.items()
    ]
    rows.append(["best a", *(_spans(_peaks(curves, s, m), list(curves)) for s, m in columns)])
    header = ["a", *(f"{s} {m}" for s, m in columns)]
    lines = markdown_table(header, rows, text_columns=1)
    title = "fusion curve: a * s_first + (1 - a) * s_second (a = 1: first order only)"
    if combined is not None:
        title += f"; the combined embedding is scored at a = {combined:g}" + (
            f", not the training alpha {alpha:g}" if alpha is not None else "")
    return "\n".join([title, "", *lines])


def plot_fusion(
    results: Mapping[str, Any], path: str | os.PathLike[str], alpha: float | None = None, title: str = "",
    combined: float | None = None,
) -> Path:
    """Accuracy vs fusion weight ``a``: one line per task (zero-shot top-1, retrieval R@1), the training
    ``alpha`` marked, and the ``combined`` embedding's weight when it differs (see `format_fusion`)."""
    Figure = require("matplotlib.figure", "train", "the fusion plot").Figure  # no pyplot: caller's state untouched
    curves = _curves_of(results)
    weights = list(curves)
    pairs = _curve_metrics(curves)
    metrics = list(dict.fromkeys(m for _, m in pairs))
    subsets = list(dict.fromkeys(s for s, _ in pairs))
    styles = ("-", "--", ":", "-.")  # a line style per subset, a colour per metric: a task reads off both
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for subset, metric in pairs:
        values = [100 * curves[a].get(subset, {}).get(metric, float("nan")) for a in weights]
        ax.plot(weights, values, marker="o", markersize=3, color=f"C{metrics.index(metric) % 10}",
                linestyle=styles[subsets.index(subset) % len(styles)], label=f"{subset} {metric}")
    if alpha is not None:
        ax.axvline(alpha, color="k", linestyle=":", linewidth=1.5, label=f"training alpha = {alpha:.3g}")
    if combined is not None and not (alpha is not None and math.isclose(combined, alpha)):
        ax.axvline(combined, color="k", linestyle="--", linewidth=1,
                   label=f"combined embedding a = {combined:.3g}")
    ax.set(xlabel="fusion weight a  (score = a * first + (1 - a) * second)", ylabel="accuracy / recall (%)",
           xlim=(-0.02, 1.02), title=title or "inference-time fusion of first- and second-order similarity")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside: no curve hidden
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)
