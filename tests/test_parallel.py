"""DDP vs FSDP2, SyncBatchNorm and full state dicts on 2 CPU processes (gloo), plus their one-process parts.

The multi-process checks run once in a ``torchrun --nproc_per_node 2`` job of this file
(``python -m torch.distributed.run ... tests/test_parallel.py OUT``): each rank writes what it
measured to ``OUT/rank<r>.json`` and the tests read those. What must hold:

- FSDP2 (per block, per head, then the model) and DDP take the same steps on the same data:
  equal losses and weights after 3 optimizer steps (AdamW, grad clipping, dropout, the
  ``mbdc_paper`` head's BatchNorm, learnable 0-dim scales which FSDP2 leaves replicated);
- `model_state` / `optimizer_state` of the FSDP model equal those of the DDP model, load
  into one process (``build_model`` + ``load_state_dict``, a plain AdamW), and
  `load_optimizer_state` puts them back into a fresh FSDP model that then takes the same
  next step as the original;
- with ``model.sync_batchnorm`` the heads' BatchNorm normalises over the global batch: the
  output, input gradient and running statistics of each rank equal one process's on the
  whole batch, and the running statistics of a trained model agree across ranks (they differ
  without it);
- ``distributed.backend=gloo`` is the backend of the process group.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributed.tensor import DTensor

from dalip.errors import ConfigError
from dalip.models import create_model
from dalip.pooling import MaskedBatchNorm
from dalip.runs import load_config
from dalip.runs.model import build_model
from dalip.train.builders import build_loss, build_optimizer, set_train_mode
from dalip.train.distributed import DistInfo, init_distributed, resolve_backend
from dalip.train.parallel import (
    SyncMaskedBatchNorm,
    block_modules,
    convert_sync_batchnorm,
    is_sharded,
    load_optimizer_state,
    model_state,
    optimizer_state,
    unsharded_model,
    wrap_model,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
# the published head (BatchNorm, dropout) at toy size, both towers trained, every learnable 0-dim scale
OVERRIDES = ["model.second_order=mbdc_paper", "model.lock_image=false", "model.alpha_learnable=true",
             "model.channels_last=false", "optim.grad_clip=0.5", "optim.lr=1e-3", "optim.head_lr=1e-2",
             # open_clip's multi-GPU loss: each rank scores its own rows, so the 0-dim scales' gradients differ by rank
             "loss.options={base_options: {gather_with_grad: true, local_loss: true}}"]
WORLD, B, STEPS = 2, 8, 3  # global batch B, B // WORLD rows per rank
TOL = 1e-5


# --------------------------------------------------------------------------- worker (one rank)
def _batch(step: int, rank: int, config) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the global batch of ``step`` (the same in every run)."""
    gen = torch.Generator().manual_seed(1000 + step)
    size = config.data.spec["image_size"]
    images = torch.rand(B, 3, size, size, generator=gen)
    texts = torch.randint(1, 1000, (B, 24), generator=gen)
    rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
    return images[rows], texts[rows]


def _train(config, dist_info: DistInfo, steps: range, state: dict | None = None, grads: dict | None = None):
    """A model wrapped by ``config``'s strategy (from ``state``'s full states), trained over ``steps``."""
    torch.manual_seed(0)
    model = build_model(config, load_weights=False)
    if state is not None:
        model.load_state_dict(state["model"])
    set_train_mode(model, config)
    net = wrap_model(model, config, dist_info)
    optimizer = build_optimizer(model, config)  # after wrap_model (FSDP: DTensor parameters)
    if state is not None:
        load_optimizer_state(model, optimizer, state["optimizer"])
    return _steps(net, model, optimizer, config, dist_info, steps, grads), model, optimizer, net


def _full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient as a full tensor (FSDP: all-gathered; a collective)."""
    return {n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            for n, p in model.named_parameters() if p.grad is not None}


def _steps(net, model, optimizer, config, dist_info: DistInfo, steps: range, grads: dict | None = None) -> list[float]:
    """Optimizer steps on the batches of ``steps`` (dropout seeded by step and rank); their losses.

    ``grads`` receives the first step's gradients (AdamW's first update is blind to their scale).
    """
    loss_fn, losses = build_loss(config), []
    for step in steps:
        torch.manual_seed(10 * step + dist_info.rank)  # the same dropout masks in every run
        loss = loss_fn(**net(*_batch(step, dist_info.rank, config)))
        loss.backward()
        if grads is not None and not grads:
            grads.update(_full_grads(model))
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, 4.6052)
        losses.append(loss.item())
    return losses


def _max_diff(a, b) -> float:
    """The largest absolute difference between two nested structures of tensors / numbers (inf: other layout)."""
    if isinstance(a, dict):
        if list(a) != list(b):
            return float("inf")
        return max([_max_diff(a[k], b[k]) for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        return max([_max_diff(x, y) for x, y in zip(a, b, strict=True)], default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or type(a) is not type(b):
            return float("inf")
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    return abs(a - b) if isinstance(a, float) else (0.0 if a == b else float("inf"))


def _sync_bn_module(rank: int) -> dict:
    """`SyncMaskedBatchNorm` on a rank's rows vs `MaskedBatchNorm` on the global batch (one process)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(B, 5, 2, 3, generator=gen) * 3 + 1
    mask = torch.rand(B, 5, generator=gen) > 0.3
    weights = torch.randn(B, 5, 2, 3, generator=gen)
    reference = MaskedBatchNorm(3, groups=2)
    synced = SyncMaskedBatchNorm(3, groups=2)
    leaf = x.clone().requires_grad_(True)
    expected = reference(leaf, mask)
    (expected * weights).sum().backward()
    rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
    mine = x[rows].clone().requires_grad_(True)
    out = synced(mine, mask[rows])
    (out * weights[rows]).sum().backward()
    return {"out": _max_diff(out.detach(), expected.detach()[rows]), "grad": _max_diff(mine.grad, leaf.grad[rows]),
            "running": _max_diff([synced.running_mean, synced.running_var],
                                 [reference.running_mean, reference.running_var])}


def _head_running_stats(model: nn.Module) -> torch.Tensor:
    """Every BatchNorm running statistic of the heads, in one vector (plain buffers: FSDP shards no buffer)."""
    return torch.cat([b.reshape(-1) for n, b in model.named_buffers() if "heads" in n and "running" in n])


def _spread_over_ranks(value: torch.Tensor) -> float:
    """The largest difference between this rank's ``value`` and any rank's."""
    parts = [torch.empty_like(value) for _ in range(WORLD)]
    torch.distributed.all_gather(parts, value)
    return max((p - value).abs().max().item() for p in parts)


def _with(config, strategy: str | None = None, sync_batchnorm: bool | None = None):
    """A copy of ``config`` with another ``distributed.strategy`` / ``model.sync_batchnorm``."""
    config = copy.deepcopy(config)
    config.distributed.strategy = strategy or config.distributed.strategy
    config.model.sync_batchnorm = config.model.sync_batchnorm if sync_batchnorm is None else sync_batchnorm
    return config


def _params_only(state: dict, model: nn.Module) -> dict:
    """The parameters of a state dict (the buffers, BatchNorm statistics, are each rank's own under FSDP)."""
    names = {n for n, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k in names}


def _same_steps(config: dict, dist_info: DistInfo, steps: int, result: dict) -> tuple:
    """DDP and FSDP over ``steps`` steps; their losses and the differences of their full states."""
    ddp_grads: dict = {}
    fsdp_grads: dict = {}
    ddp_losses, ddp_model, ddp_opt, _ = _train(config["ddp"], dist_info, range(steps), grads=ddp_grads)
    fsdp = _train(config["fsdp"], dist_info, range(steps), grads=fsdp_grads)
    result["grad_diff"] = _max_diff(fsdp_grads, ddp_grads)
    fsdp_losses, fsdp_model, fsdp_opt, _ = fsdp
    result.update(ddp_losses=ddp_losses, fsdp_losses=fsdp_losses, sharded=is_sharded(fsdp_model),
                  dtensor_params=sum(type(p).__name__ == "DTensor" for p in fsdp_model.parameters()))
    state = {"model": model_state(fsdp_model), "optimizer": optimizer_state(fsdp_model, fsdp_opt)}
    ddp_state = model_state(ddp_model)
    result["model_state_diff"] = _max_diff(state["model"], ddp_state)  # rank 0: DDP broadcasts its buffers
    result["param_state_diff"] = _max_diff(*(_params_only(s, ddp_model) for s in (state["model"], ddp_state)))
    result["optimizer_state_diff"] = _max_diff(state["optimizer"], optimizer_state(ddp_model, ddp_opt))
    plain = unsharded_model(fsdp_model, config["fsdp"])  # build_model + strict load_state_dict(model_state)
    build_optimizer(plain, config["fsdp"]).load_state_dict(state["optimizer"])  # a one-process optimizer
    result["one_process_diff"] = _max_diff(_params_only(plain.state_dict(), plain), _params_only(ddp_state, plain))
    result["one_process_sharded"] = is_sharded(plain)
    result["unsynced_bn_spread"] = _spread_over_ranks(_head_running_stats(fsdp_model))
    return fsdp, state


def _resume_and_sync(config: dict, dist_info: DistInfo, fsdp: tuple, state: dict, result: dict) -> None:
    """A fresh FSDP model from full states vs the original one step on; a trained model with SyncBatchNorm."""
    _, fsdp_model, fsdp_opt, fsdp_net = fsdp
    _, reloaded, reloaded_opt, _ = _train(config["fsdp"], dist_info, range(0), state)
    result["reloaded_optimizer_diff"] = _max_diff(optimizer_state(reloaded, reloaded_opt), state["optimizer"])
    resumed = _train(config["fsdp"], dist_info, range(STEPS, STEPS + 1), state)[0]
    continued = _steps(fsdp_net, fsdp_model, fsdp_opt, config["fsdp"], dist_info, range(STEPS, STEPS + 1))
    result["resume_loss"] = [resumed[0], continued[0]]
    synced_config = _with(config["fsdp"], sync_batchnorm=True)
    synced_model = _train(synced_config, dist_info, range(STEPS))[1]
    result["synced_bn_layers"] = sum(isinstance(m, SyncMaskedBatchNorm) for m in synced_model.modules())
    result["synced_bn_spread"] = _spread_over_ranks(_head_running_stats(synced_model))


def _worker(out: Path, full: bool) -> None:
    """One rank: ``full`` runs `STEPS` steps and the resume and SyncBatchNorm model checks, else one step."""
    torch.set_num_threads(1)
    dist_info = init_distributed("gloo")
    result = {"backend": torch.distributed.get_backend(), "sync_bn_module": _sync_bn_module(dist_info.rank)}
    config = {"ddp": load_config(TINY, OVERRIDES)}  # validated once (it takes seconds)
    config["fsdp"] = _with(config["ddp"], strategy="fsdp")
    fsdp, state = _same_steps(config, dist_info, STEPS if full else 1, result)
    if full:
        _resume_and_sync(config, dist_info, fsdp, state, result)
    (out / f"rank{dist_info.rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------- the 2-rank jobs
def _run_ranks(out: Path, mode: str) -> list[dict]:
    """The results of both ranks of one ``torchrun --nproc_per_node 2`` job of `_worker`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
         str(Path(__file__)), str(out), mode], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> list[dict]:
    """One step of each strategy, the states and the SyncBatchNorm layer (default run)."""
    return _run_ranks(tmp_path_factory.mktemp("parallel_quick"), "quick")


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> list[dict]:
    """`STEPS` steps, a resume from the full states and a model trained with SyncBatchNorm."""
    return _run_ranks(tmp_path_factory.mktemp("parallel_full"), "full")


def _check_same_steps(ranks: list[dict]) -> None:
    for rank, result in enumerate(ranks):
        assert result["sharded"] and result["dtensor_params"] > 0
        torch.testing.assert_close(result["fsdp_losses"], result["ddp_losses"], rtol=TOL, atol=TOL)
        assert result["grad_diff"] < TOL  # every gradient averaged over the ranks (the 0-dim ones too)
        assert result["param_state_diff"] < TOL and result["optimizer_state_diff"] < TOL
        assert result["one_process_diff"] < TOL and not result["one_process_sharded"]
        if rank == 0:  # DDP broadcasts rank 0's buffers; FSDP keeps each rank's (rank 0's are saved)
            assert result["model_state_diff"] < TOL
        assert result["unsynced_bn_spread"] > 1e-4  # each rank's own BatchNorm statistics (test below)


def test_fsdp_and_ddp_take_the_same_step_on_two_processes(quick):
    _check_same_steps(quick)


def test_sync_batchnorm_layer_equals_one_process_on_the_global_batch(quick):
    for result in quick:
        module = result["sync_bn_module"]
        assert module["out"] < TOL and module["grad"] < TOL and module["running"] < TOL


def test_backend_from_config_is_used(quick):
    assert [r["backend"] for r in quick] == ["gloo", "gloo"]


@pytest.mark.slow
def test_fsdp_and_ddp_take_the_same_steps(full):
    _check_same_steps(full)


@pytest.mark.slow
def test_fsdp_state_loads_back_into_fsdp_and_resumes_exactly(full):
    for result in full:
        assert result["reloaded_optimizer_diff"] == 0
        resumed, continued = result["resume_loss"]
        assert abs(resumed - continued) < TOL


@pytest.mark.slow
def test_sync_batchnorm_statistics_of_a_trained_model_agree_across_ranks(full):
    for result in full:
        assert result["synced_bn_layers"] == 2  # the image and text heads' reduction norms
        assert result["synced_bn_spread"] < TOL and result["unsynced_bn_spread"] > 1e-4


# ----------------------------------------------------------------------------- one process, fast
def test_backend_default_and_refusals():
    assert resolve_backend(None, torch.device("cpu")) == "gloo"
    assert resolve_backend(None, torch.device("cuda", 0)) == "nccl"
    assert resolve_backend("gloo", torch.device("cpu")) == "gloo"
    with pytest.raises(ConfigError, match="distributed.backend=nccl needs GPUs"):
        resolve_backend("nccl", torch.device("cpu"))
    with pytest.raises(ConfigError, match="distributed.backend must be"):
        load_config(TINY, ["distributed.backend=glo"])
    assert load_config(TINY, ["distributed.backend=cpu:gloo,cuda:nccl"]).distributed.backend == "cpu:gloo,cuda:nccl"
    with pytest.raises(ConfigError, match="distributed.strategy=fsdp with model.channels_last"):
        load_config(TINY, ["distributed.strategy=fsdp"])  # the quickstart's NHWC weights
    with pytest.raises(ConfigError, match="distributed.strategy=fsdp with model.cache_frozen"):
        load_config(TINY, ["distributed.strategy=fsdp", "model.cache_frozen=true", "model.lock_text=true",
                           "model.channels_last=false",
                           "data.spec.augment=false"])


def test_init_distributed_without_launcher_starts_no_group(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    info = init_distributed("gloo")
    assert info.world_size == 1 and not torch.distributed.is_initialized()


def test_block_modules_finds_the_repeated_blocks():
    vit = create_model("ViT-S-32", second_order="mbdc", second_options={"heads": 2, "reduced_dim": 4}).clip
    blocks = block_modules(vit)
    expected = [*vit.visual.transformer.resblocks, *vit.transformer.resblocks]
    assert [id(b) for b in blocks] == [id(b) for b in expected]
    tiny = build_model(load_config(TINY), load_weights=False).clip
    found = {id(b) for b in block_modules(tiny)}
    assert {id(b) for b in tiny.visual.trunk.blocks} <= found  # timm EfficientNet stages
    assert {id(b) for b in tiny.text.transformer.resblocks} <= found  # the 1-layer text transformer


def test_sync_batchnorm_conversion_keeps_the_state_and_one_process_result():
    config = load_config(TINY, ["model.second_order=mbdc_paper", "model.sync_batchnorm=true"])
    torch.manual_seed(0)
    model = build_model(config, load_weights=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = wrap_model(model, config, DistInfo(0, 0, 1, torch.device("cpu")))  # one process: no wrapper
    assert net is model and not is_sharded(model)
    norms = [m for m in model.modules() if isinstance(m, MaskedBatchNorm)]
    assert len(norms) == 2 and all(type(m) is SyncMaskedBatchNorm for m in norms)
    assert _max_diff(model.state_dict(), before) == 0
    x, mask = torch.randn(4, 5, 2, 4), torch.rand(4, 5) > 0.2
    reference = MaskedBatchNorm(4, groups=2)
    torch.testing.assert_close(SyncMaskedBatchNorm(4, groups=2)(x, mask), reference(x, mask))
    assert convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3)), torch.device("cpu"))[0].__class__ is nn.BatchNorm1d


def test_states_of_an_unsharded_model_are_its_own():
    config = load_config(TINY)
    model = build_model(config, load_weights=False)
    optimizer = build_optimizer(model, config)
    assert model_state(model).keys() == model.state_dict().keys()
    assert optimizer_state(model, optimizer) == optimizer.state_dict()


if __name__ == "__main__":  # one rank of the torchrun job of `_run_ranks`
    _worker(Path(sys.argv[1]), full=sys.argv[2] == "full")
