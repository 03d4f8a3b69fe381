"""Shared fixtures: small token batches with padding, deterministic seeds."""

from __future__ import annotations

import pytest
import torch

DIM = 32  # divisible by 1, 2, 4, 8 heads


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_batch(b: int = 3, n: int = 11, c: int = DIM, dtype: torch.dtype = torch.float32):
    """tokens (b, n, c), a padding mask with different lengths per row, guide (b, c)."""
    tokens = torch.randn(b, n, c, dtype=dtype)
    lengths = torch.tensor([n - 3 * (i % 3) for i in range(b)])
    mask = torch.arange(n)[None, :] < lengths[:, None]
    guide = torch.randn(b, c, dtype=dtype)
    return tokens, mask, guide
