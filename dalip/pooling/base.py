"""The pooler interface shared by every statistics-pooling module.

A pooler maps a set of token features to one vector per sample:

```python
pooler(tokens, mask=None, guide=None) -> (B, out_dim)

tokens: (B, N, C) float   token features of one tower
mask:   (B, N)    bool    True = real token; padded tokens have no influence
guide:  (B, C)    float   the [cls] / EOT token, for poolers that use it
```
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["Pooler", "check_pool_inputs", "value_checks"]

_VALUE_CHECKS = True


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Switch the data-dependent input checks (an all-padded row; NaN/Inf rows) on or off.

    Shape and dtype checks always run; the value checks read the mask and the tokens
    on the host (an all-padded row is an error, a row with NaN/Inf tokens a
    ``RuntimeWarning`` naming it), which synchronises a GPU stream, so fast training
    loops may turn them off:

    ```python
    with dalip.pooling.value_checks(False):
        loss = step(batch)
    ```
    """
    global _VALUE_CHECKS
    previous, _VALUE_CHECKS = _VALUE_CHECKS, enabled
    try:
        yield
    finally:
        _VALUE_CHECKS = previous


def check_pool_inputs(
    tokens: Tensor,
    mask: Tensor | None,
    guide: Tensor | None,
    *,
    dim: int,
    requires_guide: bool,
    name: str,
) -> Tensor | None:
    """Validate pooler inputs and return the mask as bool (or None).

    Raises:
        ValueError: wrong rank or channel count, no tokens, mask or guide of the
            wrong shape, a row whose tokens are all padded, or a missing guide.
        TypeError: non-floating tokens/guide, or a floating-point mask.
    """
    if not isinstance(tokens, Tensor) or tokens.ndim != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name}: tokens must have shape (B, N, C), got {shape}")
    b, n, c = tokens.shape
    if c != dim:
        raise ValueError(f"{name}: tokens have C={c} channels but the pooler was built for dim={dim}")
    if n == 0:
        raise ValueError(f"{name}: tokens have N=0 tokens; at least one is needed")
    if not tokens.is_floating_point():
        raise TypeError(f"{name}: tokens must be a floating-point tensor, got {tokens.dtype}")
    if mask is not None:
        if mask.shape != (b, n):
            raise ValueError(
                f"{name}: mask must have shape (B, N)=({b}, {n}) like the tokens, got {tuple(mask.shape)}"
            )
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"{name}: mask must be boolean (True = real token), got {mask.dtype}")
        mask = mask.bool()
        if _VALUE_CHECKS and not torch.compiler.is_compiling():
            empty = ~mask.any(dim=1)
            if bool(empty.any()):
                rows = empty.nonzero().flatten().tolist()
                raise ValueError(f"{name}: every token is masked out in batch row(s) {rows}")
    if guide is None:
        if requires_guide:
            raise ValueError(
                f"{name}: this pooler needs guide=(B, C) (the [cls] / EOT token) and none was given"
            )
    elif guide.shape != (b, c):
        raise ValueError(f"{name}: guide must have shape (B, C)=({b}, {c}), got {tuple(guide.shape)}")
    elif not guide.is_floating_point():
        raise TypeError(f"{name}: guide must be a floating-point tensor, got {guide.dtype}")
    if _VALUE_CHECKS and not torch.compiler.is_compiling():
        _warn_non_finite_rows(tokens, mask, guide, name)
    return mask


def _warn_non_finite_rows(tokens: Tensor, mask: Tensor | None, guide: Tensor | None, name: str) -> None:
    """Warn, naming the batch rows, when real tokens or the guide hold NaN/Inf (reads values: a host sync).

    The poolers keep such a row to itself (its output is non-finite, BatchNorm leaves it out
    of its statistics), so the other rows are unaffected; the warning says which input to look at.
    One sum over the inputs tells whether any value is NaN/Inf (a sum holding one is not finite);
    only then, or when the sum overflows, are the values read one by one.
    """
    per_token = tokens.sum(-1, dtype=torch.promote_types(tokens.dtype, torch.float32))  # b n (fp16 overflows)
    total = (per_token if mask is None else per_token.masked_fill(~mask, 0)).sum()
    if guide is not None:
        total = total + guide.sum(dtype=total.dtype)
    if bool(total.isfinite()):
        return
    finite = torch.isfinite(tokens).all(dim=-1)  # b n
    if mask is not None:
        finite = finite | ~mask  # padded tokens may hold anything
    bad = ~finite.all(dim=1)
    if guide is not None:
        bad = bad | ~torch.isfinite(guide).all(dim=-1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        warnings.warn(f"{name}: NaN/Inf in the inputs of batch row(s) {rows}; the pooler keeps them to those "
                      "rows, the other rows are unaffected", RuntimeWarning, stacklevel=3)


class Pooler(nn.Module):
    """Base class: validates the inputs, then calls `pool`.

    Subclasses set ``dim`` (input channels C), ``out_dim`` (output size D) and
    ``requires_guide``, and implement `pool` on validated inputs.

    Args:
        dim: channel count C of the tokens.

    Attributes:
        dim: channel count C the pooler accepts.
        out_dim: size D of the pooled vector.
        requires_guide: whether ``guide`` must be given.
    """

    requires_guide: bool = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.out_dim = dim

    def forward(self, tokens: Tensor, mask: Tensor | None = None, guide: Tensor | None = None) -> Tensor:
        """Pool ``tokens (B, N, C)`` with optional ``mask (B, N)`` and ``guide (B, C)`` to ``(B, out_dim)``."""
        mask = check_pool_inputs(
            tokens, mask, guide, dim=self.dim, requires_guide=self.requires_guide, name=type(self).__name__
        )
        return self.pool(tokens, mask, guide)

    def pool(self, tokens: Tensor, mask: Tensor | None, guide: Tensor | None) -> Tensor:
        """Pool validated inputs; subclasses implement this.

        Args:
            tokens: ``(B, N, C)`` token features.
            mask: ``(B, N)`` bool (True = real token) or None; every row has a real token.
            guide: ``(B, C)`` or None (never None when ``requires_guide``).

        Returns:
            ``(B, out_dim)``.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dim={self.dim}, out_dim={self.out_dim}"
