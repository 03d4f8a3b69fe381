"""Statistics pooling: first-order (``cls``, ``mean``) and second-order
(``cov``, ``isqrt_cov``, ``bdc``, ``mbdc``, ``mbdc_paper``) poolers behind one
interface and one registry."""

from . import functional
from .base import Pooler, check_pool_inputs, value_checks
from .bdc import BDCPool, BDCScale
from .covariance import CovPool
from .factory import POOLERS, create_pooler, list_poolers, register_pooler
from .first_order import ClsPool, MeanPool
from .layers import GroupNormLayer, MaskedBatchNorm, TokenReduction
from .mbdc import MBDC, GuideCosine, guide_weights
from .second_order import MatrixPool

__all__ = [
    "BDCPool", "BDCScale", "ClsPool", "CovPool", "GuideCosine", "GroupNormLayer", "MBDC", "MaskedBatchNorm",
    "MatrixPool", "MeanPool", "POOLERS", "Pooler", "TokenReduction", "check_pool_inputs",
    "create_pooler", "functional", "guide_weights", "list_poolers", "register_pooler", "value_checks",
]
