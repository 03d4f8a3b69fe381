"""The distance-covariance identity behind BDC pooling, checked numerically.

For two token sets Z (r x M) and Z' (r x M') with the same number r of channel
rows, the double-centred distance matrices A, A' returned by
``dalip.pooling.functional.bdc`` (with scale=1, eps=0) satisfy

    (1 / r^2) * sum_kl A_kl A'_kl = dCov^2_r(Z, Z'),

the squared sample distance covariance (V-statistic) of the r paired
observations (z_k, z'_k). Checked here against a direct O(r^2) formula and,
when installed, against ``dcor.distance_covariance_sqr``.

Run: python examples/tutorials/bdc_identity.py
"""

# --8<-- [start:identity]
import torch

from dalip.pooling.functional import bdc

# r = 20 paired observations: rows of Z in R^50, rows of Z' in R^30
r, M, M2 = 20, 50, 30
Z = torch.randn(1, r, M, dtype=torch.float64)
Z2 = torch.randn(1, r, M2, dtype=torch.float64)

A = bdc(Z, scale=1.0, eps=0.0)[0]  # (r, r) double-centred distance matrix
A2 = bdc(Z2, scale=1.0, eps=0.0)[0]
dcov2 = (A * A2).sum() / r**2


def double_centred_distances(x: torch.Tensor) -> torch.Tensor:
    # rows of x are the observations
    d = torch.cdist(x, x)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


D, D2 = double_centred_distances(Z[0]), double_centred_distances(Z2[0])
direct = (D * D2).mean()
print(float(dcov2), float(direct))
assert torch.allclose(dcov2, direct)

try:  # an independent implementation (the optional `dcor` package)
    import dcor

    oracle = dcor.distance_covariance_sqr(Z[0].numpy(), Z2[0].numpy())
    assert abs(float(dcov2) - oracle) < 1e-10
except ImportError:
    pass
# --8<-- [end:identity]
