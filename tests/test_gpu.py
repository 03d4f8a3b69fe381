"""CUDA checks; skipped cleanly on machines without a GPU."""

import pytest
import torch
from conftest import make_batch

import dalip
from dalip.pooling import value_checks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", dalip.list_poolers())
def test_bf16_autocast_on_cuda_matches_float32(name):
    pool = dalip.create_pooler(name, dim=32).cuda().eval()
    tokens, mask, guide = (t.cuda() for t in make_batch(b=4, n=24))
    reference = pool(tokens, mask=mask, guide=guide)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = pool(tokens, mask=mask, guide=guide)
    assert ((low.float() - reference).norm() / reference.norm()) < 0.05


@pytest.mark.parametrize("name", dalip.list_poolers())
def test_forward_backward_never_syncs_with_the_host(name):
    pool = dalip.create_pooler(name, dim=32).cuda().train()
    tokens, mask, guide = (t.cuda() for t in make_batch(b=4, n=24))
    tokens.requires_grad_(True)
    pool(tokens, mask=mask, guide=guide)  # warm-up outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with value_checks(False), torch.autocast("cuda", dtype=torch.bfloat16):
            out = pool(tokens, mask=mask, guide=guide)
        out.float().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_training_step_never_syncs_with_the_host():
    """The whole recipe step (DALIP heads on both towers, bf16, fused AdamW) under CUDA's sync detector."""
    from test_host_sync import make_dalip_step

    step = make_dalip_step(torch.device("cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = step(False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(stats.loss).item()
