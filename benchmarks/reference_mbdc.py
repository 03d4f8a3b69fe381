"""Baseline for the benchmarks: the MBDC head as the *published* DALIP code computes it.

This is deliberately not optimised. It reproduces, in plain PyTorch, the
computation and the engineering choices of the reference implementation
(METHOD.md sections 2-4), so that ``dalip``'s ``mbdc_paper`` can be timed against it:

* one token-wise ``Linear(C, C, bias=False)`` on the whole sequence (guide + tokens);
* a Python loop over the ``h`` heads; per head:

  - guide weighting: ``softmax_n(cos(token_n, guide))`` multiplies each token
    (the published code uses the softmax alone; ``count_factor=True`` also
    multiplies by the token count ``M`` as ``dalip`` does);
  - the shared reduction ``Conv1d(d, r, 1, bias=False) -> BatchNorm1d(r) -> ReLU
    -> Dropout`` on the ``(B, d, M)`` channel-major tokens (the published code uses
    the 2-D versions on a 14 x 14 grid, which is the same arithmetic);
  - BDC (DeepBDC style): squared distances from the Gram matrix using products
    with an identity mask and an all-ones ``r x r`` matrix ``J``, scale ``1/(2M)``,
    ``sqrt(. + eps)``, then double centring
    ``A = a - a@J/r - J@a/r + J@a@J/r^2`` -- all O(r^3) batched products;
  - the upper-triangle index rebuilt on the CPU on every call and moved to the
    device;

* concatenation of the heads -> ``LayerNorm(S)`` -> ``Linear(S, S)`` -> ``Linear(S, C, bias=False)``
  with ``S = h r (r + 1) / 2``.

The statistics are computed in whatever dtype autocast hands them (bf16 under
bf16 autocast; no float32 upcast), as in the published code.

Two deviations, neither of which changes the cost: the published upper-triangle
helper ends in ``.squeeze()`` and so returns the wrong shape for a batch of one;
this one indexes with a flat index and works for any batch size. And there is no
padding mask (the published image head has none; ``mask`` must be ``None``).

Layers and parameter count are identical to
``dalip.create_pooler("mbdc_paper", dim=768)`` (22,629,528 parameters), and
:func:`load_from_dalip` / :func:`load_into_dalip` copy weights between the two so
the equivalence test can check that they compute the same function in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ReferenceMBDC", "load_from_dalip", "load_into_dalip", "reference_bdc", "reference_triu"]


def reference_bdc(z: Tensor, scale: float, eps: float = 1e-5) -> Tensor:
    """DeepBDC-style Brownian distance covariance of ``z (b, r, m)`` -> ``(b, r, r)``.

    Everything is a batched matrix product with ``(b, r, r)`` identity / all-ones
    matrices, in the dtype of ``z`` (autocast decides it for the products).
    """
    b, r, _ = z.shape
    eye = torch.eye(r, r, device=z.device).view(1, r, r).repeat(b, 1, 1).type(z.dtype)
    ones = torch.ones(b, r, r, device=z.device).type(z.dtype)
    gram = z.bmm(z.transpose(1, 2))
    diag = gram * eye  # squared norms on the diagonal
    sq = ones.bmm(diag) + diag.bmm(ones) - 2 * gram  # ||z_k||^2 + ||z_l||^2 - 2 <z_k, z_l>
    sq = torch.clamp(sq, min=0.0)
    a = torch.sqrt(sq * scale + eps)
    # double centring with all-ones products: O(r^3) where O(r^2) would do
    return a - 1.0 / r * a.bmm(ones) - 1.0 / r * ones.bmm(a) + 1.0 / (r * r) * ones.bmm(a).bmm(ones)


def reference_triu(a: Tensor) -> Tensor:
    """Upper triangle (with diagonal) of ``(b, r, r)`` as ``(b, r (r + 1) / 2)``.

    The index is rebuilt on the CPU on every call and then moved to ``a``'s
    device, as the published code does.
    """
    b, r, _ = a.shape
    flat = a.reshape(b, r * r)
    keep = torch.ones(r, r).triu().reshape(r * r)
    index = keep.nonzero().reshape(-1).to(a.device)
    return flat[:, index]


class ReferenceMBDC(nn.Module):
    """The published MBDC image head, loop over heads and all.

    Args:
        dim: token channels ``C``.
        heads: number of heads ``h`` (``C`` divisible by ``h``).
        reduced_dim: ``r`` channels per head after the shared reduction.
        dropout: dropout after the reduction's ReLU (published: 0.5).
        eps: added inside the square root of the distances.
        count_factor: multiply the softmax guide weights by the token count ``M``
            (``dalip``'s convention: uniform attention leaves the tokens unchanged).
            The published code does not (``False``).

    Shapes: ``tokens (B, N, C)``, ``guide (B, C)`` -> ``(B, C)``. ``mask`` must be ``None``.
    """

    def __init__(
        self,
        dim: int = 768,
        heads: int = 4,
        reduced_dim: int = 46,
        dropout: float = 0.5,
        eps: float = 1e-5,
        count_factor: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.heads, self.reduced_dim, self.eps = dim, heads, reduced_dim, eps
        self.head_dim = dim // heads
        self.count_factor = count_factor
        self.requires_guide = True
        self.out_dim = dim
        self.proj = nn.Linear(dim, dim, bias=False)
        self.conv = nn.Conv1d(self.head_dim, reduced_dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm1d(reduced_dim)
        self.drop = nn.Dropout(dropout)
        stat_dim = heads * reduced_dim * (reduced_dim + 1) // 2
        self.stat_dim = stat_dim
        self.norm = nn.LayerNorm(stat_dim)
        self.fc = nn.Linear(stat_dim, stat_dim)
        self.out = nn.Linear(stat_dim, dim, bias=False)

    def reduce(self, x: Tensor) -> Tensor:
        """Shared reduction of one head, ``(B, d, M) -> (B, r, M)``."""
        return self.drop(F.relu(self.bn(self.conv(x))))

    def forward(self, tokens: Tensor, mask: Tensor | None = None, guide: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("the reference head has no padding mask")
        if guide is None:
            raise ValueError("the reference head needs the guide ([cls]) token")
        seq = self.proj(torch.cat([guide.unsqueeze(1), tokens], dim=1))  # B, 1 + M, C
        cls, patches = seq[:, :1], seq[:, 1:]
        m = patches.shape[1]
        stats = []
        for i in range(self.heads):
            sl = slice(i * self.head_dim, (i + 1) * self.head_dim)
            x, g = patches[..., sl], cls[..., sl]  # B M d, B 1 d
            w = F.cosine_similarity(x, g, dim=-1).softmax(dim=-1)  # B M
            if self.count_factor:
                w = w * m
            x = x * w.unsqueeze(-1)
            z = self.reduce(x.transpose(1, 2))  # B r M
            a = reference_bdc(z, scale=1.0 / (2 * m), eps=self.eps)
            stats.append(reference_triu(a))
        v = torch.cat(stats, dim=1)  # B, h r (r + 1) / 2
        return self.out(self.fc(self.norm(v)))


def _check_compatible(ref: ReferenceMBDC, mbdc: nn.Module) -> None:
    reduce = mbdc.reduce
    # a shared reduction has a shared norm: MaskedBatchNorm parameters and buffers of shape (r,),
    # like BatchNorm1d(r); per-head ones ((g, r), shared_reduction=False) have no counterpart here
    if reduce.linear is None or reduce.norm is None or not hasattr(reduce.norm, "running_var"):
        raise ValueError("only an MBDC with a shared reduction and BatchNorm matches the reference")
    if isinstance(mbdc.in_proj, nn.Identity) or not isinstance(mbdc.head[1], nn.Linear):
        raise ValueError("only an MBDC with in_proj=True and square_proj=True matches the reference")
    if (mbdc.heads, mbdc.reduced_dim, mbdc.dim) != (ref.heads, ref.reduced_dim, ref.dim):
        raise ValueError("heads, reduced_dim and dim must agree")


def _pairs(ref: ReferenceMBDC, mbdc: nn.Module):
    """(reference tensor, dalip tensor) for every parameter and BatchNorm buffer."""
    norm = mbdc.reduce.norm
    return [
        (ref.proj.weight, mbdc.in_proj.weight),
        (ref.conv.weight, mbdc.reduce.linear.weight),  # (r, d, 1) <-> (r, d)
        (ref.bn.weight, norm.weight),
        (ref.bn.bias, norm.bias),
        (ref.bn.running_mean, norm.running_mean),
        (ref.bn.running_var, norm.running_var),
        (ref.norm.weight, mbdc.head[0].weight),
        (ref.norm.bias, mbdc.head[0].bias),
        (ref.fc.weight, mbdc.head[1].weight),
        (ref.fc.bias, mbdc.head[1].bias),
        (ref.out.weight, mbdc.head[2].weight),
    ]


@torch.no_grad()
def _copy(ref: ReferenceMBDC, mbdc: nn.Module, into_ref: bool) -> None:
    """Copy every tensor of :func:`_pairs` and the two ``eps`` one way or the other."""
    _check_compatible(ref, mbdc)
    for r, d in _pairs(ref, mbdc):
        dst, src = (r, d) if into_ref else (d, r)
        dst.copy_(src.reshape(dst.shape))
    if into_ref:
        ref.eps, ref.bn.eps = mbdc.eps, mbdc.reduce.norm.eps
    else:
        mbdc.eps, mbdc.reduce.norm.eps = ref.eps, ref.bn.eps


def load_from_dalip(ref: ReferenceMBDC, mbdc: nn.Module) -> ReferenceMBDC:
    """Copy the weights and BatchNorm running statistics of a ``dalip`` MBDC into ``ref``."""
    _copy(ref, mbdc, into_ref=True)
    return ref


def load_into_dalip(mbdc: nn.Module, ref: ReferenceMBDC) -> nn.Module:
    """Copy the weights and BatchNorm running statistics of ``ref`` into a ``dalip`` MBDC."""
    _copy(ref, mbdc, into_ref=False)
    return mbdc
