"""A contrastive batch across gradient accumulation (``optim.accum_scope=batch``, open_clip's ``accum_freq``).

The reference is independent of the accumulation code: the same model's gradients for ONE
batch of all the samples (``accum_steps=1``), or, with dropout, the loss of the concatenated
outputs of K ordinary forward passes with gradients (the dropout masks then are those of the
K cached passes, which the recomputed passes must replay).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.tensor import DTensor

from dalip.data import Batch
from dalip.models import get_tokenizer
from dalip.pooling import MaskedBatchNorm
from dalip.runs.config import load_config
from dalip.runs.model import build_model
from dalip.train import train
from dalip.train.builders import build_loss, build_optimizer, set_train_mode
from dalip.train.distributed import DistInfo
from dalip.train.frozen_cache import CachedTowersForward
from dalip.train.parallel import wrap_model
from dalip.train.precision import build_scaler
from dalip.train.step import merge_outputs, train_step

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
WORDS = ["a red heart", "a dog", "a smiling face with sunglasses", "two cats", "a green apple", "the moon",
         "a bird on a tree", "a blue car"]
#: first + second order with every scalar output: logit_scale, second_logit_scale, a learnable alpha
DISTRIBUTION = ["model.second_options={heads: 2, reduced_dim: 4, norm: batch}", "model.alpha_learnable=true",
                "model.separate_second_scale=true", "loss.options={separate_scales: true}"]
CLIP = ["model.second_order=null", "loss.name=clip"]
CASES = {"distribution": DISTRIBUTION, "clip": CLIP}
ATOL = 1e-5


class GradCapture:
    """Stands in for the optimizer: keeps the gradients `train_step` accumulated (no update)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.grads = model, {}

    def step(self) -> None:
        self.grads = {n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad.clone())
                      for n, p in self.model.named_parameters() if p.grad is not None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)


class NoSchedule:
    def step(self) -> None:
        pass


def tiny_config(case: list[str], accum_steps: int = 1, scope: str = "batch", *extra: str):
    """The tiny model, both towers trainable unless ``case`` says otherwise, no clipping (raw gradients)."""
    return load_config(TINY, ["model.lock_image=false", *case, "optim.grad_clip=null",
                              f"optim.accum_steps={accum_steps}", f"optim.accum_scope={scope}", *extra])


def samples(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` random images (n, 3, 64, 64), their captions and token ids (n, L)."""
    gen = torch.Generator().manual_seed(seed)
    texts = [f"{WORDS[i % len(WORDS)]} number {i}" for i in range(n)]
    images = torch.randn(n, 3, 64, 64, generator=gen)
    return images, get_tokenizer(str(ROOT / "tests" / "assets" / "tiny-clip.json"))(texts), texts


def split(images: torch.Tensor, tokens: torch.Tensor, texts: list[str], size: int) -> list[Batch]:
    """Micro-batches of ``size`` rows, pre-tokenized (as the data workers deliver them)."""
    return [Batch(images[i:i + size], texts[i:i + size], tokens=tokens[i:i + size])
            for i in range(0, len(texts), size)]


def eval_norms(model: nn.Module) -> None:
    """BatchNorm layers in eval mode: their statistics then do not depend on how the batch is split."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, MaskedBatchNorm)):
            module.eval()


def step_gradients(model: nn.Module, config, batches: list[Batch], net: nn.Module | None = None,
                   frozen=None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The gradients and the logged loss of one `train_step` over ``batches``."""
    set_train_mode(model, config)
    eval_norms(model)
    capture = GradCapture(model)
    stats = train_step(net or model, model, build_loss(config), None, iter(batches), capture, NoSchedule(),
                       config, CPU, frozen)
    return capture.grads, stats.loss


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_same_gradients(actual: dict, expected: dict, atol: float = ATOL, rtol: float = 1e-4) -> None:
    """Equal gradients, to ``atol`` times the tensor's largest entry (at least 1) plus ``rtol`` of each value.

    fp32 sums in another order (micro-batches, ranks) differ by a few ulps of the tensor's large
    entries, so the absolute tolerance of a tensor scales with them.
    """
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        scale = max(1.0, value.abs().max().item())
        torch.testing.assert_close(actual[name], value, atol=atol * scale, rtol=rtol,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_accumulated_batch_has_the_gradients_of_one_big_batch(case, dtype):
    """accum_steps=4 x 8 = one batch of 32 (eval-mode BatchNorm); the per-micro-batch scope does not.

    fp32: to 1e-5 plus 1e-4 of the value (gradient entries reach ~50, whose fp32 rounding is ~4e-6
    per operation; measured: 1e-5 relative); fp64: equal to 1e-10 (measured: ~2e-14).
    """
    atol, rtol = (ATOL, 1e-4) if dtype == torch.float32 else (1e-10, 1e-10)
    torch.manual_seed(0)
    model = build_model(tiny_config(CASES[case])).to(dtype)
    images, tokens, texts = samples(32)
    images = images.to(dtype)
    big, loss_big = step_gradients(copy.deepcopy(model), tiny_config(CASES[case]), split(images, tokens, texts, 32))
    accum, loss_accum = step_gradients(copy.deepcopy(model), tiny_config(CASES[case], 4),
                                       split(images, tokens, texts, 8))
    micro, _ = step_gradients(copy.deepcopy(model), tiny_config(CASES[case], 4, "micro"),
                              split(images, tokens, texts, 8))
    assert any(name.startswith("clip.visual.trunk") for name in big)  # both towers and the scalars train
    assert "clip.logit_scale" in big and ("alpha_logit" in big) == (case == "distribution")
    assert_same_gradients(accum, big, atol, rtol)
    torch.testing.assert_close(loss_accum, loss_big, atol=atol, rtol=rtol)
    assert max_difference(micro, big) > 1e-2  # the old scope scores 8 samples at a time


def test_dropout_of_each_recomputed_pass_is_that_of_its_cached_pass():
    """With dropout 0.5 in the heads, the gradients are those of K ordinary passes on the same RNG stream."""
    config = tiny_config(["model.second_options={heads: 2, reduced_dim: 4, norm: batch, dropout: 0.5}"], 2)
    torch.manual_seed(0)
    model = build_model(config)
    images, tokens, texts = samples(16)
    batches = split(images, tokens, texts, 8)
    reference = copy.deepcopy(model)
    set_train_mode(reference, config)
    eval_norms(reference)
    torch.manual_seed(1)
    outputs = [reference(b.images, b.tokens) for b in batches]
    merged = {k: torch.cat([o[k] for o in outputs]) if o0.ndim else o0 for k, o0 in outputs[-1].items()}
    loss = build_loss(config)(**merged)
    loss.backward()
    expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    torch.manual_seed(1)
    grads, logged = step_gradients(model, config, batches)
    assert_same_gradients(grads, expected)
    torch.testing.assert_close(logged, loss.detach())


def test_cached_passes_leave_the_running_statistics_alone():
    """Train-mode BatchNorm: after a step its running statistics are those of the K passes with gradients."""
    config = tiny_config(DISTRIBUTION, 4)
    torch.manual_seed(0)
    model = build_model(config)
    images, tokens, texts = samples(32)
    stats = {}
    for scope in ("batch", "micro"):
        trained = copy.deepcopy(model)
        set_train_mode(trained, config)  # the heads' MaskedBatchNorm in train mode
        train_step(trained, trained, build_loss(config), None, iter(split(images, tokens, texts, 8)),
                   GradCapture(trained), NoSchedule(), tiny_config(DISTRIBUTION, 4, scope), CPU)
        stats[scope] = {n: b.clone() for n, b in trained.named_buffers() if "running_" in n}
    assert stats["batch"] and any(not torch.equal(stats["batch"][n], b) for n, b in model.named_buffers()
                                  if n in stats["batch"])
    for name, value in stats["micro"].items():
        torch.testing.assert_close(stats["batch"][name], value, msg=lambda m, n=name: f"{n}: {m}")


class TowerLookup:
    """A stand-in for `FrozenTowerCache`: the towers' outputs of a batch computed without gradients."""

    def __init__(self, model) -> None:
        self.model = model

    def lookup(self, batch: Batch):
        visual = self.model.clip.visual
        head, visual.head = visual.head, nn.Identity()  # the cache holds the timm trunk's output before its head
        try:
            with torch.no_grad():
                return self.model.tower("image", batch.images), self.model.tower("text", batch.tokens)
        finally:
            visual.head = head


@pytest.mark.parametrize("scope", ["batch", "micro"])
def test_frozen_cache_path_accumulates_the_whole_batch(scope):
    """``model.cache_frozen`` batches (tower outputs looked up) take the same accumulation paths."""
    frozen_towers = [*DISTRIBUTION, "model.lock_image=true", "model.lock_text=true"]
    torch.manual_seed(0)
    model = build_model(tiny_config(frozen_towers))
    images, tokens, texts = samples(16)
    grads = {}
    for k in (1, 2):
        trained = copy.deepcopy(model)
        config = tiny_config(frozen_towers, k, scope)
        grads[k], _ = step_gradients(trained, config, split(images, tokens, texts, 16 // k),
                                     net=CachedTowersForward(trained), frozen=TowerLookup(trained))
    assert "clip.visual.head.proj.weight" in grads[1]  # the trained tail of the cached image tower
    assert not any(n.startswith(("clip.text.", "clip.visual.trunk")) for n in grads[1])
    if scope == "batch":
        assert_same_gradients(grads[2], grads[1])
    else:
        assert max_difference(grads[2], grads[1]) > 1e-2


def test_merge_outputs_concatenates_features_and_keeps_one_live_scalar():
    live = {"image_features": torch.ones(2, 3, requires_grad=True), "logit_scale": torch.tensor(2.0, requires_grad=True),
            "image_second": None}
    cached = [{"image_features": torch.zeros(2, 3), "logit_scale": torch.tensor(2.0), "image_second": None}] * 3
    merged = merge_outputs(cached, live, 1, scalars_live=False)
    assert merged["image_features"].shape == (6, 3) and merged["image_second"] is None
    assert merged["image_features"][2:4].requires_grad and torch.equal(merged["image_features"][:2], torch.zeros(2, 3))
    assert not merged["logit_scale"].requires_grad
    assert merge_outputs(cached, live, 1, scalars_live=True)["logit_scale"] is live["logit_scale"]


# ------------------------------------------------------------- two processes
WORLD, K, MICRO = 2, 2, 4  # global batch: 2 ranks x 2 micro-batches x 4 = 16


def _step_twice(model: nn.Module, config, dist_info: DistInfo, batches: list[Batch]) -> dict:
    """Gradients and loss of two `train_step` calls on the same batches (no update in between)."""
    set_train_mode(model, config)
    eval_norms(model)
    net = wrap_model(model, config, dist_info)
    capture, loss_fn, micro = GradCapture(model), build_loss(config), iter(batches * 2)
    stats = train_step(net, model, loss_fn, None, micro, capture, NoSchedule(), config, dist_info)
    first = capture.grads
    # a second step: the first left no collective unfinished (DDP's reducer: every parameter had its
    # gradient in the last pass; FSDP2: gradient sync back on)
    train_step(net, model, loss_fn, None, micro, capture, NoSchedule(), config, dist_info)
    return {"grads": first, "again": capture.grads, "loss": stats.loss}


FSDP_FP16 = ["distributed.strategy=fsdp", "run.precision=fp16", "optim.grad_clip=1.0"]


def _fsdp_fp16_step(model: nn.Module, config, dist_info: DistInfo, batches: list[Batch]) -> dict:
    """Two real fp16 steps under FSDP2 (fused AdamW, FSDP's gradient scaler, clipping), the second overflowing."""
    set_train_mode(model, config)
    net = wrap_model(model, config, dist_info)
    optimizer, scaler = build_optimizer(model, config), build_scaler(config, dist_info.device)
    micro, initial = iter(batches * 2), full_parameters(model)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 2.0**8})  # 2^16 overflows here (a skipped step)
    stats = train_step(net, model, build_loss(config), None, micro, optimizer, NoSchedule(), config,
                       dist_info, scaler=scaler)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 2.0**120})  # every fp16 gradient overflows
    before = full_parameters(model)
    trained = all(torch.isfinite(v).all() for v in before.values()) and any(
        not torch.equal(value, initial[name]) for name, value in before.items())
    train_step(net, model, build_loss(config), None, micro, optimizer, NoSchedule(), config, dist_info, scaler=scaler)
    skipped = all(torch.equal(value, before[name]) for name, value in full_parameters(model).items())
    return {"loss": stats.loss, "scaler": type(scaler).__name__, "trained": trained, "skipped": skipped,
            "scale": scaler.get_scale()}


def full_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, whole (FSDP shards gathered)."""
    return {n: p.full_tensor() if isinstance(p, DTensor) else p.detach().clone() for n, p in model.named_parameters()}


def _distributed_worker(rank: int, init_file: str, results: str) -> None:
    torch.set_num_threads(1)
    gathered = [*DISTRIBUTION, "loss.options={separate_scales: true, base_options: {gather_with_grad: true}}",
                "model.channels_last=false"]  # FSDP2 shards contiguous weights only
    torch.manual_seed(0)
    model = build_model(tiny_config(gathered))
    images, tokens, texts = samples(WORLD * K * MICRO)
    # the reference first, while torch.distributed is not initialised: one process on the global batch
    reference, ref_loss = step_gradients(copy.deepcopy(model), tiny_config(gathered),
                                         split(images, tokens, texts, WORLD * K * MICRO))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        rows = slice(rank * K * MICRO, (rank + 1) * K * MICRO)
        batches = split(images[rows], tokens[rows], texts[rows], MICRO)
        dist_info = DistInfo(rank=rank, local_rank=rank, world_size=WORLD, device=torch.device("cpu"))
        out = {strategy: _step_twice(copy.deepcopy(model), tiny_config(gathered, K, "batch",
                                     f"distributed.strategy={strategy}"), dist_info, batches)
               for strategy in ("ddp", "fsdp")}
        out["fp16"] = _fsdp_fp16_step(copy.deepcopy(model), tiny_config(gathered, K, "batch", *FSDP_FP16),
                                      dist_info, batches)
        if rank == 0:
            torch.save({"reference": reference, "ref_loss": ref_loss, **out}, results)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_accumulate_the_global_batch(tmp_path):
    """2 ranks (gloo; DDP and FSDP2) x accum_steps=2 x 4: the gradients and loss of one process on the 16 samples;
    an fp16 step under FSDP2 runs with FSDP's gradient scaler."""
    results = tmp_path / "results.pt"
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(results)), nprocs=WORLD, join=True)
    out = torch.load(results, weights_only=True)
    for strategy in ("ddp", "fsdp"):
        assert_same_gradients(out[strategy]["grads"], out["reference"])
        assert_same_gradients(out[strategy]["again"], out[strategy]["grads"], atol=0, rtol=0)  # no update
        torch.testing.assert_close(out[strategy]["loss"], out["ref_loss"], atol=ATOL, rtol=1e-5)
    assert out["fp16"]["scaler"] == "FsdpGradScaler" and torch.isfinite(out["fp16"]["loss"])
    assert out["fp16"]["trained"]  # the first step updated the weights (finite)
    assert out["fp16"]["skipped"] and out["fp16"]["scale"] == 2.0**119  # the overflowing one was skipped


# --------------------------------------------------------------- in a run
def run_losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_run_with_an_accumulated_batch_resumes_exactly(tmp_path):
    """`train` with accum_steps=2: a run resumed at step 2 logs the uninterrupted run's losses (~40 s).

    Without dropout: with dropout in the heads a resumed run differs from step 3 on whatever the
    accumulation (accum_steps=1 too, and at d261fdc before it existed), a matter of the loop's RNG.
    """
    config = load_config(TINY, ["optim.accum_steps=2", "data.batch_size=8", "optim.steps=4"])
    train(config, tmp_path / "whole", stop_after=4)
    train(config, tmp_path / "resumed", stop_after=2)
    train(config, tmp_path / "resumed", resume=True, stop_after=2)
    whole = run_losses(tmp_path / "whole")
    assert len(whole) == 4 and all(math.isfinite(x) for x in whole)
    assert run_losses(tmp_path / "resumed") == whole
