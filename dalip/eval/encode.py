"""Shared encoding: batching, uint8 -> float images, one tower pass for several embeddings.

Every encoder here returns ``{embedding: (N, D) unit-norm float tensor}`` so the
zero-shot and retrieval code can reuse one pass of the towers for all tasks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dalip.data.streamed import StreamedImages
from dalip.data.transforms import (
    FALLBACK_MEAN,
    FALLBACK_STD,
    image_transform,
    model_preprocess,
    model_transform,
)
from dalip.errors import NonFiniteEmbeddingError

__all__ = [
    "EMBEDDINGS",
    "ImageTransform",
    "Images",
    "default_embeddings",
    "default_image_transform",
    "encode_images",
    "encode_texts",
    "evaluating",
    "model_device",
    "to_float_images",
]

EMBEDDINGS = ("first", "second", "combined")
ImageTransform = Callable[[np.ndarray | Tensor], Tensor]
"""Maps a batch of images (e.g. uint8 ``(B, H, W, 3)``) to a float tensor ``(B, 3, H', W')``."""
Images = Tensor | np.ndarray | Iterable[Tensor | np.ndarray]
"""A float tensor ``(N, 3, H, W)``, a uint8 array ``(N, H, W, 3)``, or an iterable of such batches."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad()`` inside; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def supports_embedding(model: nn.Module) -> bool:
    """Whether ``model.encode_image`` takes ``embedding=`` (a `DALIPModel`), not a plain open_clip model."""
    try:
        return "embedding" in inspect.signature(model.encode_image).parameters
    except (TypeError, ValueError):
        return False


def default_embeddings(model: nn.Module) -> tuple[str, ...]:
    """``("first", "second", "combined")`` for a model with second-order heads, else ``("first",)``."""
    return EMBEDDINGS if getattr(model, "has_second_order", False) else ("first",)


def check_embeddings(model: nn.Module, embeddings: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated embedding names (a plain open_clip model has only ``"first"``)."""
    embeddings = tuple(dict.fromkeys(embeddings))
    if not embeddings:
        raise ValueError("no embeddings requested")
    unknown = [e for e in embeddings if e not in EMBEDDINGS]
    if unknown:
        raise ValueError(f"unknown embedding(s) {unknown}; choose from {EMBEDDINGS}")
    if not supports_embedding(model) and embeddings != ("first",):
        raise ValueError(f"a plain open_clip model has only the 'first' embedding, asked for {embeddings}")
    return embeddings


# ----------------------------------------------------------------------- images
def to_float_images(
    images: np.ndarray | Tensor,
    image_size: int | tuple[int, int] | None = None,
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
) -> Tensor:
    """uint8 RGB ``(N, H, W, 3)`` -> normalised float ``(N, 3, S, S)``.

    The evaluation path of `dalip.data.image_transform` on a batch (the same
    antialiased bicubic resize as the training data, when ``image_size`` is given
    and differs), then ``(x / 255 - mean) / std`` (scalars or per-channel triples;
    the default 0.5 is `dalip.data.image_transform`'s: pixels in [-1, 1]).
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, Tensor) else images
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"uint8 images must have shape (N, H, W, 3), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255), got {x.dtype}")
    return image_transform(image_size, train=False, mean=mean, std=std)(x.permute(0, 3, 1, 2))


def default_image_transform(model: nn.Module) -> ImageTransform:
    """`to_float_images` at the model's input size and normalisation (`dalip.data.transforms.model_preprocess`).

    A model without its own mean / std (a bare module; open_clip and dalip models always
    carry them) gets the fallback, `dalip.data.transforms.FALLBACK_MEAN` / ``FALLBACK_STD``;
    one without an input size keeps the images' size.
    """
    config = model_preprocess(model)
    return partial(
        to_float_images,
        image_size=config.get("size"),
        mean=config.get("mean") or FALLBACK_MEAN,
        std=config.get("std") or FALLBACK_STD,
    )


def _prepare_images(
    batch: np.ndarray | Tensor, transform: ImageTransform | None, uint8: ImageTransform
) -> Tensor:
    if transform is not None:
        batch = transform(batch)
    elif isinstance(batch, np.ndarray) or not batch.is_floating_point():
        batch = uint8(batch)
    if not isinstance(batch, Tensor) or batch.ndim != 4 or not batch.is_floating_point():
        what = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise ValueError(f"image batches must be float tensors (B, 3, H, W), got {what}")
    return batch


def image_batches(
    images: Images,
    batch_size: int,
    transform: ImageTransform | None = None,
    uint8_transform: ImageTransform = to_float_images,
) -> tuple[Iterator[Tensor], int | None]:
    """Float batches ``(B, 3, H, W)`` and their count (None when ``images`` is an iterable of batches).

    A tensor / array is cut into ``batch_size`` slices; an iterable is used as its
    batches. ``transform`` is applied to every batch when given; without one, float
    batches pass unchanged and uint8 ones go through ``uint8_transform``.
    """
    prepare = partial(_prepare_images, transform=transform, uint8=uint8_transform)
    if isinstance(images, (Tensor, np.ndarray)):
        starts = range(0, len(images), batch_size)
        return (prepare(images[s : s + batch_size]) for s in starts), len(starts)
    return (prepare(b) for b in images), None


# ---------------------------------------------------------------------- encoding
def _encode_batch(model: nn.Module, tower: str, x: Tensor, embeddings: tuple[str, ...]) -> dict[str, Tensor]:
    """``{embedding: (B, D)}`` unit vectors for one batch.

    A `DALIPModel` (``embed_orders`` / ``combine``) runs its tower once for all
    embeddings; another model with ``embedding=`` gets one call per embedding.
    """
    encode = model.encode_image if tower == "image" else model.encode_text
    if not supports_embedding(model):
        return {"first": F.normalize(encode(x).float(), dim=-1)}
    if callable(getattr(model, "embed_orders", None)) and callable(getattr(model, "combine", None)):
        first, second = model.embed_orders(tower, x)
        return {e: model.combine(first, second, e).float() for e in embeddings}
    return {e: F.normalize(encode(x, embedding=e).float(), dim=-1) for e in embeddings}


def _encode(
    model: nn.Module,
    tower: str,
    batches: Iterable[Tensor],
    embeddings: Sequence[str],
    total: int | None,
    progress: bool,
) -> dict[str, Tensor]:
    embeddings = check_embeddings(model, embeddings)
    device = model_device(model)
    chunks: dict[str, list[Tensor]] = {e: [] for e in embeddings}
    with evaluating(model):
        for x in tqdm(
            batches, total=total, desc=f"encode {tower}s", unit="batch", leave=False, disable=not progress
        ):
            for e, feats in _encode_batch(model, tower, x.to(device), embeddings).items():
                chunks[e].append(feats.cpu())
    if not chunks[embeddings[0]]:
        raise ValueError(f"no {tower}s to encode")
    features = {e: torch.cat(c) for e, c in chunks.items()}
    for e, feats in features.items():  # NaN scores would rank as hits and make every metric a lie
        bad = ~torch.isfinite(feats).all(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten()
            raise NonFiniteEmbeddingError(
                f"the {e!r} {tower} embedding has NaN/Inf in {len(rows)} of {len(feats)} rows "
                f"(first: {rows[:5].tolist()}); the model's weights or inputs are not finite (a diverged run?)"
            )
    return features


def encode_images(
    model: nn.Module,
    images: Images,
    embeddings: Sequence[str] = ("combined",),
    batch_size: int = 64,
    image_transform: ImageTransform | None = None,
    progress: bool = True,
) -> dict[str, Tensor]:
    """``{embedding: (N, D)}`` unit-norm image embeddings (on CPU), one pass over ``images``.

    For a `DALIPModel`, asking for several embeddings still runs the image tower once.

    ``image_transform`` is applied to every batch when given; otherwise float
    batches pass unchanged and uint8 ones go through `default_image_transform`.
    `StreamedImages` are decoded from their files with their own PIL transform, or
    the model's (`model_transform`) when they have none (``image_transform`` and
    ``batch_size`` do not apply to them); afterwards their ``kept`` says which
    images were readable (the rows of the result).
    """
    if isinstance(images, StreamedImages):
        batches = images.batches(images.transform or model_transform(model))
        total: int | None = -(-len(images) // images.batch_size)
    else:
        batches, total = image_batches(images, batch_size, image_transform, default_image_transform(model))
    return _encode(model, "image", batches, embeddings, total, progress)


def encode_texts(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    texts: Sequence[str],
    embeddings: Sequence[str] = ("combined",),
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Tensor]:
    """``{embedding: (M, D)}`` unit-norm text embeddings (on CPU); see `encode_images`."""
    texts = list(texts)
    starts = range(0, len(texts), batch_size)
    batches = (tokenizer(texts[s : s + batch_size]) for s in starts)
    return _encode(model, "text", batches, embeddings, len(starts), progress)
