"""Small token-wise layers used by the second-order poolers.

Token groups are laid out as ``(b, n, g, d)``: batch, token, group (head),
channel -- the layout a ``(b, n, g * d)`` projection splits into without a copy.
Single-head poolers use ``g = 1``. Masks are ``(b, n)`` booleans, True = real token.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalip.pooling.functional import autocast_off

__all__ = [
    "GroupNormLayer", "MaskedBatchNorm", "NormKind", "ReLUDropout", "RowIsolatedBatchNorm", "TokenReduction",
    "project_tokens",
    "project_tokens_transposed", "project_tokens_weight_grad",
]

NormKind = Literal["batch", "layer", "none"]
"""Norm of a token reduction: mask-aware BatchNorm, per-token LayerNorm, or none."""
NORM_KINDS = ("batch", "layer", "none")


MAX_STATISTIC_SIZE = 2**22
"""Largest second-order statistic per sample (``heads * r (r + 1) / 2`` values): r <= 2895 for one head.

Its upper-triangle index and the layers after it grow with it (``reduced_dim=100000`` would
allocate 80 GB for the index alone), so a larger one is refused at construction."""


def check_statistic_size(reduced_dim: int, heads: int, name: str) -> None:
    """Refuse a ``reduced_dim`` whose statistic exceeds `MAX_STATISTIC_SIZE` (before anything is allocated)."""
    size = heads * reduced_dim * (reduced_dim + 1) // 2
    if size > MAX_STATISTIC_SIZE:
        limit = int(((8 * MAX_STATISTIC_SIZE / heads + 1) ** 0.5 - 1) / 2)
        raise ValueError(
            f"{name}: reduced_dim={reduced_dim} gives a statistic of {size:,} values per sample "
            f"({heads} x r (r + 1) / 2); at most {MAX_STATISTIC_SIZE:,} are supported (reduced_dim <= {limit}"
            f"{f' with {heads} heads' if heads > 1 else ''}); typical values are 16-64"
        )


def _stat_dtype(x: Tensor) -> torch.dtype:
    """At least float32 (keeps float64 for gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


class RowIsolatedBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm whose statistics skip the batch rows holding NaN/Inf, in one autograd node.

    ``y = (x - mean) * rsqrt(var + eps) * weight + bias`` for every token, with ``mean`` and
    ``var`` over the real tokens of the rows whose values are all finite. Each row's moments
    come from two reductions over its tokens; a NaN/Inf anywhere in a row makes its variance
    non-finite, so the rows to leave out are read from that small result on the device (no host
    sync, no ``isfinite`` pass over the tokens) and the rows are pooled by the parallel variance
    formula. The normalisation and the parameter gradients are ATen's fused BatchNorm kernels
    (with these statistics); the input gradient adds the statistics' part, restricted to the rows
    they pool, in two products. A non-finite row keeps its non-finite outputs; the other rows'
    outputs and the statistics do not see it. (Its gradients, and through the parameter
    gradients everyone's, are not finite: the loss is not, and the trainer stops on that.)

    Shapes: ``x (b, n, g, d)`` (at least float32, contiguous), ``mask (b, n) | None`` (True = real
    token), ``weight, bias (d,)`` (shared by the groups) or ``(g, d)`` -> ``y (b, n, g, d)`` and,
    not differentiable, the batch ``mean, var (k,)`` (``k = weight.numel()``) and the ``count ()``
    of tokens they pool (0 when every row is non-finite).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor, eps: float):
        pad = None if mask is None else ~mask[:, :, None, None]  # b n 1 1
        kept = x if pad is None else x.masked_fill(pad, 0)  # padding (even inf / nan) -> 0
        dims = (1, 2) if weight.ndim == 1 else (1,)  # shared: pool the groups of a row too
        pooled, mean, var, count = _pool_rows(*_row_moments(kept, pad, dims))
        flat = kept.view(-1, weight.numel())  # rows of d (shared) or g * d (per group)
        y = torch.native_batch_norm(flat, weight.view(-1), bias.view(-1), mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(kept, pad, pooled, mean, var, weight)
        ctx.eps = eps
        ctx.set_materialize_grads(False)  # no zero tensors for the statistics' gradients
        ctx.mark_non_differentiable(mean, var, count)
        return y.view(x.shape), mean, var, count

    @staticmethod
    def backward(ctx, dy: Tensor | None, *_) -> tuple[Tensor | None, ...]:
        if dy is None:
            return None, None, None, None, None
        kept, pad, pooled, mean, var, weight = ctx.saved_tensors
        k = weight.numel()
        dy = dy.contiguous()  # BDC's channel-major layout arrives here: one copy, read three times
        _, d_weight, d_bias = torch.ops.aten.native_batch_norm_backward(
            dy.view(-1, k), kept.view(-1, k), weight.view(-1), mean, var, None, None, False, ctx.eps,
            [False, True, True],
        )  # sums over every token's output, padded ones included: they all read the statistics
        d_weight, d_bias = d_weight.view(weight.shape), d_bias.view(weight.shape)
        if not ctx.needs_input_grad[0]:
            return None, None, d_weight, d_bias, None
        # dx = scale (dy - (d_bias + xhat d_weight) / count) on the pooled rows, scale dy elsewhere
        mean, invstd = mean.view(weight.shape), torch.rsqrt(var + ctx.eps).view(weight.shape)
        scale = weight * invstd
        per_token = scale * pooled  # b 1 g|1 d: zero on the rows left out
        slope = -per_token * invstd * d_weight
        offset = -torch.addcmul(per_token * d_bias, slope, mean)
        dx = torch.addcmul(offset, kept, slope).addcmul_(dy, scale)
        return (dx if pad is None else dx.masked_fill_(pad, 0)), None, d_weight, d_bias, None


def _row_moments(kept: Tensor, pad: Tensor | None, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance (two passes: stable) of each batch row's real tokens, and their count.

    (Not ``torch.var_mean``: its Welford reduction over these strided dims is ~10x slower on a CPU.)

    Shapes: ``kept (b, n, g, d)`` (padding zeroed), ``pad (b, n, 1, 1) | None`` (True = padded)
    -> mean, var ``(b, 1, g | 1, d)`` (reduced over ``dims``), count ``(b, 1, 1, 1)``.
    """
    b, n, g, _ = kept.shape
    per_token = g if len(dims) == 2 else 1  # values of a channel in one token
    if pad is None:
        mean_b = kept.mean(dims, keepdim=True)
        var_b = (kept - mean_b).square_().mean(dims, keepdim=True)
        return mean_b, var_b, kept.new_full((b, 1, 1, 1), n * per_token)
    count_b = (n - pad.sum(1, keepdim=True, dtype=kept.dtype)) * per_token  # b 1 1 1
    mean_b = kept.sum(dims, keepdim=True) / count_b.clamp_min(1)
    dev = (kept - mean_b).masked_fill_(pad, 0)
    return mean_b, dev.square_().sum(dims, keepdim=True) / count_b.clamp_min(1), count_b


def _pool_rows(mean_b: Tensor, var_b: Tensor, count_b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pool per-row moments over the rows whose variances are finite (parallel variance formula).

    Shapes: ``mean_b, var_b (b, 1, g | 1, d)``, ``count_b (b, 1, 1, 1)`` -> ``pooled (b, 1, 1, 1)``
    (``1 / count`` on the rows pooled, 0 on those left out), ``mean, var (k,)`` (``k = g d`` or ``d``),
    ``count ()``.
    """
    finite = var_b.sum(dim=(1, 2, 3), keepdim=True) < math.inf  # nan compares False too
    count = (count_b * finite).sum()
    pooled = finite / count.clamp_min(1)
    share = (count_b * pooled).view(1, -1)  # 1 b: each row's share of the tokens pooled
    mean_b, var_b = mean_b.nan_to_num(0.0, 0.0, 0.0), var_b.nan_to_num(0.0, 0.0, 0.0)  # 0 * nan is nan
    mean = share @ mean_b.flatten(1)  # 1 k
    var = share @ (var_b + (mean_b - mean.view(mean_b[:1].shape)).square()).flatten(1)
    return pooled, mean.view(-1), var.view(-1), count


class MaskedBatchNorm(nn.Module):
    """BatchNorm over every real token of the batch; padded tokens do not count.

    In eval mode this is exactly ``F.batch_norm`` over the ``(b n, g d)`` rows with the
    running statistics (one fused kernel). In training the statistics use the real tokens
    of the batch rows whose values are all finite (`RowIsolatedBatchNorm`): padding cannot
    change the result, a row holding NaN/Inf cannot reach the other rows or the running
    statistics, and the running statistics are updated without a host synchronisation.

    Args:
        num_features: channel count ``d``.
        groups: 1 to share statistics and affine over all groups, else ``g`` sets.
        eps: variance floor.
        momentum: running-statistics update rate.

    Shapes:
        ``x: (b, n, g, d)``, ``mask: (b, n) | None`` -> ``(b, n, g, d)``.
    """

    def __init__(self, num_features: int, groups: int = 1, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        shape = (num_features,) if groups == 1 else (groups, num_features)
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalise ``x (b, n, g, d)`` with statistics over the real tokens of the finite rows."""
        dtype = _stat_dtype(x)
        xf = x.to(dtype)
        if not self.training:  # running statistics: every row on its own (one fused kernel)
            rows = xf.reshape(-1, self.weight.numel())  # rows of d (shared) or g * d (per group)
            out = F.batch_norm(
                rows, self.running_mean.view(-1).to(dtype), self.running_var.view(-1).to(dtype),
                self.weight.view(-1).to(dtype), self.bias.view(-1).to(dtype), training=False, eps=self.eps,
            )
            return out.view(x.shape).to(x.dtype)
        # Training: a batch row (sample) with any NaN/Inf is left out of the statistics and of the
        # running-statistics update, as if it were not in the batch (see RowIsolatedBatchNorm).
        with autocast_off(x.device.type):  # its small products pool statistics: never in bf16 / fp16
            y, mean, var, count = RowIsolatedBatchNorm.apply(
                xf.contiguous(), mask, self.weight.to(dtype), self.bias.to(dtype), self.eps
            )
        with torch.no_grad():  # no finite row: the running statistics stay as they are
            unbiased = var * count / (count - 1).clamp_min(1)
            rate = count.clamp_max(1).to(self.running_mean.dtype) * self.momentum  # 0: no finite row
            self.running_mean.lerp_(mean.view(self.running_mean.shape).to(self.running_mean.dtype), rate)
            self.running_var.lerp_(unbiased.view(self.running_var.shape).to(self.running_var.dtype), rate)
        return y.to(x.dtype)


class GroupNormLayer(nn.Module):
    """LayerNorm over the channels of each token, affine shared or per group.

    Shapes: ``x: (b, n, g, d)`` -> ``(b, n, g, d)``; the mask is not needed
    (each token is normalised on its own).
    """

    def __init__(self, num_features: int, groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        shape = (num_features,) if groups == 1 else (groups, num_features)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalise each token of ``x (b, n, g, d)`` over ``d``."""
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class ReLUDropout(nn.Module):
    """``dropout(relu(z))`` with one mask for both, and a cheaper random mask on the CPU.

    On a CPU, drawing one float per element (``bernoulli_`` or ``rand_like``)
    dominates dropout's cost. Here four 16-bit lanes come from every random
    int64, about 3.5x fewer draws than ``rand_like``; an element is kept where its lane
    is at least a threshold, so the drop probability is ``p`` rounded to a
    multiple of 1/65536 (exact for 0.5) and kept values are scaled by the
    inverse of the exact keep probability (the expectation is unchanged). The
    ReLU joins the same mask (``z > 0``), so the backward pass is one product.
    Other devices, and code under ``torch.compile`` (whose generated kernels draw
    their own random numbers, fused with the product), use ``F.dropout(F.relu(z))``.

    Args:
        p: drop probability in ``[0, 1]``.

    Shapes: any ``z`` -> same shape.
    """

    LANES = 65536  # values of one 16-bit lane

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, z: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return torch.relu(z)
        if z.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(torch.relu(z), self.p, training=True)
        dropped = round(self.p * self.LANES)  # lanes below the threshold are dropped
        if dropped == self.LANES:
            return z * 0
        words = torch.empty((z.numel() + 3) // 4, dtype=torch.int64, device=z.device)
        lanes = words.random_(-(2**63), None).view(torch.int16)[: z.numel()].view(z.shape)
        keep = lanes >= dropped - self.LANES // 2  # int16 lanes are uniform on [-32768, 32767]
        keep &= z > 0
        return z * keep.to(z.dtype).mul_(self.LANES / (self.LANES - dropped))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def project_tokens(x: Tensor, weight: Tensor) -> Tensor:
    """Bias-free token-wise projection ``d -> r``, shared or per group.

    Shapes: ``x (b, n, g, d)``, ``weight (r, d)`` (shared, ``nn.Linear`` layout) or
    ``(g, d, r)`` (one per group) -> ``(b, n, g, r)``.
    """
    if weight.ndim == 2:
        return F.linear(x, weight)
    return torch.einsum("bngd,gdr->bngr", x, weight)


def project_tokens_transposed(grad: Tensor, weight: Tensor) -> Tensor:
    """The input gradient of :func:`project_tokens`: ``(b, n, g, r) -> (b, n, g, d)``, a fresh tensor."""
    if weight.ndim == 2:
        return grad @ weight
    return torch.einsum("bngr,gdr->bngd", grad, weight)


def project_tokens_weight_grad(grad: Tensor, x: Tensor, shape: torch.Size) -> Tensor:
    """The weight gradient of :func:`project_tokens` for ``grad (b, n, g, r)`` and ``x (b, n, g, d)``."""
    if len(shape) == 2:
        return grad.reshape(-1, shape[0]).T @ x.reshape(-1, shape[1])  # (r, d)
    return torch.einsum("bngr,bngd->gdr", grad, x)


class TokenReduction(nn.Module):
    """Channel reduction ``d -> r`` on every token: linear, norm, ReLU, dropout.

    The reference's 1x1 convolution + BatchNorm (images) or Linear + LayerNorm
    (text), applied to every head with one shared layer (``shared=True``) or with
    one layer per head, batched either way (no Python loop over heads). The
    linear map has no bias, so per-token weights commute with it:
    ``project(w * x) == w * project(x)``, which lets MBDC weight the smaller
    ``r``-channel output.

    Args:
        in_dim: channels per group ``d``.
        out_dim: reduced channels ``r``.
        groups: number of groups (heads) ``g``.
        shared: one reduction for all groups (the reference) or one per group.
        norm: ``"batch"`` (mask-aware BatchNorm), ``"layer"`` or ``"none"``.
        dropout: dropout probability after the ReLU (reference: 0.5).

    Shapes:
        ``x: (b, n, g, d)``, ``mask: (b, n) | None`` -> ``(b, n, g, r)``.
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
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"reduced dimension must be a positive int, got {out_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.linear: nn.Linear | None = nn.Linear(in_dim, out_dim, bias=False) if shared else None
        self.weight: nn.Parameter | None = None
        if not shared:
            bound = 1 / math.sqrt(in_dim)  # nn.Linear's default init
            self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        norm_cls = {"batch": MaskedBatchNorm, "layer": GroupNormLayer, "none": None}[norm]
        self.norm = norm_cls(out_dim, 1 if shared else groups) if norm_cls else None
        self.activation = ReLUDropout(dropout)

    @property
    def projection_weight(self) -> Tensor:
        """The linear part's weight: ``(r, d)`` when shared, else ``(g, d, r)``."""
        return self.linear.weight if self.linear is not None else self.weight

    def project(self, x: Tensor) -> Tensor:
        """The linear part: ``(b, n, g, d) -> (b, n, g, r)``."""
        return project_tokens(x, self.projection_weight.to(x.dtype))

    def finish(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """Norm, ReLU and dropout on projected tokens ``(b, n, g, r)``."""
        if self.norm is not None:
            z = self.norm(z, mask)
        return self.activation(z)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(b, n, g, d) -> (b, n, g, r)``."""
        return self.finish(self.project(x), mask)
