"""`evaluate`: every zero-shot task and retrieval of several eval sets, for several embeddings."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dalip.data.eval_sets import ZeroShotSet, zero_shot_eval_set
from dalip.data.transforms import PilTransform
from dalip.errors import NonFiniteEmbeddingError
from dalip.eval.encode import (
    Images,
    ImageTransform,
    check_embeddings,
    default_embeddings,
    encode_images,
    encode_texts,
)
from dalip.eval.fusion import check_fusion_weights, fused_similarities, fusion_key
from dalip.eval.retrieval import Captions, flatten_captions, recall_from_similarity
from dalip.eval.zero_shot import check_labels, per_class_recall, prompts, topk_accuracy, zero_shot_classifiers

__all__ = ["EvalSetLike", "Results", "TaskLike", "evaluate", "evaluate_set"]

Results = dict[str, dict[str, dict[str, Any]]]
"""``{embedding: {subset: {metric: value}}}``; values are numbers, except ``<task>/per_class_recall``."""


class TaskLike(Protocol):
    """A zero-shot classification task over an eval set's images.

    A task with a true ``per_class_recall`` attribute also reports
    ``<task>/per_class_recall``: ``{classname: recall}`` over the classes with samples.
    """

    labels: Sequence[int] | Tensor  # (N,) indices into classnames
    classnames: Sequence[str]
    templates: Sequence[str]  # each with "{}" for the class name


class EvalSetLike(Protocol):
    """Images with captions (retrieval; may be empty) and zero-shot tasks (may be empty)."""

    images: Images  # uint8 (N, H, W, 3), float (N, 3, H, W), float batches, or StreamedImages (files)
    captions: Captions
    tasks: Mapping[str, TaskLike]


def _task_metrics(
    name: str, task: TaskLike, scores: Tensor, labels: Tensor, top_k: Sequence[int]
) -> dict[str, Any]:
    """Top-k accuracies, balanced accuracy and their chance levels of scores ``(N, C)``."""
    num_samples, num_classes = scores.shape
    accuracy = topk_accuracy(scores, labels, top_k)
    out: dict[str, Any] = {f"{name}/{metric}": value for metric, value in accuracy.items()}
    for metric in accuracy:  # "top5" -> chance 5 / C
        out[f"{name}/chance_{metric}"] = min(int(metric[3:]) / num_classes, 1.0)
    recall = per_class_recall(scores, labels)
    out[f"{name}/balanced_accuracy"] = recall.nanmean().item()
    out[f"{name}/chance_balanced_accuracy"] = 1 / num_classes
    out.update({f"{name}/num_classes": num_classes, f"{name}/num_samples": num_samples})
    if getattr(task, "per_class_recall", False):
        named = zip(task.classnames, recall.tolist())
        out[f"{name}/per_class_recall"] = {c: r for c, r in named if not math.isnan(r)}
    return out


def evaluate_set(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    eval_set: EvalSetLike,
    embeddings: Sequence[str],
    batch_size: int = 64,
    image_transform: ImageTransform | None = None,
    top_k: Sequence[int] = (1, 5),
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = True,
    fusion: Sequence[float] = (),
) -> dict[str, dict[str, float]]:
    """``{embedding: {metric: value}}`` for one eval set; images and captions are encoded once.

    With ``fusion`` weights (a model with second-order heads), also ``{"fusion@<a>": {metric: value}}``
    scored with ``a * s_first + (1 - a) * s_second`` from the same encodings (`dalip.eval.fusion`).

    For `StreamedImages`, the unreadable images are left out: labels and captions
    are those of the images read (``images.kept``), and ``num_skipped`` (also
    ``<task>/num_skipped``) counts the others.
    """
    tasks = dict(getattr(eval_set, "tasks", None) or {})
    for name, task in tasks.items():  # cheap checks before any tower runs
        try:
            prompts(task.classnames, task.templates)
        except ValueError as err:
            raise ValueError(f"task {name!r}: {err}") from err
    encoded = tuple(dict.fromkeys([*embeddings, *(("first", "second") if fusion else ())]))
    views = [*embeddings, *map(fusion_key, fusion)]  # the result entries: embeddings, then fusion weights
    images = encode_images(model, eval_set.images, encoded, batch_size, image_transform, progress)
    num_samples = images[embeddings[0]].shape[0]
    kept = getattr(eval_set.images, "kept", None)  # StreamedImages: the indices of the readable images
    skipped = {"num_skipped": eval_set.images.skipped} if kept is not None else {}
    metrics: dict[str, dict[str, Any]] = {v: {"num_samples": num_samples, **skipped} for v in views}
    for name, task in tasks.items():
        labels = _task_labels(name, task, kept, num_samples)
        classifiers = zero_shot_classifiers(
            model, tokenizer, task.classnames, task.templates, encoded, progress=progress
        )
        for view, scores in fused_similarities(images, classifiers, embeddings, fusion).items():
            metrics[view].update(_task_metrics(name, task, scores, labels, top_k))
            metrics[view].update({f"{name}/{k}": v for k, v in skipped.items()})
    captions = getattr(eval_set, "captions", None)
    if captions is not None and kept is not None and len(captions) > 0:
        captions = [captions[i] for i in kept.tolist()]
    if captions is not None and len(captions) > 0:
        texts, owners = flatten_captions(captions, num_samples)
        text_feats = encode_texts(model, tokenizer, texts, encoded, progress=progress)
        for view, recall in _retrieval_metrics(images, text_feats, owners, embeddings, fusion, ks).items():
            metrics[view].update(recall)
    return metrics


def _task_labels(name: str, task: TaskLike, kept: Tensor | None, num_samples: int) -> Tensor:
    """The task's labels ``(N,)`` of the images encoded (``kept``: the readable ones), checked."""
    try:
        labels = torch.as_tensor(task.labels)
        return check_labels(labels if kept is None else labels[kept], num_samples, len(task.classnames))
    except ValueError as err:
        raise ValueError(f"task {name!r}: {err}") from err


def _retrieval_metrics(
    images: Mapping[str, Tensor],
    text_feats: Mapping[str, Tensor],
    owners: Tensor,
    embeddings: Sequence[str],
    fusion: Sequence[float],
    ks: Sequence[int],
) -> dict[str, dict[str, float]]:
    """``{view: {recall@k ..., chance_R@k ...}}`` of image embeddings ``(N, D)`` and caption embeddings ``(M, D)``.

    ``owners`` ``(M,)``: the image each caption describes.
    """
    num_samples = next(iter(images.values())).shape[0]
    chance = {f"chance_R@{k}": min(k / num_samples, 1.0) for k in ks}
    return {
        view: {**recall_from_similarity(similarity, owners, ks), **chance}
        for view, similarity in fused_similarities(images, text_feats, embeddings, fusion).items()
    }


def evaluate(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    eval_sets: Mapping[str, EvalSetLike],
    embeddings: Sequence[str] | None = None,
    batch_size: int = 64,
    image_transform: ImageTransform | None = None,
    top_k: Sequence[int] = (1, 5),
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = True,
    fusion: Sequence[float] | None = None,
) -> Results:
    """Zero-shot accuracy of every task and retrieval recall of every eval set.

    Args:
        model: a `DALIPModel` or a plain open_clip model.
        tokenizer: ``list[str] -> LongTensor (B, L)``.
        eval_sets: ``{subset: eval set}`` (see `EvalSetLike`).
        embeddings: defaults to ``("first", "second", "combined")`` when
            ``model.has_second_order``, else ``("first",)``.
        image_transform: image batch -> float ``(B, 3, H, W)``; by default float
            images pass unchanged and uint8 ones go through `default_image_transform`.
        top_k: zero-shot accuracies (a k above the number of classes is skipped).
        ks: retrieval recall@k.
        fusion: weights ``a`` in [0, 1] (a model with second-order heads): every
            metric also at the similarity ``a * s_first + (1 - a) * s_second``, from the
            same single pass of the towers, under ``"fusion@<a>"`` keys
            (`dalip.eval.fusion`: ``fusion_curves``, ``plot_fusion``).

    Returns:
        ``{embedding: {subset: {metric: value}}}``, metrics ``"num_samples"``,
        ``"<task>/top1"``, ``"<task>/top5"``, ``"<task>/chance_top1"``,
        ``"<task>/balanced_accuracy"`` (mean per-class recall),
        ``"<task>/chance_balanced_accuracy"``, ``"<task>/num_classes"``,
        ``"<task>/num_samples"``, ``"image_to_text_R@1"``,
        ``"text_to_image_R@1"``, ``"chance_R@1"`` (text -> image; and image -> text
        with one caption per image) ...
    """
    if not eval_sets:
        raise ValueError("no eval sets given")
    embeddings = check_embeddings(model, embeddings or default_embeddings(model))
    fusion = check_fusion_weights(fusion) if fusion is not None else ()
    if fusion and not getattr(model, "has_second_order", False):
        raise ValueError("fusion curves need a model with second-order heads (this one has first order only)")
    results: Results = {v: {} for v in [*embeddings, *map(fusion_key, fusion)]}
    for subset, eval_set in eval_sets.items():
        try:
            per_embedding = evaluate_set(
                model, tokenizer, eval_set, embeddings, batch_size, image_transform, top_k, ks, progress, fusion
            )
        except ValueError as err:  # keep the non-finite kind (the CLI reports it as a user error)
            kind = NonFiniteEmbeddingError if isinstance(err, NonFiniteEmbeddingError) else ValueError
            raise kind(f"eval set {subset!r}: {err}") from err
        for e, metrics in per_embedding.items():
            results[e][subset] = metrics
    return results


def evaluate_zero_shot(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    sources: str | os.PathLike[str] | ZeroShotSet | Sequence[str | os.PathLike[str] | ZeroShotSet],
    classnames: str | os.PathLike[str] | None = None,
    templates: str | os.PathLike[str] | Sequence[str] = "openai_imagenet",
    embeddings: Sequence[str] | None = None,
    transform: PilTransform | None = None,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> Results:
    """Zero-shot metrics of ``model`` on one or several labelled image folders / CSVs.

    Paths become sets with `zero_shot_eval_set` (``classnames``, ``templates``,
    ``transform`` apply to each; the model's own transform by default); ready
    `ZeroShotSet`s are used as they are.

    Returns:
        ``{embedding: {set name: metrics}}`` (as `evaluate`) with ``zero_shot/top1``,
        ``zero_shot/top5`` (5+ classes), ``zero_shot/balanced_accuracy``,
        ``zero_shot/per_class_recall`` (``{classname: recall}``), ``zero_shot/num_classes``,
        ``zero_shot/num_samples`` (images read), ``zero_shot/num_skipped`` (unreadable).
        A class whose images are all unreadable is left out of all of them, as if absent (a
        warning names it; see `dalip.data.eval_sets.readable_classes`).

    Raises:
        ValueError: a source with fewer than two classes with a readable image, or other bad input.
    """
    if isinstance(sources, (str, os.PathLike, ZeroShotSet)):
        sources = [sources]
    sets: dict[str, ZeroShotSet] = {}
    for source in sources:
        if not isinstance(source, ZeroShotSet):
            source = zero_shot_eval_set(
                source, classnames, templates, transform, batch_size=batch_size, workers=workers
            )
        if source.name in sets:
            raise ValueError(f"two eval sets named {source.name!r} ({sets[source.name].source}, {source.source}); "
                             "pass ZeroShotSets with distinct names")
        sets[source.name] = source
    return evaluate(model, tokenizer, sets, embeddings, batch_size=batch_size, progress=progress)
