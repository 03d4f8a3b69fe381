"""Brownian distance covariance pooling (DeepBDC-style, one head)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dalip.pooling.factory import register_pooler
from dalip.pooling.functional import bdc, bdc_scale
from dalip.pooling.layers import NormKind
from dalip.pooling.second_order import MatrixPool

__all__ = ["BDCPool", "BDCScale"]


class BDCScale(nn.Module):
    """The distance scale: fixed ``1 / (2 M)`` or learnable ``exp(t) / (2 M)``.

    ``M`` is the number of real tokens of each sample, so the statistic does not
    depend on how much padding a batch carries. The learnable temperature ``t``
    starts at 0, i.e. at the reference value (DeepBDC's ``log(1 / (2M))`` init
    with the token count factored out).
    """

    def __init__(self, learnable: bool = False) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(())) if learnable else None

    def forward(self, z: Tensor, mask: Tensor | None) -> Tensor:
        """``z (b, r, m)`` -> scale ``(b, 1, 1)``."""
        scale = bdc_scale(z, mask)
        if self.log_temperature is None:
            return scale
        return scale * self.log_temperature.float().exp()


@register_pooler("bdc")
class BDCPool(MatrixPool):
    """Brownian distance covariance of the channels over the tokens.

    Each channel row ``z_k in R^M`` is an observation; the pooled statistic is the
    upper triangle of the double-centred distance matrix ``A`` (see Concepts > BDC).

    Args:
        dim: channel count C.
        reduced_dim: channels ``r`` after a Linear + norm + ReLU reduction
            (``None``: no reduction).
        norm: norm of the reduction (``"batch"``, ``"layer"``, ``"none"``).
        learn_scale: learnable temperature on the distance scale (else fixed 1/(2M)).
        eps: added inside the square root of the distances.
        triu: upper-triangle output ``r (r + 1) / 2`` (else ``r * r``).

    Shapes: ``tokens (B, N, C)``, ``mask (B, N)`` -> ``(B, r (r + 1) / 2)``.
    """

    def __init__(
        self,
        dim: int,
        reduced_dim: int | None = 64,
        norm: NormKind = "batch",
        learn_scale: bool = False,
        eps: float = 1e-5,
        triu: bool = True,
    ) -> None:
        super().__init__(dim, reduced_dim=reduced_dim, norm=norm, triu=triu)
        if not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.scale, self.eps = BDCScale(learn_scale), eps

    def statistic(self, z: Tensor, mask: Tensor | None) -> Tensor:
        return bdc(z, scale=self.scale(z, mask), eps=self.eps, mask=mask)
