"""Global covariance pooling (GCP) and iSQRT-COV."""

from __future__ import annotations

from torch import Tensor

from dalip.pooling.factory import register_pooler
from dalip.pooling.functional import covariance, isqrt_newton_schulz
from dalip.pooling.layers import NormKind
from dalip.pooling.second_order import MatrixPool

__all__ = ["CovPool"]


@register_pooler("cov")
@register_pooler("isqrt_cov", defaults={"isqrt": True}, description="iSQRT-COV: covariance pooling with a Newton-Schulz matrix square root.")
class CovPool(MatrixPool):
    """Covariance of the channels over the tokens, optionally square-root normalised.

    ``Sigma = Z_c Z_c^T / M`` over the real tokens of each sample (centred per
    channel), then with ``isqrt=True`` the iSQRT-COV matrix square root
    (trace pre-normalisation, Newton-Schulz iterations, trace post-compensation).

    Args:
        dim: channel count C.
        reduced_dim: channels ``r`` after a Linear + norm + ReLU reduction
            (``None``: no reduction).
        norm: norm of the reduction (``"batch"``, ``"layer"``, ``"none"``).
        isqrt: apply the iSQRT-COV matrix square root.
        iterations: Newton-Schulz iterations for ``isqrt``.
        triu: upper-triangle output ``r (r + 1) / 2`` (else ``r * r``).

    Shapes: ``tokens (B, N, C)``, ``mask (B, N)`` -> ``(B, r (r + 1) / 2)``.
    """

    def __init__(
        self,
        dim: int,
        reduced_dim: int | None = 64,
        norm: NormKind = "batch",
        isqrt: bool = False,
        iterations: int = 5,
        triu: bool = True,
    ) -> None:
        super().__init__(dim, reduced_dim=reduced_dim, norm=norm, triu=triu)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.isqrt, self.iterations = isqrt, iterations

    def statistic(self, z: Tensor, mask: Tensor | None) -> Tensor:
        sigma = covariance(z, mask=mask)
        return isqrt_newton_schulz(sigma, self.iterations) if self.isqrt else sigma
