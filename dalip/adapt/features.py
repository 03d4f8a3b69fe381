"""Few-shot tasks in pixels and their cached features.

The frozen model runs once per image (and per augmented view of the support
pool); everything after that -- sampling K shots, training adapters, the
baselines -- works on the cached unit vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dalip.data.transforms import image_transform
from dalip.eval.encode import check_embeddings, encode_images, to_float_images
from dalip.eval.zero_shot import zero_shot_classifiers

__all__ = ["FewShotFeatures", "FewShotImages", "cache_features", "model_input_size"]


@dataclass
class FewShotImages:
    """A few-shot task in pixels: a labelled pool to draw the K shots from, and a test set.

    Attributes:
        name: e.g. ``"twemoji-domain"``.
        pool_images: `(P, H, W, 3)` uint8, the side the shots are drawn from.
        pool_labels: `(P,)` int64 indices into `classnames`.
        test_images: `(N, H, W, 3)` uint8, held out.
        test_labels: `(N,)` int64.
        classnames: the C class phrases.
        templates: prompts with ``"{}"`` for the class phrase (averaged, as in zero-shot).
    """

    name: str
    pool_images: Tensor
    pool_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classnames: list[str]
    templates: list[str]

    def __post_init__(self) -> None:
        self.pool_labels = torch.as_tensor(self.pool_labels, dtype=torch.int64)
        self.test_labels = torch.as_tensor(self.test_labels, dtype=torch.int64)
        for side in ("pool", "test"):
            images, labels = getattr(self, f"{side}_images"), getattr(self, f"{side}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"{self.name}: {side} images must be (N, H, W, 3) uint8, got "
                                 f"{tuple(images.shape)} {images.dtype}")
            if len(images) != len(labels) or not len(labels):
                raise ValueError(f"{self.name}: {len(images)} {side} images and {len(labels)} labels")
            if labels.min() < 0 or labels.max() >= len(self.classnames):
                raise ValueError(f"{self.name}: {side} labels outside [0, {len(self.classnames)})")


@dataclass
class FewShotFeatures:
    """Cached unit-norm features of one embedding of a `FewShotImages` task.

    Attributes:
        embedding: ``"first"``, ``"second"`` or ``"combined"``.
        pool: `(V, P, D)`: view 0 is the plain (evaluation) image, views 1.. augmented copies.
        pool_labels: `(P,)`.
        test: `(N, D)`.
        test_labels: `(N,)`.
        text: `(C, D)` class embeddings (prompt ensemble, renormalised).
        classnames: the C class phrases.
    """

    embedding: str
    pool: Tensor
    pool_labels: Tensor
    test: Tensor
    test_labels: Tensor
    text: Tensor
    classnames: list[str]

    @property
    def num_views(self) -> int:
        return self.pool.shape[0]


def model_input_size(model: nn.Module) -> int:
    """The square input size of the model's image tower (``visual.image_size``)."""
    visual = getattr(getattr(model, "clip", model), "visual", None)
    size = getattr(visual, "image_size", None)
    if size is None:
        raise ValueError("cannot tell the model's input size; pass image_size")
    return int(size if isinstance(size, int) else size[0])


def _augmented(images: Tensor, transform: Callable[[Tensor], Tensor], seed: int) -> Tensor:
    """`(P, H, W, 3)` uint8 -> one augmented float view `(P, 3, S, S)`, reproducible from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image.permute(2, 0, 1)) for image in images])


def cache_features(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    task: FewShotImages,
    embeddings: Sequence[str] = ("first",),
    views: int = 4,
    image_size: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, FewShotFeatures]:
    """Encode a task once with a frozen model: ``{embedding: FewShotFeatures}``.

    Args:
        model: a `DALIPModel` or a plain open_clip model (``embeddings=("first",)``);
            it runs in eval mode under ``no_grad`` and is not changed.
        tokenizer: ``list[str] -> LongTensor (B, L)`` for the class prompts.
        task: the pool, test set, class names and templates.
        embeddings: which embeddings; all come from one pass of the towers.
        views: augmented views of every pool image besides the plain one (0: none);
            the training-time augmentation of `dalip.data.image_transform`.
        image_size: the model's input size (default: `model_input_size`).
        mean: input normalisation mean.
        std: input normalisation std.
        seed: the augmentations.
    """
    embeddings = check_embeddings(model, embeddings)
    if views < 0:
        raise ValueError(f"views must be >= 0, got {views}")
    size = image_size or model_input_size(model)
    augment = image_transform(size, train=True, mean=mean, std=std)

    def encode(side: str, view: int) -> dict[str, Tensor]:
        images = getattr(task, f"{side}_images")
        # view 0: the evaluation transform of `dalip eval`; others: seeded training augmentation
        pixels = to_float_images(images, size, mean, std) if view == 0 else _augmented(images, augment, seed * 1_000 + view)
        return encode_images(model, pixels, embeddings, batch_size, progress=False)

    steps = [("test", 0)] + [("pool", v) for v in range(views + 1)]
    encoded: dict[str, list[dict[str, Tensor]]] = {"test": [], "pool": []}
    for side, view in tqdm(steps, desc=f"encode {task.name}", unit="view", disable=not progress):
        encoded[side].append(encode(side, view))
    text = zero_shot_classifiers(model, tokenizer, task.classnames, task.templates, embeddings, progress=False)
    return {
        e: FewShotFeatures(
            embedding=e,
            pool=torch.stack([v[e] for v in encoded["pool"]]),
            pool_labels=task.pool_labels,
            test=encoded["test"][0][e],
            test_labels=task.test_labels,
            text=text[e],
            classnames=list(task.classnames),
        )
        for e in embeddings
    }
