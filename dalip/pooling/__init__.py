"""Statistics pooling: first-order (``cls``, ``mean``) and second-order
(``cov``, ``isqrt_cov``, ``bdc``, ``mbdc``, ``mbdc_paper``) poolers behind one
interface and one registry."""

from dalip.pooling import functional
from dalip.pooling.base import Pooler, check_pool_inputs, value_checks
from dalip.pooling.bdc import BDCPool, BDCScale
from dalip.pooling.covariance import CovPool
from dalip.pooling.factory import POOLERS, create_pooler, list_poolers, register_pooler
from dalip.pooling.first_order import ClsPool, MeanPool
from dalip.pooling.layers import GroupNormLayer, MaskedBatchNorm, TokenReduction
from dalip.pooling.mbdc import MBDC, ReduceWithGuideCosine, guide_softmax, guide_weighted_projection
from dalip.pooling.second_order import MatrixPool

__all__ = [
    "MBDC", "POOLERS", "BDCPool", "BDCScale", "ClsPool", "CovPool", "GroupNormLayer", "MaskedBatchNorm",
    "MatrixPool", "MeanPool", "Pooler", "ReduceWithGuideCosine", "TokenReduction", "check_pool_inputs",
    "create_pooler", "functional", "guide_softmax", "guide_weighted_projection", "list_poolers",
    "register_pooler", "value_checks",
]
