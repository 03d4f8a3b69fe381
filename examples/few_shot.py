"""Few-shot adaptation of a frozen model on the Twemoji domain subset (DAC adapter vs baselines).

Caches the frozen model's features once, then fits zero-shot, a linear probe,
Tip-Adapter, Tip-Adapter-F and the DAC-style adapter (with ablations) on K-shot
support sets and prints mean +- std test accuracy:

    python examples/few_shot.py --smoke                                  # a minute on a CPU
    python examples/few_shot.py --checkpoint runs/quickstart/checkpoint.pt --output runs/few-shot

Without ``--checkpoint`` the quickstart's second-order heads are untrained;
train them first with ``dalip train --config quickstart --output runs/quickstart``.
"""

import argparse
from pathlib import Path

from dalip.adapt import benchmark, default_methods, few_shot_markdown, load_frozen_model, twemoji_domain_task

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--config", default="quickstart", help="model config (ignored with --checkpoint)")
parser.add_argument("--checkpoint", default=None, help="a dalip train checkpoint.pt")
parser.add_argument("--output", default="runs/few-shot-example", help="folder for results.{csv,md,png}")
parser.add_argument("--smoke", action="store_true", help="1 and 2 shots, one seed, 20 steps, first order only")
args = parser.parse_args()

if args.checkpoint is None and Path("runs/quickstart/checkpoint.pt").is_file():
    args.checkpoint = "runs/quickstart/checkpoint.pt"
frozen = load_frozen_model(args.config, args.checkpoint)
print(f"frozen model: {frozen.source}")
if args.smoke:
    settings = {"shots": (1, 2), "seeds": (0,), "embeddings": ("first",), "views": 1, "methods": default_methods(20, False)}
else:
    settings = {"shots": (1, 2, 4, 8, 16), "seeds": (0, 1, 2), "embeddings": ("first", "second", "combined")}
rows = benchmark(frozen, twemoji_domain_task(), args.output, progress=not args.smoke, **settings)
print(few_shot_markdown(rows))
print(f"table and plot written to {args.output}/results.{{csv,md,png}}")
