"""Tutorial: register your own pooler so configs can name it.

Blocks between the ``--8<--`` markers are included in
docs/tutorials/register-a-component.md.

Run: python examples/tutorials/register_a_pooler.py   (CPU, a few seconds)
"""

# --8<-- [start:first-order]
import torch
from torch import Tensor

from dalip import create_pooler, list_poolers, register_pooler
from dalip.pooling import Pooler


@register_pooler("max")
class MaxPool(Pooler):
    """Channel-wise maximum over the real tokens.

    Args:
        dim: channel count C.
    """

    def pool(self, tokens: Tensor, mask: Tensor | None,
             guide: Tensor | None) -> Tensor:
        # Inputs are already validated by Pooler.forward: tokens (B, N, C),
        # mask (B, N) bool or None, guide (B, C) or None.
        if mask is not None:
            tokens = tokens.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return tokens.amax(dim=1)  # (B, C); out_dim = dim (set by Pooler)


pool = create_pooler("max", dim=64)
print(pool(torch.randn(2, 10, 64)).shape)  # torch.Size([2, 64])
# --8<-- [end:first-order]
assert "max" in list_poolers()

# --8<-- [start:second-order]
from dalip.pooling import MatrixPool


@register_pooler("gram")
class GramPool(MatrixPool):
    """Uncentred second moment ``z z^T / m`` of the channels over the tokens.

    Args:
        dim: channel count C.
        reduced_dim: channels r after the token-wise reduction (None: keep C).
        norm: norm of the reduction ("batch", "layer" or "none").
        triu: output the upper triangle r (r + 1) / 2 (else r * r).
    """

    def statistic(self, z: Tensor, mask: Tensor | None) -> Tensor:
        # z: (B, r, m) channel-major, after the optional reduction.
        # Return (B, r, r).
        z = z.float()  # second-order statistics in float32
        if mask is None:
            return z @ z.transpose(-1, -2) / z.shape[-1]
        z = z.masked_fill(~mask.unsqueeze(1), 0)
        return z @ z.transpose(-1, -2) / mask.sum(-1).view(-1, 1, 1)


gram = create_pooler("gram", dim=64, reduced_dim=8)
print(gram.out_dim)  # 8 * 9 / 2 = 36
# --8<-- [end:second-order]
assert gram(torch.randn(2, 10, 64)).shape == (2, 36)

# --8<-- [start:preset]
from dalip.pooling import BDCPool

# A named preset of an existing class; callers can still override it.
register_pooler(
    "bdc_small",
    defaults={"reduced_dim": 16, "learn_scale": True},
    description="BDC with r=16 and a learnable distance temperature.",
)(BDCPool)

small = create_pooler("bdc_small", dim=64)
print(small.out_dim)  # 16 * 17 / 2 = 136
print(create_pooler("bdc_small", dim=64, reduced_dim=8).out_dim)  # 36
print(list_poolers("bdc*"))  # ['bdc', 'bdc_small']
# --8<-- [end:preset]
assert small.out_dim == 136 and list_poolers("bdc*") == ["bdc", "bdc_small"]

# --8<-- [start:errors]
from dalip import UnknownComponentError

try:
    create_pooler("mbcd", dim=64)
except UnknownComponentError as err:
    print(err)
    # unknown pooler 'mbcd'. Did you mean 'mbdc'? Known poolers: bdc, ...

try:
    create_pooler("gram", dim=64, heads=4)
except TypeError as err:
    print(err)
    # pooler 'gram': got an unexpected keyword argument 'heads'.
    # Valid arguments: dim, reduced_dim, norm, triu

try:
    register_pooler("max")(MaxPool)
except ValueError as err:
    print(err)
    # pooler 'max' is already registered; pass overwrite=True to replace it
# --8<-- [end:errors]
