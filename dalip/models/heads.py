"""A pooler on a tower's tokens, projected to the shared embedding width."""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from dalip.models.tokens import TowerOutput
from dalip.pooling import POOLERS, Pooler, create_pooler

__all__ = ["PooledHead"]


class PooledHead(nn.Module):
    """``pooler(tokens, mask, guide)`` then a linear map to ``embed_dim`` when sizes differ.

    Poolers that take an ``out_dim`` (``mbdc``) are built with ``out_dim=embed_dim``
    so their own output projection serves and no extra layer is added.

    Args:
        name: registered pooler name.
        dim: token width C of the tower.
        embed_dim: the shared embedding width E.
        options: pooler keyword arguments.

    Shapes: tokens ``(B, N, C)`` -> ``(B, E)``.
    """

    def __init__(self, name: str, dim: int, embed_dim: int, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        if "dim" in options and options["dim"] != dim:
            raise ValueError(f"pooler {name!r} was given dim={options['dim']} but the tower's tokens have width {dim}")
        options.pop("dim", None)
        if "out_dim" in inspect.signature(POOLERS.get(name).constructor).parameters:
            options.setdefault("out_dim", embed_dim)
        self.name = name
        self.pooler: Pooler = create_pooler(name, dim=dim, **options)
        out = self.pooler.out_dim
        self.proj = nn.Identity() if out == embed_dim else nn.Linear(out, embed_dim, bias=False)

    def forward(self, tower: TowerOutput) -> Tensor:
        """The pooled, projected embedding ``(B, E)`` of a tower's tokens ``(B, N, C)`` (with their mask and guide)."""
        return self.proj(self.pooler(tower.tokens, mask=tower.mask, guide=tower.guide))
