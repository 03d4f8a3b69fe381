"""dalip: distribution-aligned language-image pre-training.

Registered, swappable statistics poolers and alignment losses for CLIP models::

    import dalip
    dalip.list_poolers()                       # ['bdc', 'cls', 'cov', ...]
    pool = dalip.create_pooler("mbdc", dim=768)
    vec = pool(tokens, mask=mask, guide=cls)   # (B, pool.out_dim)
"""

from .pooling import Pooler, create_pooler, list_poolers, register_pooler
from .registry import Registry, UnknownComponentError

__version__ = "0.1.0"

__all__ = ["Pooler", "Registry", "UnknownComponentError", "__version__", "create_pooler", "list_poolers", "register_pooler"]
