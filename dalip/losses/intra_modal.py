"""Intra-modal supervised contrastive loss (SupCon, Khosla et al. 2020) within one tower."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dalip.losses.base import FEATURE_KEYS, AlignmentLoss, Order, Outputs, required_output
from dalip.losses.factory import register_loss

__all__ = ["SupConLoss", "supervised_contrastive"]

_MODALITIES = {"image": 0, "text": 1}  # position in FEATURE_KEYS' (image, text) pairs


def supervised_contrastive(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """SupCon ``L_out``: mean over anchors i of ``-1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(z_i . z_a / T)_p``.

    Args:
        features: (b, d) embeddings (normalise them first for the usual cosine form).
        labels: (b,) class labels; P(i) = the other samples with label y_i.
        temperature: T.

    Anchors without a positive are left out of the mean; a batch without any
    positive pair gives 0 (still attached to the graph).
    """
    b = features.shape[0]
    self_mask = torch.eye(b, dtype=torch.bool, device=features.device)  # (b, b)
    logits = (features @ features.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)  # (b, b), -inf on the diagonal
    positives = (labels[:, None] == labels[None, :]) & ~self_mask  # (b, b)
    n_pos = positives.sum(dim=1)  # (b,)
    # masked_fill (not a product) so the diagonal's -inf never meets a 0 weight
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1) / n_pos.clamp_min(1)  # (b,)
    has_pos = (n_pos > 0).to(per_anchor.dtype)
    return (per_anchor * has_pos).sum() / has_pos.sum().clamp_min(1)


@register_loss("intra_modal")
class SupConLoss(AlignmentLoss):
    """Supervised contrastive loss among the embeddings of one modality, given ``labels=``.

    Args:
        modality: ``"image"`` reads ``image_features`` (``image_second`` with
            ``order="second"``), ``"text"`` the text ones.
        order: the order of the statistic, ``"first"`` or ``"second"``.
        temperature: softmax temperature (> 0).
        normalize: L2-normalise the features first (for inputs that are not,
            such as an adapter's output); model outputs already are.
    """

    part_name = "intra_modal"

    def __init__(
        self,
        modality: Literal["image", "text"] = "image",
        order: Order = "first",
        temperature: float = 0.07,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if modality not in _MODALITIES:
            raise ValueError(f"intra_modal: modality must be one of {list(_MODALITIES)}, got {modality!r}")
        if order not in FEATURE_KEYS:
            raise ValueError(f"intra_modal: order must be one of {list(FEATURE_KEYS)}, got {order!r}")
        if not temperature > 0:
            raise ValueError(f"intra_modal: temperature must be > 0, got {temperature}")
        self.key = FEATURE_KEYS[order][_MODALITIES[modality]]
        self.temperature, self.normalize = temperature, normalize

    def value(self, outputs: Outputs) -> Tensor:
        z = required_output(outputs, self.key, "intra_modal")
        labels = required_output(outputs, "labels", "intra_modal", " (pass labels=(B,) class labels)")
        if not isinstance(z, Tensor) or z.ndim != 2:
            raise ValueError(f"intra_modal: {self.key} must have shape (B, D), got {getattr(z, 'shape', z)}")
        if not isinstance(labels, Tensor) or labels.shape != z.shape[:1]:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"intra_modal: labels must have shape ({z.shape[0]},) to match {self.key}, got {shape}")
        if z.shape[0] < 2:
            raise ValueError(f"intra_modal: needs at least 2 samples, got a batch of {z.shape[0]}")
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return supervised_contrastive(z, labels, self.temperature)

    def extra_repr(self) -> str:
        return f"key={self.key!r}, temperature={self.temperature}, normalize={self.normalize}"
