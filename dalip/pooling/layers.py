"""Small token-wise layers used by the second-order poolers.

Token groups are laid out as ``(b, g, n, d)``: batch, group (head), token, channel.
Single-head poolers use ``g = 1``. Masks are ``(b, n)`` booleans, True = real token.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNormLayer", "MaskedBatchNorm", "TokenReduction", "NormKind"]

NormKind = Literal["batch", "layer", "none"]
NORM_KINDS = ("batch", "layer", "none")


class MaskedBatchNorm(nn.Module):
    """BatchNorm over every real token of the batch; padded tokens do not count.

    Training statistics are averaged over ``(b, n)`` (and ``g`` when shared across
    groups) using only real tokens, so padding cannot change the result; running
    statistics are updated without host synchronisation.

    Args:
        num_features: channel count ``d``.
        groups: 1 to share the statistics and affine over all groups, else ``g``
            separate sets.
        eps: variance floor.
        momentum: running-statistics update rate.

    Shapes:
        ``x: (b, g, n, d)``, ``mask: (b, n) | None`` -> ``(b, g, n, d)``.
    """

    def __init__(self, num_features: int, groups: int = 1, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        shape = (num_features,) if groups == 1 else (groups, 1, num_features)
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        xf = x.float()
        if self.training:
            dims = (0, 1, 2) if self.weight.ndim == 1 else (0, 2)  # shared: pool groups too
            w = xf.new_ones(()) if mask is None else mask[:, None, :, None].to(xf.dtype)  # b 1 n 1
            if mask is not None:
                xf = xf.masked_fill(w == 0, 0)  # padded values (even inf/nan) must not leak
            count = w.expand(*x.shape[:-1], 1).sum(dims, keepdim=True)
            mean = (xf * w).sum(dims, keepdim=True) / count
            var = ((xf - mean).square() * w).sum(dims, keepdim=True) / count
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.view_as(self.running_mean), self.momentum)
                self.running_var.lerp_(unbiased.view_as(self.running_var), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        y = (xf - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y.to(x.dtype)


class GroupNormLayer(nn.Module):
    """LayerNorm over the channels of each token, affine shared or per group.

    Shapes: ``x: (b, g, n, d)`` -> ``(b, g, n, d)``.
    """

    def __init__(self, num_features: int, groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        shape = (num_features,) if groups == 1 else (groups, 1, num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class TokenReduction(nn.Module):
    """Channel reduction ``d -> r`` on every token: linear, norm, ReLU, dropout.

    The reference's 1x1 convolution + BatchNorm (images) or Linear + LayerNorm
    (text), applied to every head with one shared layer (``shared=True``) or with
    one layer per head, batched either way (no Python loop over heads).

    Args:
        in_dim: channels per group ``d``.
        out_dim: reduced channels ``r``.
        groups: number of groups (heads) ``g``.
        shared: one reduction for all groups (the reference) or one per group.
        norm: ``"batch"`` (mask-aware BatchNorm), ``"layer"`` or ``"none"``.
        dropout: dropout probability after the ReLU (reference: 0.5).

    Shapes:
        ``x: (b, g, n, d)``, ``mask: (b, n) | None`` -> ``(b, g, n, r)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        groups: int = 1,
        shared: bool = True,
        norm: NormKind = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}")
        if out_dim < 1:
            raise ValueError(f"reduced dimension must be >= 1, got {out_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        norm_groups = 1 if shared else groups
        if shared:
            self.linear: nn.Linear | None = nn.Linear(in_dim, out_dim, bias=False)
            self.weight: nn.Parameter | None = None
        else:
            self.linear = None
            bound = 1 / math.sqrt(in_dim)  # nn.Linear's default init
            self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        norm_cls = {"batch": MaskedBatchNorm, "layer": GroupNormLayer, "none": None}[norm]
        self.norm = norm_cls(out_dim, norm_groups) if norm_cls else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.linear is not None:
            x = self.linear(x)
        else:
            x = torch.einsum("bgnd,gdr->bgnr", x, self.weight.to(x.dtype))
        if self.norm is not None:
            x = self.norm(x, mask)
        return self.dropout(torch.relu(x))
