"""Sharded losses on 2 CPU processes (gloo) against the single-process loss on the full batch.

What must hold, with each of W ranks holding a b-row shard of the global batch
(B = W b) and gathering with autograd (``gather_with_grad=True`` for clip; siglip
always does):

- loss: the mean over ranks of the rank losses equals the full-batch loss L
  (with clip's ``local_loss=False`` every rank's loss already is L);
- feature gradients: autograd on rank r gives d(sum_k L_k)/d(shard_r), because
  the all-gather's backward sums the gradients every rank sends to shard r. As
  mean_k L_k = L, that is **W times** the full-batch gradient of those rows;
- parameter gradients: DDP averages over ranks, (1/W) sum_r W dL/d(shard_r) .
  d(shard_r)/d(theta) = dL/d(theta), exactly the single-process gradient. The
  replicated ``logit_scale`` / ``logit_bias`` show it directly: the mean of
  their per-rank gradients is the full-batch gradient.
"""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dalip.losses import create_loss

WORLD = 2
B, DIM = 8, 16  # global batch; each rank holds B // WORLD rows
FEATURES = ("image_features", "text_features", "image_second", "text_second")
SCALES = ("logit_scale", "logit_bias")
CASES = {
    "clip_global": ("clip", {"gather_with_grad": True}),
    "clip_local": ("clip", {"gather_with_grad": True, "local_loss": True}),
    "siglip": ("siglip", {}),
    "distribution": ("distribution", {"alpha": 0.3, "base_options": {"gather_with_grad": True, "local_loss": True}}),
}


def full_batch() -> dict[str, torch.Tensor]:
    """The same global batch in every process (fixed seed)."""
    gen = torch.Generator().manual_seed(0)
    out = {key: F.normalize(torch.randn(B, DIM, generator=gen), dim=-1) for key in FEATURES}
    return {**out, "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(-5.0)}


def loss_and_grads(name: str, options: dict, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """The loss on ``inputs`` (as new leaves) and its gradient w.r.t. each of them."""
    leaves = {key: value.detach().clone().requires_grad_(True) for key, value in inputs.items()}
    loss = create_loss(name, **options)(**leaves)
    loss.backward()
    return loss.detach(), {key: leaf.grad for key, leaf in leaves.items()}


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}")


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)  # two processes on a small machine
    batch = full_batch()
    # references first, while torch.distributed is not initialised: world_size defaults to 1
    references = {case: loss_and_grads(name, options, batch) for case, (name, options) in CASES.items()}
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        shard = {key: value[rows] if key in FEATURES else value for key, value in batch.items()}
        for case, (name, options) in CASES.items():
            ref_loss, ref_grads = references[case]
            loss, grads = loss_and_grads(name, options, shard)
            mean_loss = loss.clone()
            dist.all_reduce(mean_loss)
            close(mean_loss / WORLD, ref_loss, f"{case} loss")
            if case == "clip_global":  # without local_loss every rank computes the whole loss
                close(loss, ref_loss, f"{case} rank loss")
            for key in FEATURES:
                if ref_grads[key] is None:  # a pair the loss does not read
                    assert grads[key] is None, (case, key)
                    continue
                close(grads[key], WORLD * ref_grads[key][rows], f"{case} d/d{key}")
            for key in SCALES:
                if ref_grads[key] is None:  # clip ignores the bias
                    continue
                mean_grad = grads[key].clone()
                dist.all_reduce(mean_grad)
                close(mean_grad / WORLD, ref_grads[key], f"{case} d/d{key}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_sharded_losses_match_full_batch(tmp_path):
    # fork where there is one: workers inherit the imports (open_clip alone takes seconds
    # per process); no GPU state exists to be broken by forking
    import open_clip.loss  # noqa: F401  (imported by clip's gather)

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(str(tmp_path / "dist_init"),), nprocs=WORLD, join=True, start_method=method)
