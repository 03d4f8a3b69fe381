"""Functional cores of the second-order statistics.

Axis names: ``b`` batch (or batch x heads), ``r`` channels, ``m`` tokens.
Every function here takes channel-major token sets ``z: (b, r, m)`` -- each of the
``r`` channel rows is one observation in ``R^m`` -- and computes in at least float32
with autocast disabled, because distances and covariances built from Gram matrices
lose everything to cancellation in bf16/fp16. float64 inputs stay float64 (for
``torch.autograd.gradcheck``).

Optional ``mask: (b, m)`` (True = real token) removes padded tokens exactly: they
are zeroed before the Gram matrix and the token count ``m`` becomes the number of
real tokens per sample.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "Gram",
    "autocast_off",
    "bdc",
    "bdc_scale",
    "covariance",
    "double_centre",
    "isqrt_newton_schulz",
    "pairwise_distances",
    "token_counts",
    "triu_flatten",
    "triu_index",
]

F = TypeVar("F", bound=Callable[..., Tensor])


@torch.compiler.assume_constant_result
def autocast_available(device_type: str) -> bool:
    """Whether autocast exists on ``device_type`` (a constant per device type, so
    ``torch.compile`` folds it instead of breaking the graph on the C++ query)."""
    return torch.amp.is_autocast_available(device_type)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device_type`` (a no-op where autocast does not exist, e.g. meta)."""
    if not autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def float32_stats(fn: F) -> F:
    """Run ``fn`` with autocast off and its floating tensor arguments in >= float32."""

    @functools.wraps(fn)
    def wrapper(z: Tensor, *args, **kwargs):
        with autocast_off(z.device.type):
            return fn(z.to(torch.promote_types(z.dtype, torch.float32)), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def token_counts(z: Tensor, mask: Tensor | None) -> Tensor:
    """Number of real tokens per sample as ``(b, 1, 1)``, in at least float32."""
    dtype = torch.promote_types(z.dtype, torch.float32)
    if mask is None:
        return torch.full((z.shape[0], 1, 1), z.shape[-1], dtype=dtype, device=z.device)
    return mask.sum(-1, dtype=dtype).view(-1, 1, 1)


class Gram(torch.autograd.Function):
    """``z @ z^T`` whose backward is one product, ``(g + g^T) @ z``.

    Autograd would differentiate the two operands apart: two batched products and the sum of
    two ``(b, r, m)`` gradients, where one product on the symmetrised ``(b, r, r)`` gradient does.

    Shapes: ``z (b, r, m)`` -> ``(b, r, r)``.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return z @ z.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return (grad + grad.transpose(-1, -2)) @ z


def _zero_padding(z: Tensor, mask: Tensor | None) -> Tensor:
    return z if mask is None else z.masked_fill(~mask.unsqueeze(1), 0)


def bdc_scale(z: Tensor, mask: Tensor | None = None) -> Tensor:
    """The reference scale ``1 / (2 m)`` per sample, ``(b, 1, 1)``, m = real tokens."""
    return 0.5 / token_counts(z, mask)


@float32_stats
def pairwise_distances(
    z: Tensor, scale: float | Tensor | None = None, eps: float = 1e-5, mask: Tensor | None = None
) -> Tensor:
    """Euclidean distances between the channel rows of each token set.

    ``a_kl = sqrt(max(0, g_kk + g_ll - 2 g_kl) * scale + eps)`` with ``G = z z^T``.

    Args:
        z: token sets ``(b, r, m)``.
        scale: multiplies the squared distances; ``None`` means ``1 / (2 m)``.
            A float or a tensor broadcastable to ``(b, 1, 1)``.
        eps: added inside the square root (keeps the gradient finite at 0).
        mask: optional ``(b, m)`` boolean, True = real token.

    Returns:
        ``(b, r, r)`` symmetric distance matrices.
    """
    z = _zero_padding(z, mask)
    if scale is None:
        scale = bdc_scale(z, mask)
    gram = Gram.apply(z)  # b r r
    sq_norms = gram.diagonal(dim1=-2, dim2=-1)  # b r
    sq_dist = (sq_norms.unsqueeze(-1) + sq_norms.unsqueeze(-2) - 2 * gram).clamp_min(0)
    return torch.sqrt(sq_dist * scale + eps)


def double_centre(a: Tensor) -> Tensor:
    """``A = a - row_mean - col_mean + grand_mean`` over the last two axes, in O(r^2)."""
    row = a.mean(dim=-1, keepdim=True)
    col = a.mean(dim=-2, keepdim=True)
    return a - row - col + row.mean(dim=-2, keepdim=True)


@float32_stats
def bdc(
    z: Tensor, scale: float | Tensor | None = None, eps: float = 1e-5, mask: Tensor | None = None
) -> Tensor:
    """Brownian distance covariance matrix of each token set.

    Each of the ``r`` channel rows of ``z`` is one observation; the result is the
    double-centred pairwise distance matrix ``A`` (see Concepts > BDC). For two
    token sets with equal ``r``, ``(A * A').sum() / r**2`` is the squared sample
    distance covariance of the paired rows (exactly so with ``scale=1, eps=0``).

    Args:
        z: token sets ``(b, r, m)``.
        scale: multiplies squared distances; ``None`` means ``1 / (2 m)`` with
            ``m`` the number of real tokens.
        eps: added inside the square root.
        mask: optional ``(b, m)`` boolean padding mask, True = real token.

    Returns:
        ``(b, r, r)`` symmetric, double-centred matrices in float32 (or float64).
    """
    return double_centre(pairwise_distances(z, scale=scale, eps=eps, mask=mask))


@float32_stats
def covariance(z: Tensor, mask: Tensor | None = None) -> Tensor:
    """Biased covariance ``Sigma = z_c z_c^T / m`` of the channel rows over tokens.

    Args:
        z: token sets ``(b, r, m)``.
        mask: optional ``(b, m)`` boolean padding mask, True = real token.

    Returns:
        ``(b, r, r)`` covariance matrices (divisor ``m`` = real tokens, as in GCP).
    """
    count = token_counts(z, mask)
    z = _zero_padding(z, mask)
    centred = _zero_padding(z - z.sum(-1, keepdim=True) / count, mask)
    return centred @ centred.transpose(-1, -2) / count


@float32_stats
def isqrt_newton_schulz(sigma: Tensor, iterations: int = 5, eps: float = 1e-8) -> Tensor:
    """Matrix square root of SPD matrices by iSQRT-COV (Li et al., CVPR 2018).

    Trace pre-normalisation ``A = sigma / tr(sigma)`` puts the spectrum in (0, 1]
    where the coupled Newton-Schulz iteration ``T = (3I - Z Y) / 2, Y <- Y T,
    Z <- T Z`` converges to ``Y -> A^(1/2)``; post-compensation multiplies by
    ``sqrt(tr(sigma))`` so that ``Y @ Y ~= sigma``. Only matrix products: fast on
    GPUs and differentiable by autograd.

    Args:
        sigma: ``(b, r, r)`` symmetric positive semi-definite matrices.
        iterations: Newton-Schulz steps (5 in the paper; more for tighter roots).
        eps: added to the trace so an all-zero matrix stays finite.

    Returns:
        ``(b, r, r)`` approximate square roots.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1) + eps
    y = sigma / trace
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    z = eye
    for _ in range(iterations):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


def triu_index(r: int, device: torch.device | str | None = None) -> Tensor:
    """Flat indices of the upper triangle (diagonal included) of an ``r x r`` matrix."""
    rows, cols = torch.triu_indices(r, r, device=device)
    return rows * r + cols


def triu_flatten(a: Tensor, index: Tensor | None = None) -> Tensor:
    """Upper triangle (diagonal included) of ``(..., r, r)`` as ``(..., r (r + 1) / 2)``.

    Args:
        a: square matrices ``(..., r, r)``.
        index: precomputed `triu_index` on ``a.device`` (modules keep it as a
            buffer so nothing is rebuilt per call). ``index_select`` on the
            flattened matrix has a cheap backward (``index_add``).
    """
    if index is None:
        index = triu_index(a.shape[-1], a.device)
    return a.flatten(-2).index_select(-1, index)
