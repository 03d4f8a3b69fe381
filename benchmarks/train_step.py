"""DALIP vs plain CLIP: time of one training step of dalip's recipe, same backbone, one run.

Issue 8, item 2: the DALIP model (the towers' [cls] / EOT outputs as first order,
``mbdc_paper`` on the tokens of both towers as second order, ``distribution`` loss)
against the same backbone trained as plain CLIP (``clip`` loss, no second order).
One step is exactly the recipe's optimizer step (``dalip.train.step.train_step``:
autocast forward, loss, backward, fused AdamW and scheduler), on one
fixed synthetic batch already on the device, so the data pipeline is left out
(``vs_open_clip_train.py`` measures the whole recipe with real data).

* time: median (and min) over ``--steps`` steps after ``--warmup``, the variants
  timed round-robin (one step each in turn), the device synchronised around each step,
  repeated for ``--rounds`` rounds; the ratio is the median of all paired step ratios
  (dalip's step / the adjacent clip step's), also given per round with its spread;
* phases: forward + loss, backward, clipping, optimizer and ``zero_grad`` of a few more steps;
* process: glibc keeps freed large blocks, as ``dalip train`` sets it (``--system-allocator``: not);
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
import contextlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import _common as C
import torch

from dalip.cli.allocator import keep_freed_memory
from dalip.data import Batch
from dalip.losses import create_loss
from dalip.models import get_tokenizer
from dalip.pooling import value_checks
from dalip.runs.config import config_from_dict
from dalip.runs.model import build_model
from dalip.train.builders import build_optimizer, set_train_mode
from dalip.train.distributed import DistInfo
from dalip.train.precision import build_scaler, prepare_precision
from dalip.train.step import train_step

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
    optimizer: torch.optim.Optimizer


@contextlib.contextmanager
def phase_timer(recipe: Recipe, device: torch.device) -> Iterator[dict[str, float]]:
    """Seconds spent in backward, gradient clipping, ``optimizer.step`` and ``zero_grad`` (summed) while inside.

    The functions the recipe step calls are wrapped for the duration (device
    synchronised around each); the rest of a step is forward + loss + scheduler.
    """
    spent: dict[str, float] = {"backward": 0.0, "grad clipping": 0.0, "optimizer": 0.0, "zero_grad": 0.0}

    def timed(phase: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            C.sync(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            C.sync(device)
            spent[phase] += time.perf_counter() - t0
            return out
        return wrapper

    originals = [(torch.Tensor, "backward"), (torch.nn.utils, "clip_grad_norm_"),
                 (recipe.optimizer, "step"), (recipe.optimizer, "zero_grad")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in originals]
    phases = list(spent)
    try:
        for (owner, name, fn), phase in zip(saved, phases):
            setattr(owner, name, timed(phase, fn))
        yield spent
    finally:
        for owner, name, fn in saved:
            if owner is recipe.optimizer:
                delattr(owner, name)  # back to the class's method
            else:
                setattr(owner, name, fn)


def build_recipe(name: str, args, device: torch.device) -> Recipe:
    """One variant: model, optimizer, loss and a fixed batch on ``device``."""
    torch.manual_seed(0)
    sections = VARIANTS[name]
    config = config_from_dict({
        "model": {"name": args.model, **sections["model"]},
        "loss": sections["loss"],
        "data": {"batch_size": args.batch, "spec": {"dataset": "twemoji"}},
        "optim": {"warmup_steps": 0, "steps": 10**6},
        "run": {"precision": args.precision},
    })
    model = prepare_precision(build_model(config).to(device), config)
    optimizer = build_optimizer(model, config)
    scaler = build_scaler(config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    options = {"alpha": config.model.alpha} if config.loss.name == "distribution" else {}
    loss_fn = create_loss(config.loss.name, **options)
    size = getattr(model.clip.visual, "image_size", 224)
    size = size if isinstance(size, (tuple, list)) else (size, size)
    images = torch.randn(args.batch, 3, *size, device=device)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)]
    batches = itertools.repeat(Batch(images, captions, tokens=get_tokenizer(args.model)(captions).to(device)))
    dist_info = DistInfo(rank=0, local_rank=0, world_size=1, device=device)

    def step() -> None:  # as dalip.train.loop.train runs it: data-dependent input checks off (they sync)
        set_train_mode(model, config)
        with value_checks(config.run.value_checks):
            train_step(model, model, loss_fn, None, batches, optimizer, scheduler, config, dist_info, scaler=scaler)

    return Recipe(name, step, sum(p.numel() for p in model.parameters()), optimizer)


def time_recipes(recipes: list[Recipe], steps: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Step times in seconds, round-robin: one step of each variant in turn, the order reversed every
    other step (neither variant always runs right after the other's step)."""
    times: dict[str, list[float]] = {r.name: [] for r in recipes}
    for i in range(warmup + steps):
        for r in recipes if i % 2 == 0 else recipes[::-1]:
            C.sync(device)
            t0 = time.perf_counter()
            r.step()
            C.sync(device)
            if i >= warmup:
                times[r.name].append(time.perf_counter() - t0)
        print(f"step {i + 1}/{warmup + steps}", file=sys.stderr)
    return times


def paired_ratio(times: dict[str, list[float]]) -> float:
    """Median over steps of dalip's step time / the adjacent clip step's: a slow spell of the machine
    hits both steps of a pair, so this is steadier than a ratio of medians."""
    return statistics.median(d / c for d, c in zip(times["dalip"], times["clip"]))


def peak_step_bytes(recipe: Recipe, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    recipe.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def phase_medians(recipes: list[Recipe], steps: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Median seconds per phase (`phase_timer`) over ``steps`` round-robin steps, after the timed rounds."""
    rows: dict[str, list[dict[str, float]]] = {r.name: [] for r in recipes}
    for _ in range(steps):
        for r in recipes:
            with phase_timer(r, device) as spent:
                C.sync(device)
                t0 = time.perf_counter()
                r.step()
                C.sync(device)
                total = time.perf_counter() - t0
            rows[r.name].append({"forward + loss": total - sum(spent.values()), **spent, "step": total})
    return {name: {k: statistics.median(row[k] for row in rs) for k in rs[0]} for name, rs in rows.items()}


def report(args, device: torch.device, recipes: list[Recipe], rounds, peaks, flops, phases, allocator: bool) -> str:
    """``rounds``: one ``{variant: [step seconds]}`` per round."""
    flop_ratio = flops["dalip"] / flops["clip"]
    goal = GOAL if device.type == "cuda" else round(GOAL * flop_ratio, 3)  # CPU: relative to the arithmetic
    times = {r.name: [t for rnd in rounds for t in rnd[r.name]] for r in recipes}
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [paired_ratio(rnd) for rnd in rounds]
    pooled = paired_ratio({name: [t for rnd in rounds for t in rnd[name]] for name in ("clip", "dalip")})
    lines = [
        f"# Training step: DALIP vs plain CLIP ({device.type})",
        "",
        *C.machine_lines(device.type),
        (f"- model {args.model}, batch {args.batch}, precision {args.precision}; one step = dalip's recipe step"
        " (autocast forward, loss, backward, gradient clipping, fused AdamW, scheduler) on a fixed synthetic"
        " batch on the device"),
        ("- variants: `clip` = the towers' outputs, `clip` loss; `dalip` = the same plus `mbdc_paper` on the"
        " tokens of both towers, `distribution` loss"),
        (f"- process: glibc keeps freed large blocks (`dalip.cli.allocator.keep_freed_memory`, as `dalip train`"
        f" does): {'on' if allocator else 'OFF (--system-allocator)'}"),
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
    met = pooled <= goal
    lines += [
        "",
        (f"- step time ratio dalip / clip: **{pooled:.3f}** (median of all {len(times['clip'])} paired step ratios;"
        f" goal <= {goal}{' = 1.05 x the FLOP ratio' if device.type != 'cuda' else ''}: {'met' if met else 'MISSED'})"),
        f"- per round: {', '.join(f'{x:.3f}' for x in ratios)} (spread {max(ratios) - min(ratios):.3f})",
        f"- FLOP ratio dalip / clip: {flop_ratio:.3f} (what the arithmetic alone allows)",
        (f"- {len(rounds)} rounds of {args.steps} round-robin steps after {args.warmup} warm-up; a round's ratio is the"
        " median over its steps of dalip's time / the adjacent clip step's (ratio of the medians over all rounds:"
        f" {med['dalip'] / med['clip']:.3f})"),
        "",
        "Where a step's time goes (median ms over a few more steps, functions timed in place):",
        "",
        "| phase | " + " | ".join(r.name for r in recipes) + " | dalip - clip |",
        "|---|" + "---:|" * (len(recipes) + 1),
    ]
    for phase in phases[recipes[0].name]:
        values = [1e3 * phases[r.name][phase] for r in recipes]
        lines.append(f"| {phase} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {values[-1] - values[0]:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16", help="open_clip architecture, dalip config or config JSON")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", choices=("bf16", "fp32", "fp16", "pure_bf16"), default="bf16")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4, help="timing rounds (the ratio is also reported per round)")
    ap.add_argument("--phase-steps", type=int, default=4, help="extra steps timed per phase (0: no breakdown)")
    ap.add_argument("--system-allocator", action="store_true",
                    help="leave glibc's defaults (dalip train keeps freed large blocks; see dalip.cli.allocator)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--out", help="results file (default results/train_step_<device>.md)")
    args = ap.parse_args(argv)
    allocator = not args.system_allocator and keep_freed_memory()  # the process setting of `dalip train`
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(kind)
    if os.path.isfile(args.model):
        args.model = os.path.abspath(args.model)
    recipes = [build_recipe(name, args, device) for name in VARIANTS]
    rounds = [time_recipes(recipes, args.steps, args.warmup if i == 0 else 1, device) for i in range(args.rounds)]
    phases = phase_medians(recipes, args.phase_steps, device) if args.phase_steps else {r.name: {} for r in recipes}
    peaks = {r.name: peak_step_bytes(r, device) for r in recipes}
    flops = {r.name: C.step_flops(r.step) for r in recipes}
    out = args.out or os.path.join(C.RESULTS, f"train_step_{kind}.md")
    C.write_report(report(args, device, recipes, rounds, peaks, flops, phases, allocator), out)


if __name__ == "__main__":
    main()
