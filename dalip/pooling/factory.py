"""The pooler registry: ``register_pooler``, ``create_pooler``, ``list_poolers``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dalip.pooling.base import Pooler
from dalip.registry import Registry

__all__ = ["POOLERS", "create_pooler", "list_poolers", "register_pooler"]

POOLERS: Registry[Pooler] = Registry("pooler")


def register_pooler(
    name: str | None = None, *, defaults: dict[str, Any] | None = None, description: str | None = None
) -> Callable[[Callable[..., Pooler]], Callable[..., Pooler]]:
    """Register a `Pooler` class or factory under ``name``.

    ``defaults`` make a named preset of an existing class:

    ```python
    register_pooler("isqrt_cov", defaults={"isqrt": True})(CovPool)
    ```
    """
    return POOLERS.register(name, defaults=defaults, description=description)


def create_pooler(name: str, *, dim: int, **options: Any) -> Pooler:
    """Create the pooler registered as ``name`` for tokens with ``dim`` channels.

    Example:

    ```python
    pool = create_pooler("mbdc", dim=768, heads=4, reduced_dim=46)
    vec = pool(tokens, mask=mask, guide=cls)   # (B, pool.out_dim)
    ```

    Raises:
        UnknownComponentError: unknown ``name`` (the message lists the known names).
        TypeError: an option the pooler does not take (named in the message).
    """
    return POOLERS.create(name, dim=dim, **options)


def list_poolers(pattern: str = "*") -> list[str]:
    """Registered pooler names matching a shell-style wildcard, sorted."""
    return POOLERS.list(pattern)
