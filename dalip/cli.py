"""The ``dalip`` command line: ``train``, ``eval``, ``demo`` and the commands of
the modules in ``COMMAND_MODULES`` (each has ``register(commands)`` adding its
sub-parsers with a ``run`` default)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["COMMAND_MODULES", "main"]

COMMAND_MODULES: list[str] = ["dalip.sweep.cli", "dalip.adapt.cli"]
"""Modules contributing sub-commands; each defines ``register(commands)`` adding its sub-parsers."""


def _train(args: argparse.Namespace) -> int:
    from .train import load_config, train

    output = Path(args.output)
    saved = output / "config.yaml"
    if args.resume and saved.is_file():
        config = load_config(saved, args.overrides)  # the run's own resolved config
    else:
        config = load_config(args.config, args.overrides)
    train(config, output, resume=args.resume)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .train.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.output, args.overrides)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    print(format_table(run_demo(image_size=args.image_size, poolers=args.poolers)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalip", description="Distribution-aligned language-image pre-training.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a config, then evaluate it")
    train.add_argument("--config", default="quickstart", help="shipped config name or YAML path (default: quickstart)")
    train.add_argument("--output", required=True, help="run folder (config, metrics, checkpoint, eval.json, plot)")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    train.add_argument("overrides", nargs="*", help="config overrides: section.key=value")
    train.set_defaults(run=_train)

    ev = commands.add_parser("eval", help="evaluate a checkpoint (zero-shot and retrieval)")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by dalip train")
    ev.add_argument("--output", default=None, help="JSON file (default: eval.json beside the checkpoint)")
    ev.add_argument("overrides", nargs="*", help="config overrides, e.g. data.spec.dataset=csv data.spec.val=val.csv")
    ev.set_defaults(run=_eval)

    demo = commands.add_parser("demo", help="pool real tokens through every registered pooler and print a table")
    demo.add_argument("--image-size", type=int, default=224, help="input resolution (224 -> 49 tokens)")
    demo.add_argument("--poolers", nargs="+", default=None, help="pooler names (default: all registered)")
    demo.set_defaults(run=_demo)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``dalip`` command line; returns the exit status (2 for a config or file error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        from .train.config import ConfigError

        if isinstance(err, (ConfigError, FileNotFoundError)):
            print(f"dalip {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
