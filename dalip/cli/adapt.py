"""``dalip adapt``: K-shot adaptation of a frozen model with every method, written as a report.

    dalip adapt --checkpoint runs/quickstart/checkpoint.pt --shots 1 2 4 8 16 --seeds 0 1 2 --output runs/few-shot
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from dalip.adapt.frozen import load_frozen_model
from dalip.adapt.harness import default_methods
from dalip.adapt.run import benchmark
from dalip.adapt.tasks import csv_task, twemoji_domain_task
from dalip.errors import ConfigError
from dalip.eval.encode import default_embeddings

__all__ = ["register", "run_adapt"]

SMOKE = {"shots": [1, 2], "seeds": [0], "views": 1, "steps": 20}


def register(commands: Any) -> None:
    """Add the ``adapt`` sub-command to ``dalip``'s sub-parsers."""
    p = commands.add_parser("adapt", help="few-shot adaptation of a frozen model (DAC adapter and baselines)")
    p.add_argument("--config", default="quickstart", help="model config name or YAML (default: quickstart)")
    p.add_argument("--checkpoint", default=None,
                   help="a dalip train checkpoint.pt (its config and trained heads); without one the "
                        "config's DALIP heads are untrained")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="K values")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="support-set seeds")
    p.add_argument("--embeddings", nargs="+", default=None,
                   help="first / second / combined (default: all the model has)")
    p.add_argument("--methods", nargs="+", default=None, help="subset of the methods (default: all)")
    p.add_argument("--views", type=int, default=4, help="augmented views per support image (default 4)")
    p.add_argument("--steps", type=int, default=200, help="training steps of the trained methods (default 200)")
    p.add_argument("--output", required=True, help="folder for results.csv / results.md / results.png")
    p.add_argument("--stem", default="results", help="file name stem of the outputs (default results)")
    p.add_argument("--smoke", action="store_true", help="tiny run: shots 1 2, seed 0, 1 view, 20 steps")
    p.add_argument("--dataset", choices=["twemoji-domain", "csv"], default="twemoji-domain")
    p.add_argument("--csv", default=None, help="--dataset csv: the CSV (image path and label columns)")
    p.add_argument("--csv-test", default=None, help="a test CSV (default: hold out --test-fraction per class)")
    p.add_argument("--csv-img-key", default="filepath")
    p.add_argument("--csv-label-key", default="title", help="the label column (a caption column = the label)")
    p.add_argument("--csv-separator", default="\t")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest for the small fits on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_adapt)


def check_args(args: argparse.Namespace) -> None:
    """Bad numbers and missing companions of the ``dalip adapt`` flags, before any model is loaded.

    Raises:
        ConfigError: non-positive shots / views / steps / threads, a negative seed, a test
            fraction outside (0, 1), ``--dataset csv`` without ``--csv``.
    """
    for flag, values, low in (("--shots", args.shots, 1), ("--seeds", args.seeds, 0), ("--views", [args.views], 1),
                              ("--steps", [args.steps], 1), ("--threads", [args.threads or 1], 1)):
        bad = [v for v in values if v < low]
        if bad:
            raise ConfigError(f"{flag} must be >= {low}, got {' '.join(map(str, bad))}")
    if not 0 < args.test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.dataset == "csv" and not args.csv:
        raise ConfigError("--dataset csv needs --csv PATH")


def run_adapt(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed ``dalip adapt`` arguments."""
    if args.smoke:
        args.shots, args.seeds, args.views, args.steps = SMOKE["shots"], SMOKE["seeds"], SMOKE["views"], SMOKE["steps"]
    check_args(args)
    methods = default_methods(args.steps)
    if args.methods:
        unknown = sorted(set(args.methods) - set(methods))
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown}; choose from {', '.join(methods)}")
        methods = {m: methods[m] for m in args.methods}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    frozen = load_frozen_model(args.config, args.checkpoint)
    if args.dataset == "csv":
        task = csv_task(args.csv, args.csv_test, args.csv_img_key, args.csv_label_key, args.csv_separator,
                        args.test_fraction, frozen.image_size)
    else:
        task = twemoji_domain_task()
    embeddings = args.embeddings or default_embeddings(frozen.model)
    command = "dalip adapt " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["adapt"] else ""
    benchmark(frozen, task, args.output, args.shots, args.seeds, embeddings, methods, args.views, args.stem,
              command, progress=not args.quiet)
    print(f"results written to {args.output}/{args.stem}.{{csv,md,png}}")
    return 0
