"""The matrix-multiply floor of the MBDC head: its dense layers and nothing else.

Any implementation of ``mbdc_paper`` has to pay for these products (forward and
backward); everything else (guide weighting, BatchNorm, ReLU, dropout, BDC, upper
triangle) is left out by design -- it is not a dense layer, although every
implementation must pay for it too, so no implementation can reach the floor.
The floor runs, with the same shapes as the real head:

* the in-projection ``Linear(C, C, bias=False)`` on the ``N`` tokens and on the guide
  (two calls, as ``dalip`` does; no concatenation copy);
* the shared reduction ``Linear(C/h, r, bias=False)`` on all ``N`` tokens of all ``h`` heads;
* ``LayerNorm(S) -> Linear(S, S) -> Linear(S, C, bias=False)`` on a ``(B, S)`` input,
  ``S = h r (r + 1) / 2``.

The three parts are not connected (the statistic in between is what is left out),
so the ``(B, S)`` input is a separate leaf; :meth:`FloorMBDC.forward` returns one
``(B, C)`` output whose sum back-propagates into all three parts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FloorMBDC"]


class FloorMBDC(nn.Module):
    """Dense layers of ``mbdc_paper`` alone (see the module docstring).

    Args:
        dim: token channels ``C``.
        heads: number of heads ``h``.
        reduced_dim: ``r``.

    Shapes: ``tokens (B, N, C)``, ``guide (B, C)``, ``stats (B, S)`` -> ``(B, C)``.
    """

    def __init__(self, dim: int = 768, heads: int = 4, reduced_dim: int = 46) -> None:
        super().__init__()
        self.dim, self.heads, self.reduced_dim = dim, heads, reduced_dim
        self.stat_dim = heads * reduced_dim * (reduced_dim + 1) // 2
        self.in_proj = nn.Linear(dim, dim, bias=False)
        self.reduce = nn.Linear(dim // heads, reduced_dim, bias=False)
        self.head = nn.Sequential(
            nn.LayerNorm(self.stat_dim),
            nn.Linear(self.stat_dim, self.stat_dim),
            nn.Linear(self.stat_dim, dim, bias=False),
        )

    def forward(self, tokens: Tensor, guide: Tensor, stats: Tensor) -> Tensor:
        b, n, c = tokens.shape
        x = self.in_proj(tokens)  # b, n, c
        g = self.in_proj(guide)  # b, c (the same products as one call on 1 + n tokens, without the concat copy)
        # the N tokens of all h heads through the shared reduction: (b * n * h, c / h) rows, a view
        z = self.reduce(x.view(b * n * self.heads, c // self.heads))
        y = self.head(stats)
        # tie the parts into one output so that out.sum().backward() reaches all of them;
        # the extra reductions are ~1e6 adds, negligible next to the products
        return y + (z.sum() + g.sum()) * 0.0

    def make_stats(self, tokens: Tensor) -> Tensor:
        """A ``(B, S)`` stand-in for the statistic (a leaf that requires grad, as the real
        statistic needs its gradient), on the tokens' device and dtype."""
        return torch.randn(
            tokens.shape[0], self.stat_dim, device=tokens.device, dtype=tokens.dtype, requires_grad=True
        )
