"""Multi-head Brownian distance covariance (MBDC), the second-order head of DALIP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from dalip.pooling.base import Pooler
from dalip.pooling.bdc import BDCScale
from dalip.pooling.factory import register_pooler
from dalip.pooling.functional import autocast_available, autocast_off, bdc, triu_flatten, triu_index
from dalip.pooling.layers import (
    NormKind,
    TokenReduction,
    check_statistic_size,
    project_tokens,
    project_tokens_transposed,
    project_tokens_weight_grad,
)

__all__ = ["MBDC", "ReduceWithGuideCosine", "guide_softmax", "guide_weighted_projection"]


def _autocast_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype autocast would give ``F.linear(x, weight)`` (the promoted dtype without autocast)."""
    dev = x.device.type
    if autocast_available(dev) and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(x.dtype, weight.dtype)


class ReduceWithGuideCosine(torch.autograd.Function):
    """The reduction's linear part and the guide cosine of the same tokens, in one autograd node.

    ``z = project_tokens(x, weight)`` (in autocast's dtype) and ``sim = cos(x_nh, g_h)``
    (in at least float32) for tokens ``x (b, n, h, d)``, a reduction weight ``(r, d)``
    (shared) or ``(h, d, r)`` (per head) and unit guides ``g_hat (b, h, d)``.

    Why one node: both results read ``x``, so autograd would allocate one
    ``(b, n, h, d)`` gradient for each and add them. Here the reduction's input
    gradient is the buffer into which the cosine's gradient
    ``c_x * x + c_g * g_hat`` is accumulated in place: on a CPU, where fresh
    allocations of this size cost page faults, that is about 15 ms less per
    ``mbdc_paper`` step at ViT-B/16 shapes (see ``benchmarks/results/pooling_cpu.md``).
    The dot products are one ``(b, n h, d) @ (b, d, h)`` product on ``x``'s own
    layout (keeping the diagonal head blocks).

    Shapes: ``x (b, n, h, d)``, ``weight (r, d) | (h, d, r)``, ``g_hat (b, h, d)``
    -> ``z (b, n, h, r)``, ``sim (b, n, h)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, g_hat: Tensor) -> tuple[Tensor, Tensor]:
        b, n, h, d = x.shape
        dtype = _autocast_dtype(x, weight)
        with autocast_off(x.device.type):
            z = project_tokens(x.to(dtype), weight.to(dtype))
            xf = x.to(g_hat.dtype)
            dot = torch.bmm(xf.reshape(b, n * h, d), g_hat.transpose(1, 2)).view(b, n, h, h)
            norm = torch.linalg.vector_norm(xf, dim=-1)
            safe = norm.clamp_min(1e-8)
            sim = dot.diagonal(dim1=-2, dim2=-1) / safe
        ctx.save_for_backward(x, weight, g_hat, norm, safe, sim)
        return z, sim

    @staticmethod
    def backward(ctx, grad_z: Tensor, grad_sim: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight, g_hat, norm, safe, sim = ctx.saved_tensors
        b, n, h, d = x.shape
        dtype = grad_z.dtype
        grad_x = grad_w = grad_g = None
        xf = x.to(g_hat.dtype)
        c_g = grad_sim / safe  # d sim / d dot, (b n h)
        if ctx.needs_input_grad[0]:
            # the reduction's input gradient, then the cosine's added into it in place
            grad_x = project_tokens_transposed(grad_z, weight.to(dtype)).to(xf.dtype)
            c_x = torch.where(norm > 1e-8, -c_g * sim / safe, 0)  # through ||x|| (none where clamped)
            grad_x.addcmul_(xf, c_x.unsqueeze(-1)).addcmul_(c_g.unsqueeze(-1), g_hat.unsqueeze(1))
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = project_tokens_weight_grad(grad_z, x.to(dtype), weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            blocks = torch.diag_embed(c_g).view(b, n * h, h)
            grad_g = torch.bmm(blocks.transpose(1, 2), xf.reshape(b, n * h, d))
        return grad_x, grad_w, grad_g


def guide_softmax(sim: Tensor, mask: Tensor | None) -> Tensor:
    """Per-head token weights from guide similarities ``sim (b, n, h)`` -> ``(b, n, h)``.

    ``w = softmax_n(sim) * M``: a softmax over the real tokens, rescaled by their
    count ``M`` so that uniform attention leaves the tokens unchanged; padded
    tokens (``mask (b, n)`` False) get weight 0.
    """
    if mask is None:
        return sim.softmax(dim=1) * sim.shape[1]
    sim = sim.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    return sim.softmax(dim=1) * mask.sum(-1, dtype=sim.dtype).view(-1, 1, 1)


def guide_weighted_projection(x: Tensor, weight: Tensor, guide: Tensor, mask: Tensor | None) -> Tensor:
    """Project tokens with a bias-free reduction and weight them by their similarity to the guide.

    ``project_tokens(x, weight) * guide_softmax(cos(x, guide), mask)``; the weights are
    computed on the unprojected tokens, and since the projection has no bias this
    equals projecting the weighted tokens, on a smaller tensor.

    Shapes: ``x (b, n, h, d)``, ``weight (r, d) | (h, d, r)``, ``guide (b, h, d)``,
    ``mask (b, n) | None`` -> ``(b, n, h, r)``.
    """
    g_hat = F.normalize(guide.to(torch.promote_types(x.dtype, torch.float32)), dim=-1, eps=1e-8)
    z, sim = ReduceWithGuideCosine.apply(x.contiguous(), weight, g_hat)
    return z * guide_softmax(sim, mask).unsqueeze(-1).to(z.dtype)


@register_pooler("mbdc")
@register_pooler(
    "mbdc_paper",
    defaults={
        "heads": 4, "reduced_dim": 46, "guide_weighting": True, "in_proj": True, "shared_reduction": True,
        "norm": "batch", "dropout": 0.5, "square_proj": True,
    },
    description="The published DALIP head (4 heads, r=46, BatchNorm reduction, dropout 0.5, square projection).",
)
class MBDC(Pooler):
    """Multi-head Brownian distance covariance pooling (see Concepts > MBDC).

    Pipeline, with ``h`` heads of ``d = C / h`` channels and reduced size ``r``:

    ```text
    tokens (b n C) -> Linear C->C -> split heads (b n h d)
      -> guide weighting: token * softmax_n(cos(token, guide)) * M   (optional)
      -> reduction d->r: Linear + norm + ReLU + dropout            (b n h r)
      -> BDC per head over the M real tokens, upper triangle       (b h r(r+1)/2)
      -> concat -> LayerNorm -> [square Linear] -> Linear -> out_dim

    (The weighting is applied to the reduction's output: its linear map has no
    bias, so this equals weighting the input, on a 4x smaller tensor.)
    ```

    Args:
        dim: channel count C of the tokens (divisible by ``heads``).
        heads: number of heads ``h``.
        reduced_dim: channels ``r`` per head after the reduction.
        guide_weighting: weight tokens by their similarity to the guide token
            (then ``guide`` is required).
        in_proj: the token-wise ``C -> C`` linear map before splitting heads.
        shared_reduction: one reduction layer for all heads (else one per head).
        norm: norm of the reduction: ``"batch"`` (reference for images,
            mask-aware), ``"layer"`` (reference for text) or ``"none"``.
        dropout: dropout after the reduction (reference 0.5).
        square_proj: the reference's square ``Linear(S, S)`` after the LayerNorm,
            ``S = h r (r + 1) / 2`` (the bulk of its parameters).
        out_dim: output size; ``None`` means ``dim``.
        learn_scale: learnable temperature on the distance scale.
        eps: added inside the square root of the distances.

    Shapes: ``tokens (B, N, C)``, ``mask (B, N)``, ``guide (B, C)`` -> ``(B, out_dim)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        reduced_dim: int = 32,
        guide_weighting: bool = True,
        in_proj: bool = True,
        shared_reduction: bool = True,
        norm: NormKind = "batch",
        dropout: float = 0.0,
        square_proj: bool = False,
        out_dim: int | None = None,
        learn_scale: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__(dim)
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive int, got {heads!r}")
        if dim % heads:
            raise ValueError(f"dim={dim} channels are not divisible by heads={heads}")
        if not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if isinstance(reduced_dim, int):
            check_statistic_size(reduced_dim, heads, "MBDC")
        self.heads, self.reduced_dim, self.eps = heads, reduced_dim, eps
        self.guide_weighting = self.requires_guide = guide_weighting
        self.in_proj = nn.Linear(dim, dim, bias=False) if in_proj else nn.Identity()
        self.reduce = TokenReduction(
            dim // heads, reduced_dim, groups=heads, shared=shared_reduction, norm=norm, dropout=dropout
        )
        self.scale = BDCScale(learn_scale)
        self.register_buffer("triu_index", triu_index(reduced_dim), persistent=False)
        stat_dim = heads * reduced_dim * (reduced_dim + 1) // 2
        self.stat_dim = stat_dim
        self.out_dim = dim if out_dim is None else out_dim
        self.head = nn.Sequential(
            nn.LayerNorm(stat_dim),
            nn.Linear(stat_dim, stat_dim) if square_proj else nn.Identity(),
            nn.Linear(stat_dim, self.out_dim, bias=False),
        )

    def statistics(self, tokens: Tensor, mask: Tensor | None = None, guide: Tensor | None = None) -> Tensor:
        """The raw per-head BDC matrices ``(B, h, r, r)`` before vectorisation (inputs unchecked)."""
        b, n, c = tokens.shape
        x = self._in_proj(tokens).view(b, n, self.heads, c // self.heads)  # b n h d, no copy
        if self.guide_weighting:
            g = self._in_proj(guide).view(b, self.heads, c // self.heads)  # b h d
            z = guide_weighted_projection(x, self.reduce.projection_weight, g, mask)  # b n h r
        else:
            z = self.reduce.project(x)  # b n h r
        z = rearrange(self.reduce.finish(z, mask), "b n h r -> (b h) r n")
        head_mask = None if mask is None else repeat(mask, "b n -> (b h) n", h=self.heads)
        a = bdc(z, scale=self.scale(z, head_mask), eps=self.eps, mask=head_mask)
        return rearrange(a, "(b h) r s -> b h r s", h=self.heads)

    def _in_proj(self, x: Tensor) -> Tensor:
        """The ``C -> C`` map in the tokens' dtype, as `TokenReduction` (autocast, when on, recasts)."""
        return x if isinstance(self.in_proj, nn.Identity) else F.linear(x, self.in_proj.weight.to(x.dtype))

    def _head(self, s: Tensor) -> Tensor:
        """LayerNorm, [square Linear], Linear of the statistics ``(B, S)`` in their dtype (>= float32).

        The statistics are float32, or float64 for float64 tokens, whatever the parameters'
        dtype: so fp16 / bf16 / fp64 tokens work outside autocast as in the other poolers.
        """
        norm, square, out = self.head
        dt = s.dtype
        s = F.layer_norm(s, norm.normalized_shape, norm.weight.to(dt), norm.bias.to(dt), norm.eps)
        if isinstance(square, nn.Linear):
            s = F.linear(s, square.weight.to(dt), square.bias.to(dt))
        return F.linear(s, out.weight.to(dt))

    def pool(self, tokens: Tensor, mask: Tensor | None, guide: Tensor | None) -> Tensor:
        a = self.statistics(tokens, mask, guide)
        return self._head(rearrange(triu_flatten(a, self.triu_index), "b h t -> b (h t)"))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, reduced_dim={self.reduced_dim}, out_dim={self.out_dim}"
