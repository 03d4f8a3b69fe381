"""Training steps with and without the frozen-tower cache (``model.cache_frozen``), in one run.

Two trainers of the same config (quickstart: frozen EfficientNet-Lite0 + MiniLM on the
embedded Twemoji data, ``data.spec.augment=false`` so the cache applies) start from the same
weights; rounds of steps alternate between them and the medians of the rounds' images/s
are compared (the machine is shared: alternating spreads the noise over both). Both walk
the same batches, so their per-step losses must agree exactly: the report checks it.
Also reported: the cache's build time and footprint (it lives in memory; nothing is
written to the run folder).

    python benchmarks/frozen_cache.py [--rounds 5] [--plain-steps 3] [--cached-steps 15] [--out FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _common as C  # also puts the repo root on sys.path

from dalip.runs.config import load_config
from dalip.train.builders import set_train_mode
from dalip.train.loop import Trainer
from dalip.train.step import train_step


def _steps(trainer: Trainer, steps: int) -> tuple[float, list[float]]:
    """Seconds for ``steps`` training steps (data loading included) and their losses."""
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        set_train_mode(trainer.model, trainer.config)
        stats = train_step(trainer.net, trainer.model, trainer.loss_fn, trainer.tokenizer, trainer.micro_batches,
                            trainer.optimizer, trainer.scheduler, trainer.config, trainer.dist, trainer.frozen)
        losses.append(stats.loss.item())  # a host read per step, as logging every step would
    return time.perf_counter() - start, losses


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plain-steps", type=int, default=3, help="steps per round without the cache")
    ap.add_argument("--cached-steps", type=int, default=15, help="steps per round with the cache")
    ap.add_argument("--out", default=None, help="markdown report (default: print only)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data.batch_size=32")
    args = ap.parse_args(argv)
    machine = C.machine_lines("cpu")
    base = ["data.spec.augment=false", "run.log_every=1000000", "run.checkpoint_every=1000000", *args.overrides]
    trainers, setup = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("false", "true"):
            start = time.perf_counter()
            config = load_config(args.config, [*base, f"model.cache_frozen={flag}"])
            trainers[flag] = Trainer(config, Path(tmp) / f"cache_{flag}", resume=False)
            setup[flag] = time.perf_counter() - start
        plain, cached = trainers["false"], trainers["true"]
        batch = plain.config.data.batch_size
        warm = {flag: _steps(t, 1)[1] for flag, t in trainers.items()}  # the loaders' workers start
        rates: dict[str, list[float]] = {"false": [], "true": []}
        losses = {flag: list(warm[flag]) for flag in trainers}
        for _ in range(args.rounds):
            for flag, steps in (("false", args.plain_steps), ("true", args.cached_steps)):
                seconds, step_losses = _steps(trainers[flag], steps)
                rates[flag].append(steps * batch / seconds)
                losses[flag] += step_losses
        common = min(len(losses["false"]), len(losses["true"]))
        same = losses["false"][:common] == losses["true"][:common]
        frozen = cached.frozen
        for t in trainers.values():
            t.log.close()
    n_images, n_texts = len(frozen.images), len(frozen.texts)
    image_bytes, text_bytes = frozen.images.nbytes(), frozen.texts.nbytes()
    plain_rate, cached_rate = statistics.median(rates["false"]), statistics.median(rates["true"])
    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in frozen.images.row_shapes().items())
    text_shapes = ", ".join(f"{k} {tuple(v)}" for k, v in frozen.texts.row_shapes().items())
    lines = [
        f"# Frozen-tower cache: training steps with and without `model.cache_frozen` ({args.config}, cpu)",
        "",
        "- machine: 2-core CPU development machine, AMD EPYC VM",
        *machine,
        (f"- config: `{args.config}` + `{' '.join(base[:1] + args.overrides)}`; batch {batch}, "
        f"{plain.config.data.workers} loader workers; the image projection `clip.visual.head` and the heads train"),
        (f"- {args.rounds} alternating rounds of {args.plain_steps} uncached / {args.cached_steps} cached steps "
        "(after one warm-up step each); images/s = batch x steps / round time, data loading included"),
        "",
        "| round | without cache (images/s) | with cache (images/s) |",
        "|---:|---:|---:|",
        *(f"| {i + 1} | {a:.1f} | {b:.1f} |" for i, (a, b) in enumerate(zip(rates["false"], rates["true"]))),
        f"| **median** | **{plain_rate:.1f}** | **{cached_rate:.1f}** |",
        "",
        f"- speed-up with the cache (median images/s ratio): **{cached_rate / plain_rate:.1f}x**",
        f"- per-step losses of the two runs over their first {common} steps identical: **{same}**",
        (f"- cache build (both frozen towers over every training image and every caption it can draw): "
        f"**{frozen.build_seconds:.1f} s**; trainer set-up {setup['true']:.1f} s with the cache, "
        f"{setup['false']:.1f} s without"),
        (f"- footprint (fp32, in memory on the training device; nothing is written to disk): "
        f"**{_mib(image_bytes + text_bytes)}** in all"),
        (f"  - images: {n_images} x {image_bytes / max(n_images, 1) / 1024:.1f} KiB = {_mib(image_bytes)} "
        f"(per image: {shapes})"),
        (f"  - captions: {n_texts} distinct (every Twemoji template of every image) x "
        f"{text_bytes / max(n_texts, 1) / 1024:.1f} KiB = {_mib(text_bytes)} (per caption: {text_shapes})"),
        f"  - per training sample: {(image_bytes + text_bytes) / max(n_images, 1) / 1024:.1f} KiB",
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        C.write_report(text, args.out)
    else:
        print(text)
    if not same:
        raise SystemExit("the cached run's losses differ from the uncached run's")


if __name__ == "__main__":
    main()
