"""DALIP vs plain CLIP: time of one training step of dalip's recipe, same backbone, one run.

Issue 8, item 2: the DALIP model (the towers' [cls] / EOT outputs as first order,
``mbdc_paper`` on the tokens of both towers as second order, ``distribution`` loss)
against the same backbone trained as plain CLIP (``clip`` loss, no second order).
One step is exactly the recipe's optimizer step (``dalip.train.loop._train_step``:
autocast forward, loss, backward, fused AdamW and scheduler), on one
fixed synthetic batch already on the device, so the data pipeline is left out
(``vs_open_clip_train.py`` measures the whole recipe with real data).

* time: median (and min) over ``--steps`` steps after ``--warmup``, the variants
  timed round-robin (one step each in turn), the device synchronised around each step;
* peak memory (CUDA): ``max_memory_allocated`` during one step minus allocated before it;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one step (matrix products
  and convolutions, forward and backward), so the time ratio can be read against
  the ratio the arithmetic allows.

    python benchmarks/train_step.py                     # GPU: ViT-B-16, batch 256, bf16
    python benchmarks/train_step.py --device cpu --model tests/assets/tiny-clip.json \\
        --batch 8 --steps 3 --warmup 1 --precision fp32  # CPU smoke run

Writes ``results/train_step_<device>.md`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
from dalip.data import Batch
from dalip.losses import create_loss
from dalip.models import get_tokenizer
from dalip.pooling import value_checks
from dalip.train.config import config_from_dict
from dalip.train.distributed import DistInfo
from dalip.train.builders import build_model, build_optimizer, set_train_mode
from dalip.train.loop import _train_step

GOAL = 1.05  # DALIP step time / CLIP step time
#: the compared recipes: model and loss sections of a training config
VARIANTS = {
    "clip": {"model": {"first_order": "tower", "second_order": None}, "loss": {"name": "clip"}},
    "dalip": {"model": {"first_order": "tower", "second_order": "mbdc_paper"}, "loss": {"name": "distribution"}},
}
CAPTIONS = ["a photo of a dog", "an emoji of a red heart", "a smiling face with sunglasses", "two cats on a sofa"]


@dataclass
class Recipe:
    name: str
    step: Callable[[], None]
    params: int


def build_recipe(name: str, args, device: torch.device) -> Recipe:
    """One variant: model, optimizer, loss and a fixed batch on ``device``."""
    torch.manual_seed(0)
    sections = VARIANTS[name]
    config = config_from_dict({
        "model": {"name": args.model, **sections["model"]},
        "loss": sections["loss"],
        "data": {"batch_size": args.batch},
        "optim": {"warmup_steps": 0, "steps": 10**6},
        "run": {"precision": args.precision},
    })
    model = build_model(config).to(device)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    options = {"alpha": config.model.alpha} if config.loss.name == "distribution" else {}
    loss_fn = create_loss(config.loss.name, **options)
    size = getattr(model.clip.visual, "image_size", 224)
    size = size if isinstance(size, (tuple, list)) else (size, size)
    images = torch.randn(args.batch, 3, *size, device=device)
    texts = get_tokenizer(args.model)([CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)]).to(device)
    batches = itertools.repeat(Batch(images, texts))  # type: ignore[arg-type]  (texts pre-tokenised)
    dist_info = DistInfo(rank=0, local_rank=0, world_size=1, device=device)

    def step() -> None:  # as dalip.train.loop.train runs it: data-dependent input checks off (they sync)
        set_train_mode(model, config)
        with value_checks(config.run.value_checks):
            _train_step(model, model, loss_fn, lambda t: t, batches, optimizer, scheduler, config, dist_info)

    return Recipe(name, step, sum(p.numel() for p in model.parameters()))


def time_recipes(recipes: list[Recipe], steps: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Round-robin step times in seconds."""
    times: dict[str, list[float]] = {r.name: [] for r in recipes}
    for i in range(warmup + steps):
        for r in recipes:
            C.sync(device)
            t0 = time.perf_counter()
            r.step()
            C.sync(device)
            if i >= warmup:
                times[r.name].append(time.perf_counter() - t0)
        print(f"step {i + 1}/{warmup + steps}", file=sys.stderr)
    return times


def peak_step_bytes(recipe: Recipe, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    recipe.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def report(args, device: torch.device, recipes: list[Recipe], times, peaks, flops) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"# Training step: DALIP vs plain CLIP ({device.type})",
        "",
        *C.machine_lines(device.type),
        f"- model {args.model}, batch {args.batch}, precision {args.precision}; one step = dalip's recipe step"
        " (autocast forward, loss, backward, AdamW, scheduler) on a fixed synthetic batch on the device",
        "- variants: `clip` = the towers' outputs, `clip` loss; `dalip` = the same plus `mbdc_paper` on the"
        " tokens of both towers, `distribution` loss",
        "",
        "| variant | parameters (M) | step median (ms) | min (ms) | images/s | step peak memory (GiB) | GFLOP/step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recipes:
        ts = times[r.name]
        peak = f"{peaks[r.name] / 2**30:.2f}" if peaks.get(r.name) is not None else "-"
        lines.append(
            f"| {r.name} | {r.params / 1e6:.1f} | {1e3 * med[r.name]:.1f} | {1e3 * min(ts):.1f} |"
            f" {args.batch / med[r.name]:.0f} | {peak} | {flops[r.name] / 1e9:.3g} |"
        )
    ratio = med["dalip"] / med["clip"]
    lines += [
        "",
        f"- step time ratio dalip / clip: **{ratio:.3f}** (goal <= {GOAL}: {'met' if ratio <= GOAL else 'MISSED'})",
        f"- FLOP ratio dalip / clip: {flops['dalip'] / flops['clip']:.3f} (what the arithmetic alone allows)",
        f"- medians over {args.steps} round-robin steps after {args.warmup} warm-up",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16", help="open_clip architecture, dalip config or config JSON")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--out", help="results file (default results/train_step_<device>.md)")
    args = ap.parse_args(argv)
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(kind)
    if os.path.isfile(args.model):
        args.model = os.path.abspath(args.model)
    recipes = [build_recipe(name, args, device) for name in VARIANTS]
    times = time_recipes(recipes, args.steps, args.warmup, device)
    peaks = {r.name: peak_step_bytes(r, device) for r in recipes}
    flops = {r.name: C.step_flops(r.step) for r in recipes}
    out = args.out or os.path.join(C.RESULTS, f"train_step_{kind}.md")
    C.write_report(report(args, device, recipes, times, peaks, flops), out)


if __name__ == "__main__":
    main()
