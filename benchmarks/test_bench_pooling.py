"""pytest-benchmark: forward + backward of every pooler, the baseline and the floor.

ViT-B/16 image-tower shapes on CPU in float32: B = 32, N = 196 patch tokens,
guide ([cls]) given separately as (B, C), C = 768. One step is
``output.sum().backward()`` with parameter/input grads reset to None first (see
``_common.Variant``); modules in train mode.

Not part of the normal test run (pytest's testpaths is ``tests/``)::

    pytest benchmarks/test_bench_pooling.py                     # timings, ~2-3 min on 2 cores
    pytest benchmarks/ --benchmark-disable                      # correctness-only, B=2, seconds

With ``--benchmark-disable`` the steps run once at B = 2 and only the output
shape, finiteness and gradients are checked.
"""

from __future__ import annotations

import _common as C
import pytest
import torch

NAMES = C.all_variant_names()
GROUP = "pooling fwd+bwd, cpu fp32, B=32 N=196 C=768"


@pytest.mark.parametrize("name", NAMES)
def test_pooling_fwd_bwd(benchmark, name):
    benchmark.group = GROUP
    batch = 2 if benchmark.disabled else 32
    x, g = C.make_inputs(batch)
    v = C.build_variant(name, x, g)
    heavy = name in C.MAIN_VARIANTS or name == "mbdc"
    benchmark.pedantic(v.step, rounds=3 if heavy else 5, iterations=1, warmup_rounds=1)
    # correctness after the timed steps
    v.zero_grad()
    out = v.run()
    assert out.shape[0] == batch and out.ndim == 2 and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in v.module.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    if name not in ("cls",):  # cls only reads the guide
        assert x.grad is not None and torch.isfinite(x.grad).all()
