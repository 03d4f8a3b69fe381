"""``dalip train``: train a model from a config (or resume / overwrite a run folder), then evaluate it."""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip._optional import require
from dalip.runs import load_config
from dalip.train import train

__all__ = ["register"]


def _train(args: argparse.Namespace) -> int:
    require("matplotlib.figure", "train", "dalip train (its training.png)")  # before the run, not after it
    output = Path(args.output)
    saved = output / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        config = load_config(saved, args.overrides)  # the run's own resolved config (+ overrides, checked by train)
    else:
        config = load_config(args.config or "quickstart", args.overrides)
    train(config, output, resume=args.resume, overwrite=args.overwrite)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    train = commands.add_parser("train", help="train a model from a config, then evaluate it")
    train.add_argument("--config", default=None,
                       help="shipped config name or YAML path (default: quickstart; with --resume: the run's own "
                       "config.yaml, and a given --config must not change the run's settings)")
    train.add_argument("--output", required=True, help="run folder (config, metrics, checkpoint, eval.json, plot)")
    runs = train.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in OUTPUT from its newest intact checkpoint")
    runs.add_argument("--overwrite", action="store_true",
                      help="delete the run already in OUTPUT (its own files) and start again")
    train.add_argument("overrides", nargs="*", help="config overrides: section.key=value")
    train.set_defaults(run=_train)
