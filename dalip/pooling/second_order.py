"""Shared skeleton of the single-head matrix poolers (``cov``, ``bdc``).

tokens ``(b, n, c)`` -> optional reduction to ``r`` channels -> statistic
matrix ``(b, r, r)`` -> upper triangle ``(b, r (r + 1) / 2)``.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor

from dalip.pooling.base import Pooler
from dalip.pooling.functional import triu_flatten, triu_index
from dalip.pooling.layers import NormKind, TokenReduction, check_statistic_size

__all__ = ["MatrixPool"]


class MatrixPool(Pooler):
    """Base for poolers that vectorise an ``(r, r)`` statistic of the tokens.

    Args:
        dim: channel count C of the tokens.
        reduced_dim: ``r``; a token-wise Linear + norm + ReLU reduces ``C -> r``
            first. ``None`` keeps all C channels (output grows as C^2).
        norm: norm of the reduction, ``"batch"`` (mask-aware), ``"layer"`` or ``"none"``.
        triu: output the upper triangle ``r (r + 1) / 2`` (else all ``r * r``).
    """

    def __init__(self, dim: int, reduced_dim: int | None = 64, norm: NormKind = "batch", triu: bool = True) -> None:
        super().__init__(dim)
        r = dim if reduced_dim is None else reduced_dim
        if isinstance(r, int):
            check_statistic_size(r, 1, type(self).__name__ + (" (reduced_dim=None: all C channels)" if reduced_dim is None else ""))
        self.reduce = None if reduced_dim is None else TokenReduction(dim, reduced_dim, norm=norm)
        self.reduced_dim, self.triu = r, triu
        self.out_dim = r * (r + 1) // 2 if triu else r * r
        self.register_buffer("triu_index", triu_index(r), persistent=False)

    def statistic(self, z: Tensor, mask: Tensor | None) -> Tensor:
        """``z (b, r, n)`` -> ``(b, r, r)``; implemented by subclasses."""
        raise NotImplementedError

    def pool(self, tokens: Tensor, mask: Tensor | None, guide: Tensor | None) -> Tensor:
        x = tokens.unsqueeze(2)  # b n 1 c: one group
        if self.reduce is not None:
            x = self.reduce(x, mask)
        z = rearrange(x, "b n 1 r -> b r n")
        a = self.statistic(z, mask)  # b r r
        return triu_flatten(a, self.triu_index) if self.triu else a.flatten(1)
