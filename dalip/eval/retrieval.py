"""Image <-> text retrieval recall@k with one or several captions per image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dalip.eval.encode import Images, ImageTransform, encode_images, encode_texts

__all__ = ["flatten_captions", "recall_at_k", "recall_from_similarity", "retrieval_recall"]

Captions = Sequence[str] | Sequence[Sequence[str]]
"""One caption per image (``list[str]``) or several (``list[list[str]]``)."""


def flatten_captions(captions: Captions, num_images: int) -> tuple[list[str], Tensor]:
    """``(texts (M,), text_to_image (M,))``: all captions and the index of the image each describes."""
    if not captions:
        raise ValueError("retrieval needs at least one caption")
    if len(captions) != num_images:
        raise ValueError(f"{len(captions)} caption entries for {num_images} images")
    per_image = [[c] if isinstance(c, str) else list(c) for c in captions]
    empty = [i for i, caps in enumerate(per_image) if not caps]
    if empty:
        raise ValueError(f"images without captions: {empty[:10]}")
    texts = [c for caps in per_image for c in caps]
    owners = torch.repeat_interleave(torch.arange(len(per_image)), torch.tensor([len(c) for c in per_image]))
    return texts, owners


def _ranks(similarity: Tensor, positive: Tensor) -> Tensor:
    """0-based rank ``(Q,)`` of each query's best positive among its negatives; ties count against it.

    ``similarity`` and ``positive`` are ``(Q, G)``; pessimistic ties keep a collapsed
    model (all scores equal) at chance instead of a perfect score. A NaN score is
    never a hit: a NaN positive ranks below every candidate and a NaN negative above
    the positive (NaN compares false, which would otherwise give rank 0).
    """
    nan = similarity.isnan()
    best = similarity.masked_fill(~positive | nan, float("-inf")).amax(dim=1, keepdim=True)
    return (((similarity >= best) | nan) & ~positive).sum(dim=1)


def recall_at_k(
    image_features: Tensor, text_features: Tensor, text_to_image: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k both ways from unit embeddings ``(N, D)`` / ``(M, D)`` and caption owners ``(M,)``.

    ``image_to_text_R@k``: share of images with any of their captions in the top k
    captions; ``text_to_image_R@k``: share of captions with their image in the top k images.
    """
    num_images = image_features.shape[0]
    if text_to_image.shape != (text_features.shape[0],):
        raise ValueError(
            f"text_to_image must have shape ({text_features.shape[0]},), got {tuple(text_to_image.shape)}"
        )
    if num_images == 0:
        raise ValueError("empty evaluation set")
    if text_to_image.min() < 0 or text_to_image.max() >= num_images:
        raise ValueError(f"captions refer to images outside [0, {num_images})")
    return recall_from_similarity(image_features @ text_features.T, text_to_image, ks)


def recall_from_similarity(
    similarity: Tensor, text_to_image: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k both ways (see `recall_at_k`) from an image-text similarity ``(N, M)``."""
    num_images = similarity.shape[0]
    positive = text_to_image[None, :] == torch.arange(num_images, device=text_to_image.device)[:, None]
    ranks = {"image_to_text": _ranks(similarity, positive), "text_to_image": _ranks(similarity.T, positive.T)}
    return {f"{way}_R@{k}": (r < k).double().mean().item() for way, r in ranks.items() for k in ks}


def retrieval_recall(
    model: nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    images: Images,
    captions: Captions,
    embedding: str = "combined",
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
    image_transform: ImageTransform | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Recall@k of image -> text and text -> image retrieval.

    Args:
        images: float ``(N, 3, H, W)``, uint8 ``(N, H, W, 3)`` or an iterable of batches.
        captions: N captions (ground truth: the diagonal) or N lists of captions.

    Returns:
        ``{"image_to_text_R@1": ..., "image_to_text_R@5": ..., "text_to_image_R@1": ...}``.
    """
    image_feats = encode_images(model, images, (embedding,), batch_size, image_transform, progress)[embedding]
    texts, owners = flatten_captions(captions, image_feats.shape[0])
    text_feats = encode_texts(model, tokenizer, texts, (embedding,), progress=progress)[embedding]
    return recall_at_k(image_feats, text_feats, owners, ks)
