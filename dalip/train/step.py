"""One optimizer step: ``accum_steps`` micro-batches, backward, clip, optimizer and schedule step.

With ``optim.accum_steps`` K > 1, ``optim.accum_scope`` says what the loss scores:

- ``batch`` (default; open_clip's ``--accum-freq``): the whole accumulated batch of K
  micro-batches, as one batch K times larger would. Every micro-batch is first run without
  gradients and its outputs cached; then each micro-batch j is run again with gradients and
  the loss is scored over the cached outputs with slot j replaced by the live ones
  (`merge_outputs`), then backward. Summed over j this is exactly the gradient of the loss of
  the whole batch (BatchNorm in train mode aside: its statistics stay per micro-batch). Each
  micro-batch's second pass replays the RNG state of its first (same dropout), and the first
  passes leave the running statistics of normalisation layers untouched.
- ``micro``: each micro-batch's loss on its own, divided by K (fewer negatives, no second forward).

``train_step`` never reads a value on the host (no synchronisation with the GPU); its
`StepStats` are device tensors the loop reads at logging time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dalip.runs.config import TrainConfig
from dalip.train.distributed import DistInfo
from dalip.train.frozen_cache import FrozenTowerCache
from dalip.train.precision import autocast, input_dtype

__all__ = ["StepStats", "grad_sync", "merge_outputs", "micro_inputs", "train_step"]

Outputs = Mapping[str, Any]


@dataclass
class StepStats:
    """Losses and counts of one optimizer step, or summed over a logging window."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    steps: int = 0
    images: int = 0
    skipped: int = 0

    @classmethod
    def empty(cls, device: torch.device) -> StepStats:
        return cls(torch.zeros((), device=device), {})

    def add(self, other: StepStats) -> None:
        self.loss = self.loss + other.loss
        for key, value in other.parts.items():
            self.parts[key] = self.parts.get(key, 0) + value
        self.steps += other.steps
        self.images += other.images
        self.skipped += other.skipped


# ------------------------------------------------------------------ pieces
def micro_inputs(batch: Any, tokenizer: Any, config: TrainConfig, device: torch.device,
                 frozen: FrozenTowerCache | None = None) -> tuple:
    """The model's inputs for one batch on ``device``: ``(images (b, 3, H, W), tokens (b, L))``, or the cached
    tower outputs of a keyed batch with ``frozen``.

    The batch's own ``tokens`` (tokenized in the data workers) are used when present, else ``tokenizer(texts)``;
    images are cast to the weights' dtype under ``run.precision=pure_bf16``.
    """
    if frozen is not None:
        return frozen.lookup(batch)
    tokens = batch.tokens if batch.tokens is not None else tokenizer(batch.texts)
    images = batch.images.to(device, dtype=input_dtype(config), non_blocking=True)
    return images, tokens.to(device, non_blocking=True)


@contextlib.contextmanager
def grad_sync(net: nn.Module, sync: bool) -> Iterator[None]:
    """Gradient synchronisation across processes on (``sync``) or off for the backward passes inside.

    DistributedDataParallel: ``no_sync()``; FSDP2 (``fully_shard``): ``set_requires_gradient_sync``;
    a ``torch.compile``'d module is looked through. One process: nothing to do.
    """
    inner = getattr(net, "_orig_mod", net)  # torch.compile's wrapper keeps the module it compiled here
    if isinstance(inner, DistributedDataParallel) and not sync:
        with inner.no_sync():
            yield
        return
    if hasattr(inner, "set_requires_gradient_sync"):  # an FSDP2 module
        inner.set_requires_gradient_sync(sync)
    yield


def merge_outputs(cached: list[Outputs], live: Outputs, slot: int, scalars_live: bool) -> dict[str, Any]:
    """The model outputs of a whole accumulated batch: the cached ones with micro-batch ``slot`` live.

    Tensors with a batch dimension (``image_features (b, E)``, ``text_features``, ``image_second``,
    ``text_second``) are concatenated over the micro-batches into ``(K b, E)``; scalars
    (``logit_scale``, ``second_logit_scale``, ``alpha``, ... ``()``) are the live ones when
    ``scalars_live`` (in ONE of the K passes, so that their gradient counts once), else detached.
    """
    out: dict[str, Any] = {}
    for key, value in live.items():
        if not isinstance(value, Tensor):
            out[key] = value
        elif value.ndim == 0:
            out[key] = value if scalars_live else value.detach()
        else:
            out[key] = torch.cat([value if i == slot else c[key] for i, c in enumerate(cached)])
    return out


class _RngReplay:
    """Records the RNG state before each micro-batch's first pass and replays it for its second (same dropout)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.states = device, []

    def _state(self) -> tuple[Tensor, Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def record(self) -> None:
        self.states.append(self._state())

    @contextlib.contextmanager
    def replay(self, slot: int) -> Iterator[None]:
        """The RNG state recorded for ``slot`` inside, the state of the step's RNG restored after it."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            cpu, cuda = self.states[slot]
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, self.device)
            yield


@contextlib.contextmanager
def _norm_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Running statistics of train-mode normalisation layers restored after the block (the cached passes)."""
    buffers = [buf for module in model.modules() if module.training
               for name, buf in module.named_buffers(recurse=False)
               if buf is not None and (name.startswith("running_") or name == "num_batches_tracked")]
    saved = [buf.clone() for buf in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in zip(buffers, saved):
                buf.copy_(value)


def _backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _detached(loss: Tensor, parts: Mapping[str, Tensor], scale: float, batches: list) -> StepStats:
    """The step statistics of a loss (times ``scale``) over ``batches``."""
    return StepStats(loss.detach() * scale, {k: v.detach().float() * scale for k, v in parts.items()},
                     images=sum(len(b) for b in batches), skipped=sum(b.skipped for b in batches))


# ------------------------------------------------------------------ passes
def _micro_passes(net: nn.Module, loss_fn: nn.Module, tokenizer: Any, micro_iter: Iterator, config: TrainConfig,
                  device: torch.device, frozen: FrozenTowerCache | None,
                  scaler: torch.amp.GradScaler | None) -> StepStats:
    """``accum_scope=micro``: each micro-batch's loss on its own, divided by ``accum_steps``."""
    k = config.optim.accum_steps
    stats = StepStats.empty(device)
    for micro in range(k):
        batch = next(micro_iter)
        inputs = micro_inputs(batch, tokenizer, config, device, frozen)
        with grad_sync(net, micro == k - 1):
            with autocast(config, device):
                loss, parts = loss_fn(**net(*inputs), output_dict=True)
            _backward(loss / k, scaler)
        stats.add(_detached(loss, parts, 1 / k, [batch]))
    return stats


def _whole_batch_passes(net: nn.Module, model: nn.Module, loss_fn: nn.Module, inputs: list[tuple],
                        config: TrainConfig, device: torch.device,
                        scaler: torch.amp.GradScaler | None) -> tuple[Tensor, dict[str, Tensor]]:
    """``accum_scope=batch``: cached passes without gradients, then one pass with gradients per micro-batch,
    each scoring the loss over the whole accumulated batch; the loss and parts of the last pass."""
    k, rng, cached = len(inputs), _RngReplay(device), []
    with torch.no_grad(), _norm_statistics_kept(model), autocast(config, device):
        for x in inputs:
            rng.record()
            cached.append(net(*x))
    for j, x in enumerate(inputs):
        last = j == k - 1  # the scalars (logit scales, alpha) are live in the last pass, which also syncs
        with grad_sync(net, last):
            with rng.replay(j), autocast(config, device):
                outputs = merge_outputs(cached, net(*x), j, scalars_live=last)
                loss, parts = loss_fn(**outputs, output_dict=True)
            _backward(loss, scaler)
    return loss, parts


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, config: TrainConfig,
                    scaler: torch.amp.GradScaler | None) -> None:
    """Clip (after unscaling fp16 gradients), step (the scaler skips a step with non-finite gradients), schedule."""
    if scaler is not None:  # always: FSDP's scaler agrees over the ranks on an overflow here
        scaler.unscale_(optimizer)
    if config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    with torch.no_grad():  # as open_clip: keep the temperatures below 100
        model.clip.logit_scale.clamp_(0, math.log(100))
        if model.second_logit_scale is not None:
            model.second_logit_scale.clamp_(0, math.log(100))


def train_step(net: nn.Module, model: nn.Module, loss_fn: nn.Module, tokenizer: Any, micro_iter: Iterator,
               optimizer: torch.optim.Optimizer, scheduler: Any, config: TrainConfig, dist_info: DistInfo,
               frozen: FrozenTowerCache | None = None, *, scaler: torch.amp.GradScaler | None = None) -> StepStats:
    """One optimizer step over ``optim.accum_steps`` micro-batches of ``micro_iter`` (no host synchronisation).

    Args:
        net: the module to call (``model`` itself, or wrapped: DDP, FSDP2, ``torch.compile``,
            `CachedTowersForward` with ``frozen``).
        model: the `DALIPModel` (its parameters are clipped, its temperatures clamped).
        tokenizer: captions -> ``(b, L)`` token ids, for batches without ``tokens``.
        frozen: the frozen-tower cache; the batches then are keys (`KeyedBatch`).
        scaler: the fp16 loss scaler of `build_scaler` (None: no scaling).

    Returns:
        the step's `StepStats`: with ``accum_scope=batch`` the loss and parts of the whole accumulated
        batch, with ``micro`` their mean over the micro-batches.
    """
    o, device = config.optim, dist_info.device
    if o.accum_scope == "batch" and o.accum_steps > 1:
        batches = [next(micro_iter) for _ in range(o.accum_steps)]
        inputs = [micro_inputs(b, tokenizer, config, device, frozen) for b in batches]
        stats = _detached(*_whole_batch_passes(net, model, loss_fn, inputs, config, device, scaler), 1.0, batches)
    else:
        stats = _micro_passes(net, loss_fn, tokenizer, micro_iter, config, device, frozen, scaler)
    stats.steps = 1
    _optimizer_step(model, optimizer, scheduler, config, scaler)
    return stats
