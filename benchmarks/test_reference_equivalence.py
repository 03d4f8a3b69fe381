"""The baseline (reference_mbdc) computes the same function as dalip's MBDC.

Eval mode (dropout off, BatchNorm running statistics), weights copied from dalip,
``count_factor=True`` (dalip multiplies the softmax guide weights by the token
count M; the published code does not). Also: the published convention (no factor)
does change the output, so the flag matters.

Tolerances: the tests run in float64, but dalip's guide weighting and
``MaskedBatchNorm`` cast with ``.float()`` (float64 -> float32), so agreement is
only to float32 precision (rtol 1e-5).
"""

from __future__ import annotations

import pytest
import torch
from floor_mbdc import FloorMBDC
from reference_mbdc import ReferenceMBDC, load_from_dalip, load_into_dalip

import dalip

PAPER = dict(heads=4, reduced_dim=46, dropout=0.5)


def _pair(dim, heads, r, count_factor=True, seed=0):
    torch.manual_seed(seed)
    ours = dalip.create_pooler("mbdc_paper", dim=dim, heads=heads, reduced_dim=r)
    # non-trivial BatchNorm running statistics and affine parameters
    with torch.no_grad():
        norm = ours.reduce.norm
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    ref = load_from_dalip(ReferenceMBDC(dim, heads, r, count_factor=count_factor), ours)
    return ours.eval(), ref.eval()


def _inputs(b, n, c, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=gen, dtype=dtype), torch.randn(b, c, generator=gen, dtype=dtype)


def test_parameter_count_matches_mbdc_paper():
    ours = dalip.create_pooler("mbdc_paper", dim=768)
    ref = ReferenceMBDC(768, **PAPER)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ref) == count(ours) == 22_629_528
    assert count(FloorMBDC(768, 4, 46)) == count(ours) - 2 * 46  # all but the BatchNorm affine


@pytest.mark.parametrize("b", [2, 1])
def test_equivalent_small(b):
    ours, ref = _pair(96, 4, 8)
    ours, ref = ours.double(), ref.double()
    x, g = _inputs(b, 17, 96)
    torch.testing.assert_close(ref(x, guide=g), ours(x, guide=g), rtol=1e-5, atol=1e-6)


def test_equivalent_paper_dims():
    ours, ref = _pair(768, 4, 46)
    x, g = _inputs(1, 196, 768, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ref(x, guide=g), ours(x, guide=g), rtol=1e-4, atol=1e-5)


def test_gradients_match():
    ours, ref = _pair(96, 4, 8)
    ours, ref = ours.double(), ref.double()
    x, g = _inputs(2, 17, 96)
    grads = []
    for m in (ours, ref):
        xx, gg = x.clone().requires_grad_(), g.clone().requires_grad_()
        m(xx, guide=gg).square().sum().backward()
        grads.append((xx.grad, gg.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_load_into_dalip_roundtrip():
    ours, ref = _pair(96, 4, 8)
    fresh = dalip.create_pooler("mbdc_paper", dim=96, heads=4, reduced_dim=8).eval()
    load_into_dalip(fresh, ref)
    x, g = _inputs(2, 17, 96, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, guide=g), ours(x, guide=g))


def test_train_mode_one_head_no_dropout():
    """With one head the per-head BatchNorm of the reference sees the same batch as dalip's."""
    torch.manual_seed(0)
    # float32: dalip's MaskedBatchNorm cannot train in float64 (lerp_ of a float32 statistic)
    ours = dalip.create_pooler("mbdc_paper", dim=32, heads=1, reduced_dim=8, dropout=0.0).train()
    ref = load_from_dalip(ReferenceMBDC(32, 1, 8, dropout=0.0, count_factor=True), ours).train()
    x, g = _inputs(3, 17, 32, dtype=torch.float32)
    torch.testing.assert_close(ref(x, guide=g), ours(x, guide=g), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref.bn.running_var, ours.reduce.norm.running_var, rtol=1e-5, atol=1e-7)


def test_count_factor_changes_the_output():
    """The published convention (softmax weights alone) is a different function in eval mode."""
    ours, ref = _pair(96, 4, 8, count_factor=False)
    x, g = _inputs(2, 17, 96, dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(ref(x, guide=g), ours(x, guide=g), atol=1e-3)



def test_per_head_reduction_is_rejected():
    """A per-head reduction (MaskedBatchNorm of shape (g, r)) has no counterpart in the reference."""
    ours = dalip.create_pooler("mbdc_paper", dim=96, heads=4, reduced_dim=8, shared_reduction=False)
    assert ours.reduce.norm.weight.shape == (4, 8)
    with pytest.raises(ValueError, match="shared reduction"):
        load_from_dalip(ReferenceMBDC(96, 4, 8), ours)
