"""First-order poolers: one representative vector per sample."""

from __future__ import annotations

from torch import Tensor

from dalip.pooling.base import Pooler
from dalip.pooling.factory import register_pooler

__all__ = ["ClsPool", "MeanPool"]


@register_pooler("cls")
class ClsPool(Pooler):
    """The guide token itself ([cls] for images, EOT for text), as CLIP does.

    Args:
        dim: channel count C.

    Shapes: ``guide (B, C)`` -> ``(B, C)``; the other tokens are ignored.
    """

    requires_guide = True

    def pool(self, tokens: Tensor, mask: Tensor | None, guide: Tensor | None) -> Tensor:
        """Return the guide token."""
        assert guide is not None
        return guide


@register_pooler("mean")
class MeanPool(Pooler):
    """Mean of the real tokens (padded tokens excluded).

    Args:
        dim: channel count C.

    Shapes: ``tokens (B, N, C)``, ``mask (B, N)`` -> ``(B, C)``.
    """

    def pool(self, tokens: Tensor, mask: Tensor | None, guide: Tensor | None) -> Tensor:
        """Average the real tokens."""
        if mask is None:
            return tokens.mean(dim=1)
        keep = mask.unsqueeze(-1)  # b n 1
        return tokens.masked_fill(~keep, 0).sum(dim=1) / keep.sum(dim=1).to(tokens.dtype)
