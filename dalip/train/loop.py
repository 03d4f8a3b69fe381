"""The training loop: ``train(config, output)``.

One optimizer step = ``accum_steps`` micro-batches. The data order, the
augmentation of every sample and the model's dropout are functions of the seed
and the step, and every checkpoint stores the RNG state, so a resumed run
produces the same subsequent losses as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..losses import create_loss
from ..models import DALIPModel, create_model, get_tokenizer
from ..pooling import value_checks
from .checkpoint import atomic_save, capture_rng, load_training_checkpoint, restore_rng
from .config import TrainConfig, config_to_dict, save_config
from .data_loading import TrainBatches, build_data
from .distributed import init_distributed
from .schedule import warmup_cosine

__all__ = ["build_model", "build_optimizer", "train"]

log = logging.getLogger("dalip.train")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def build_model(config: TrainConfig, load_weights: bool = True) -> DALIPModel:
    """The DALIP model of a config, with tower locking and gradient checkpointing applied.

    ``load_weights=False`` builds the architecture only (no ``model.pretrained``, hub or
    packaged weights), for loading a checkpoint that holds every weight.
    """
    m = config.model
    model = create_model(
        m.name,
        pretrained=m.pretrained if load_weights else None,
        first_order=m.first_order,
        second_order=m.second_order,
        second_options=m.second_options,
        alpha=m.alpha,
        separate_second_scale=m.separate_second_scale,
        pretrained_towers=load_weights,
        **m.open_clip,
    )
    if load_weights and (m.pretrained or ":" in m.name):  # say where the towers came from
        print(f"model {m.name}: {model.load_report}", flush=True)
    if m.lock_image:
        with warnings.catch_warnings():  # open_clip imports timm's deprecated helpers module
            warnings.simplefilter("ignore", FutureWarning)
            # open_clip's own BN freezing turns timm's BatchNormAct2d into a plain frozen BN and
            # drops its activation (EfficientNet's outputs then explode); timm's keeps it
            model.clip.lock_image_tower(unlocked_groups=m.unlocked_image_groups, freeze_bn_stats=False)
        trunk = getattr(model.clip.visual, "trunk", None)
        if trunk is not None and m.unlocked_image_groups == 0:
            from timm.layers import freeze_batch_norm_2d

            model.clip.visual.trunk = freeze_batch_norm_2d(trunk)
    if m.lock_text:
        model.clip.lock_text_tower(unlocked_layers=m.unlocked_text_layers, freeze_layer_norm=True)
    if m.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    if m.channels_last:  # 4-d (conv) weights only; convolutions then run NHWC, inputs may stay NCHW
        model.to(memory_format=torch.channels_last)
    return model


def set_train_mode(model: DALIPModel, config: TrainConfig) -> None:
    """Train mode, except fully locked towers stay in eval mode (no dropout, fixed norms)."""
    model.train()
    m = config.model
    if m.lock_image and m.unlocked_image_groups == 0:
        model.clip.visual.eval()
    if m.lock_text and m.unlocked_text_layers == 0:
        getattr(model.clip, "text", getattr(model.clip, "transformer", None)).eval()


def build_optimizer(model: DALIPModel, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW: towers at ``lr``, new heads (and ``head_patterns``) at ``head_lr``; no decay on
    gains, biases, norms and the logit scale."""
    o = config.optim
    heads = {id(p) for p in model.head_parameters()}
    heads |= {id(p) for n, p in model.named_parameters() if any(fnmatch.fnmatchcase(n, pat) for pat in o.head_patterns)}
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "heads": [], "heads_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "logit_scale" in name or "logit_bias" in name
        key = ("heads" if id(p) in heads else "decay") if not no_decay else ("heads_no_decay" if id(p) in heads else "no_decay")
        groups[key].append(p)
    lr = {"decay": o.lr, "no_decay": o.lr, "heads": o.head_lr, "heads_no_decay": o.head_lr}
    decay = {"decay": o.weight_decay, "heads": o.weight_decay, "no_decay": 0.0, "heads_no_decay": 0.0}
    params = [{"params": ps, "lr": lr[k], "weight_decay": decay[k], "name": k} for k, ps in groups.items() if ps]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(params, betas=tuple(o.betas), eps=o.eps, fused=fused or None)


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    precision = config.run.precision
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class MetricsLog:
    """Metrics as JSON lines (and TensorBoard scalars when ``run.tensorboard``)."""

    def __init__(self, output: Path, rows: list[dict], tensorboard: bool) -> None:
        self.path, self.rows = output / METRICS, rows
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # drop steps after the checkpoint
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("run.tensorboard=true needs the 'tensorboard' package (pip install tensorboard)") from err
            self.writer = SummaryWriter(str(output / "tensorboard"))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def _micro_batches(batches: TrainBatches, start: int) -> Iterator[Any]:
    micro = start
    while True:
        yield batches.get(micro)
        micro += 1


@dataclass
class StepStats:
    """Losses and counts of one optimizer step, or summed over a logging window."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    steps: int = 0
    images: int = 0
    skipped: int = 0

    @classmethod
    def empty(cls, device: torch.device) -> "StepStats":
        return cls(torch.zeros((), device=device), {})

    def add(self, other: "StepStats") -> None:
        self.loss = self.loss + other.loss
        for key, value in other.parts.items():
            self.parts[key] = self.parts.get(key, 0) + value
        self.steps += other.steps
        self.images += other.images
        self.skipped += other.skipped

    def means(self) -> dict[str, float]:
        """Mean loss and parts per step (one host sync, at logging time only)."""
        n = max(self.steps, 1)
        return {"loss": self.loss.item() / n, **{f"loss/{k}": v.item() / n for k, v in self.parts.items()}}


def _train_step(net, model, loss_fn, tokenizer, micro_iter, optimizer, scheduler, config, dist_info) -> StepStats:
    """One optimizer step over ``accum_steps`` micro-batches (no host synchronisation)."""
    o = config.optim
    stats = StepStats.empty(dist_info.device)
    stats.steps = 1
    for micro in range(o.accum_steps):
        batch = next(micro_iter)
        images = batch.images.to(dist_info.device, non_blocking=True)
        texts = tokenizer(batch.texts).to(dist_info.device, non_blocking=True)
        last = micro == o.accum_steps - 1
        no_sync = net.no_sync() if isinstance(net, DistributedDataParallel) and not last else contextlib.nullcontext()
        with no_sync, _autocast(config, dist_info.device):
            out = net(images, texts)
            loss, parts = loss_fn(**out, output_dict=True)
        (loss / o.accum_steps).backward()
        stats.add(StepStats(loss.detach() / o.accum_steps,
                            {k: v.detach().float() / o.accum_steps for k, v in parts.items()},
                            images=images.shape[0], skipped=batch.skipped))
    if o.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    with torch.no_grad():  # as open_clip: keep the temperatures below 100
        model.clip.logit_scale.clamp_(0, math.log(100))
        if model.second_logit_scale is not None:
            model.second_logit_scale.clamp_(0, math.log(100))
    return stats


def train(config: TrainConfig, output: str | Path, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train, checkpoint, evaluate; returns the evaluation results (main process).

    Args:
        config: the resolved config.
        output: run folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt``,
            ``eval.json``, ``training.png``.
        resume: continue from ``output/checkpoint.pt`` when it exists.
        stop_after: stop (with a checkpoint) after this many optimizer steps in
            this call, without the final evaluation (for tests and job limits).
    """
    dist_info = init_distributed()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.run.seed)
    model = build_model(config).to(dist_info.device)
    tokenizer = get_tokenizer(config.model.name)
    loss_options = dict(config.loss.options)
    if config.loss.name == "distribution":
        loss_options.setdefault("alpha", config.model.alpha)
    loss_fn = create_loss(config.loss.name, **loss_options)
    optimizer = build_optimizer(model, config)
    o = config.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, o.warmup_steps, o.steps))
    data = build_data(config, dist_info, model)

    step, metrics = 0, []
    checkpoint_path = output / CHECKPOINT
    if resume and checkpoint_path.is_file():
        state = load_training_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        restore_rng(state["rng"])
        metrics = _read_metrics(output / METRICS, step)
        if dist_info.is_main:
            print(f"resumed from {checkpoint_path} at step {step}/{o.steps}")
    log_metrics = None
    if dist_info.is_main:
        save_config(config, output / "config.yaml")
        log_metrics = MetricsLog(output, metrics, config.run.tensorboard)

    net: nn.Module = model
    if dist_info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dist_info.device] if dist_info.device.type == "cuda" else None)
    if config.model.compile:
        net = torch.compile(net)

    def save_checkpoint() -> None:
        if dist_info.is_main:
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "rng": capture_rng(),
                    "config": config_to_dict(config),
                },
                checkpoint_path,
            )

    def evaluate_during_training(at_step: int) -> None:
        if dist_info.is_main:
            from .evaluate import evaluate_run

            evaluate_run(model, tokenizer, data.eval_sets, config, output / f"eval_step{at_step}.json")
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    micro_iter = _micro_batches(data.train, step * o.accum_steps)
    target = o.steps if stop_after is None else min(o.steps, step + stop_after)
    skipped_total = sum(r.get("skipped", 0) for r in metrics)
    bar = tqdm(total=o.steps, initial=step, desc="train", unit="step", disable=not dist_info.is_main)
    window = StepStats.empty(dist_info.device)
    window_start = time.perf_counter()
    with value_checks(config.run.value_checks):
        while step < target:
            set_train_mode(model, config)
            stats = _train_step(net, model, loss_fn, tokenizer, micro_iter, optimizer, scheduler, config, dist_info)
            window.add(stats)
            step += 1
            skipped_total += stats.skipped
            bar.update(1)
            if dist_info.is_main and (step % config.run.log_every == 0 or step == target):
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": step,
                    **window.means(),
                    "lr": scheduler.get_last_lr()[0],
                    "head_lr": scheduler.get_last_lr()[-1],
                    "logit_scale": model.clip.logit_scale.exp().item(),
                    "images_per_s": window.images * dist_info.world_size / max(elapsed, 1e-9),
                    "skipped": window.skipped,
                }
                if dist_info.device.type == "cuda":  # peak since the start of the run, this process
                    row["max_memory_gib"] = torch.cuda.max_memory_allocated(dist_info.device) / 2**30
                window, window_start = StepStats.empty(dist_info.device), time.perf_counter()
                log_metrics.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if step % config.run.checkpoint_every == 0 or step == target:
                save_checkpoint()
            if config.eval.every and step % config.eval.every == 0 and step < o.steps:
                evaluate_during_training(step)
    bar.close()
    if log_metrics is not None:
        log_metrics.close()
    if skipped_total and dist_info.is_main:
        print(f"skipped {skipped_total} unreadable samples (see the log for their paths)")
    if step < o.steps:
        return {}
    results: dict = {}
    if dist_info.is_main:
        from .evaluate import finish_run

        results = finish_run(model, tokenizer, data, config, output, metrics)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return results
