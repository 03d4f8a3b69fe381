"""Zero-shot classification: class embeddings from prompt templates, top-k accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_recall

from dalip.eval.encode import Images, ImageTransform, encode_images, encode_texts
from dalip.models.dalip_model import fuse_orders

__all__ = [
    "balanced_accuracy",
    "class_embeddings",
    "per_class_recall",
    "prompts",
    "topk_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All ``C * T`` prompts, class-major: ``templates[t]`` with ``"{}"`` replaced by ``classnames[c]``."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("zero-shot classification needs at least one template")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates must contain '{{}}' where the class name goes: {bad}")
    return [t.replace("{}", c) for c in classnames for t in templates]


def class_embeddings(prompt_embeddings: Tensor, num_classes: int) -> Tensor:
    """Class-major prompt embeddings ``(C * T, D)`` -> ``(C, D)``: mean over templates, renormalised
    (the usual CLIP prompt ensembling)."""
    per_class = prompt_embeddings.reshape(num_classes, -1, prompt_embeddings.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def zero_shot_classifiers(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    embeddings: Sequence[str],
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Tensor]:
    """``{embedding: (C, D)}`` class embeddings from one pass of the text tower.

    The ``"combined"`` class embedding is built from the first- and second-order
    class embeddings (each ensembled and renormalised on its own) like the combined
    image embedding, ``[sqrt(alpha) * first, sqrt(1 - alpha) * second]``, so that its
    score is exactly ``alpha * first-score + (1 - alpha) * second-score``: the fusion
    curve of `dalip.eval.fusion` at ``a = alpha``.
    """
    wanted = tuple(embeddings)
    fuse = "combined" in wanted and getattr(model, "has_second_order", False)
    needed = tuple(dict.fromkeys([e for e in wanted if e != "combined"] + (["first", "second"] if fuse else [])))
    needed = needed or wanted  # a model without second order: "combined" is its first order
    texts = encode_texts(model, tokenizer, prompts(classnames, templates), needed, batch_size, progress)
    classes = {e: class_embeddings(t, len(classnames)) for e, t in texts.items()}
    if fuse:
        classes["combined"] = fuse_orders(classes["first"], classes["second"], float(model.alpha))
    return {e: classes[e] for e in wanted}


def zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    embedding: str = "combined",
    batch_size: int = 256,
    progress: bool = True,
) -> Tensor:
    """Class embeddings ``(C, D)``: unit text embeddings averaged over templates, renormalised.

    Args:
        model: a `DALIPModel` or a plain open_clip model (``embedding="first"`` only).
        tokenizer: ``list[str] -> LongTensor (B, L)``.
        classnames: the C class names.
        templates: T prompts, each with ``"{}"`` for the class name.
        embedding: ``"first"``, ``"second"`` or ``"combined"`` (see `class_embeddings`).
    """
    return zero_shot_classifiers(model, tokenizer, classnames, templates, (embedding,), batch_size, progress)[
        embedding
    ]


def check_labels(labels: Sequence[int] | Tensor, num_samples: int, num_classes: int) -> Tensor:
    """``labels`` as a LongTensor ``(N,)``; errors on a wrong length, a label outside ``[0, C)`` or ``C < 2``."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape (N,), got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) != num_samples:
        raise ValueError(f"{len(labels)} labels for {num_samples} samples")
    if num_samples == 0:
        raise ValueError("empty evaluation set")
    if num_classes < 2:  # torchmetrics' own message would be a traceback about `num_classes`
        raise ValueError(f"zero-shot classification needs at least two classes, got {num_classes}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.long()


def topk_accuracy(
    scores: Tensor, labels: Sequence[int] | Tensor, top_k: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Micro-averaged top-k accuracy ``{"top1": ..., "top5": ...}`` of scores ``(N, C)``.

    A k with ``k > C`` is left out (top-5 of 3 classes means nothing).
    """
    num_samples, num_classes = scores.shape
    labels = check_labels(labels, num_samples, num_classes).to(scores.device)
    accuracy = {}
    for k in [k for k in top_k if k <= num_classes]:
        share = multiclass_accuracy(scores, labels, num_classes, average="micro", top_k=k).item()
        accuracy[f"top{k}"] = round(share * num_samples) / num_samples  # hits / N, without float32 noise
    return accuracy


def per_class_recall(scores: Tensor, labels: Sequence[int] | Tensor) -> Tensor:
    """Recall of the top-1 predictions per class, float64 ``(C,)``; NaN for a class without samples.

    ``recall[c]`` = (samples of class c predicted c) / (samples of class c), from
    torchmetrics' ``multiclass_recall(average=None)`` of scores ``(N, C)``.
    """
    num_samples, num_classes = scores.shape
    labels = check_labels(labels, num_samples, num_classes).to(scores.device)
    recall = multiclass_recall(scores, labels, num_classes, average=None).double().cpu()
    support = torch.bincount(labels.cpu(), minlength=num_classes).double()
    exact = (recall * support).round() / support  # hits / support, without float32 noise
    return exact.where(support > 0, torch.full_like(exact, float("nan")))


def balanced_accuracy(scores: Tensor, labels: Sequence[int] | Tensor) -> float:
    """Mean per-class recall over the classes present in ``labels`` (sklearn's ``balanced_accuracy_score``)."""
    return per_class_recall(scores, labels).nanmean().item()


def zero_shot_accuracy(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    images: Images,
    labels: Sequence[int] | Tensor,
    classnames: Sequence[str],
    templates: Sequence[str],
    embedding: str = "combined",
    top_k: Sequence[int] = (1, 5),
    batch_size: int = 64,
    image_transform: ImageTransform | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Zero-shot top-k accuracy of ``images`` against prompted ``classnames``.

    Args:
        images: float ``(N, 3, H, W)``, uint8 ``(N, H, W, 3)`` or an iterable of batches.
        labels: ``(N,)`` class indices into ``classnames``.
        image_transform: applied to every image batch (see `encode_images`).

    Returns:
        ``{"top1": float, "top5": float}`` (``top5`` only with at least 5 classes).
    """
    prompts(classnames, templates)  # fail on bad templates before running the image tower
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, embedding, progress=progress)
    feats = encode_images(model, images, (embedding,), batch_size, image_transform, progress)[embedding]
    return topk_accuracy(feats @ classifier.T, labels, top_k)
