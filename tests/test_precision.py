"""``run.precision``: fp32, bf16 / fp16 autocast (fp16 with a GradScaler), pure bf16 weights, auto; on a CPU.

CPU autocast supports bf16 and fp16 in this torch, so every mode runs a real training step
of the tiny model here; `benchmarks/gpu_session.sh` runs the recipe on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

from dalip.data import Batch
from dalip.models import get_tokenizer
from dalip.runs.config import load_config
from dalip.runs.model import build_model
from dalip.train.builders import build_loss, build_optimizer, set_train_mode
from dalip.train.distributed import DistInfo
from dalip.train.precision import (
    FsdpGradScaler,
    autocast,
    build_scaler,
    input_dtype,
    prepare_precision,
    resolve_precision,
)
from dalip.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
CPU = torch.device("cpu")
CAPTIONS = ["a red heart", "a dog", "a smiling face with sunglasses", "two cats"]


def config_for(precision: str, *extra: str):
    return load_config(TINY, [f"run.precision={precision}", *extra])


@pytest.mark.parametrize(("precision", "device", "dtype"), [
    ("fp32", "cpu", None), ("bf16", "cpu", torch.bfloat16), ("fp16", "cpu", torch.float16),
    ("pure_bf16", "cpu", None), ("auto", "cpu", None),
])
def test_autocast_follows_the_precision(precision, device, dtype):
    with autocast(config_for(precision), torch.device(device)):
        assert torch.is_autocast_enabled(device) == (dtype is not None)
        if dtype is not None:
            assert torch.get_autocast_dtype(device) == dtype
            assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == dtype


def test_auto_is_bf16_on_a_gpu_and_fp32_on_a_cpu():
    config = config_for("auto")
    assert resolve_precision(config, torch.device("cuda", 0)) == "bf16"
    assert resolve_precision(config, CPU) == "fp32"
    assert resolve_precision(config_for("fp16"), torch.device("cuda", 0)) == "fp16"


def test_only_fp16_gets_a_scaler_and_only_pure_bf16_casts():
    assert [build_scaler(config_for(p), CPU) is None for p in ("fp32", "bf16", "fp16", "pure_bf16", "auto")] == [
        True, True, False, True, True]
    assert build_scaler(config_for("fp16"), CPU).is_enabled()
    assert input_dtype(config_for("pure_bf16")) == torch.bfloat16 and input_dtype(config_for("bf16")) is None
    model = torch.nn.Linear(2, 2)
    assert prepare_precision(model, config_for("bf16")).weight.dtype == torch.float32
    assert prepare_precision(model, config_for("pure_bf16")).weight.dtype == torch.bfloat16


class Run:
    """The tiny model, optimizer and scaler of one precision, stepped by `train_step` on fixed batches."""

    def __init__(self, precision: str, accum_steps: int = 2) -> None:
        self.config = config_for(precision, f"optim.accum_steps={accum_steps}", "optim.warmup_steps=0")
        torch.manual_seed(0)
        self.model = prepare_precision(build_model(self.config), self.config)
        self.initial = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.scaler = build_scaler(self.config, CPU)
        gen = torch.Generator().manual_seed(0)
        texts = [CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(8)]
        tokens = get_tokenizer(self.config.model.name)(texts)
        self.batch = Batch(torch.randn(8, 3, 64, 64, generator=gen), texts, tokens=tokens)  # fp32 images

    def step(self):
        set_train_mode(self.model, self.config)
        return train_step(self.model, self.model, build_loss(self.config), None, iter([self.batch] * 8),
                          self.optimizer, self.scheduler, self.config, DistInfo(0, 0, 1, CPU), scaler=self.scaler)

    def changed(self) -> list[str]:
        """The parameters the steps have changed."""
        return [n for n, p in self.model.named_parameters() if not torch.equal(p, self.initial[n])]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "pure_bf16"])
def test_a_training_step_in_each_precision(precision):
    """Finite losses, trained weights; pure bf16 keeps every floating weight and buffer in bf16.

    fp16: the scaler starts at 2^16, at which this model's fp16 gradients overflow; it skips those
    steps and halves the scale until they fit (measured: 7 steps, to 2^9), then trains.
    """
    run = Run(precision)
    losses = [run.step().loss for _ in range(10 if precision == "fp16" else 3)]
    assert all(torch.isfinite(loss) for loss in losses), losses
    changed = run.changed()
    assert any(n.startswith("second_heads.image.") for n in changed), changed
    assert any(n.startswith("clip.text.transformer.") for n in changed), changed
    # bf16 weights hold ~3 significant digits: an update of lr 1e-4 to logit_scale = 2.66 is lost (as in
    # open_clip's pure_bf16, which also keeps no fp32 master copy)
    assert ("clip.logit_scale" in changed) == (precision != "pure_bf16")
    if precision == "fp16":
        assert run.scaler.get_scale() < 2.0**16
    floats = {v.dtype for v in run.model.state_dict().values() if v.is_floating_point()}
    assert floats == ({torch.bfloat16} if precision == "pure_bf16" else {torch.float32})
    if precision == "pure_bf16":
        assert all(p.dtype == torch.bfloat16 for group in run.optimizer.state.values() for p in group.values()
                   if torch.is_tensor(p) and p.is_floating_point() and p.ndim)


def test_fp16_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    """The scale the scaler grew or backed off to is saved and restored (weights_only load) and used."""
    run = Run("fp16")
    run.step()
    state = run.scaler.state_dict()
    assert set(state) >= {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    torch.save({"scaler": state}, tmp_path / "checkpoint.pt")
    restored = build_scaler(run.config, CPU)
    restored.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaler"])
    assert restored.state_dict() == state
    assert restored.get_scale() == run.scaler.get_scale()


def test_fp16_step_with_overflowing_gradients_is_skipped_and_the_scale_backs_off():
    run = Run("fp16")
    run.scaler.load_state_dict({**run.scaler.state_dict(), "scale": 2.0**120})  # every fp16 gradient overflows
    stats = run.step()
    assert torch.isfinite(stats.loss)  # the loss itself is fine; its scaled gradients are not
    assert run.changed() == []  # no parameter moved (the optimizer step was skipped)
    assert run.scaler.get_scale() == 2.0**119


def test_fsdp_runs_get_the_scaler_that_agrees_over_the_ranks(tmp_path):
    """FSDP ranks hold different gradient shards: ``ShardedGradScaler`` all-reduces the overflow flag."""
    config = config_for("fp16", "distributed.strategy=fsdp", "model.channels_last=false")
    assert type(build_scaler(config, CPU)) is torch.amp.GradScaler  # no process group: one process
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert isinstance(build_scaler(config, CPU), FsdpGradScaler)
        assert issubclass(FsdpGradScaler, ShardedGradScaler)
        assert type(build_scaler(config_for("fp16"), CPU)) is torch.amp.GradScaler  # ddp
    finally:
        dist.destroy_process_group()
