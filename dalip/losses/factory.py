"""The loss registry: ``register_loss``, ``create_loss``, ``list_losses``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from dalip.registry import Registry

__all__ = ["LOSSES", "create_loss", "list_losses", "register_loss"]

LOSSES: Registry[nn.Module] = Registry("loss", plural="losses")


def register_loss(
    name: str | None = None, *, defaults: dict[str, Any] | None = None, description: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an `AlignmentLoss` class or factory under ``name``.

    ``defaults`` make a named preset of an existing class:

    ```python
    register_loss("distribution_siglip", defaults={"base": "siglip"})(DistributionLoss)
    ```
    """
    return LOSSES.register(name, defaults=defaults, description=description)


def create_loss(name: str, **options: Any) -> nn.Module:
    """Create the loss registered as ``name``.

    Example:

    ```python
    loss_fn = create_loss("distribution", alpha=0.5, aux={"coral": 1.0})
    total = loss_fn(**model(images, texts))                  # scalar
    total, parts = loss_fn(**outputs, output_dict=True)      # parts: {"first", "second", "coral"}
    ```

    Raises:
        UnknownComponentError: unknown ``name`` (the message lists the known names).
        TypeError: an option the loss does not take (named in the message).
    """
    return LOSSES.create(name, **options)


def list_losses(pattern: str = "*") -> list[str]:
    """Registered loss names matching a shell-style wildcard, sorted."""
    return LOSSES.list(pattern)
