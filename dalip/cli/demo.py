"""``dalip demo``: pool real token tensors through every registered pooler and print a table."""

from __future__ import annotations

import argparse

from dalip.demo import format_table, run_demo
from dalip.errors import ConfigError
from dalip.pooling import POOLERS

__all__ = ["register"]


def _demo(args: argparse.Namespace) -> int:
    if args.image_size < 32:  # EfficientNet-Lite0 downsamples 32x: smaller gives no token
        raise ConfigError(f"--image-size must be >= 32, got {args.image_size}")
    unknown = [p for p in args.poolers or [] if p not in POOLERS]
    if unknown:
        raise ConfigError(f"--poolers: unknown {unknown}; known: {', '.join(POOLERS.list())}")

    print(format_table(run_demo(image_size=args.image_size, poolers=args.poolers)))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    demo = commands.add_parser("demo", help="pool real tokens through every registered pooler and print a table")
    demo.add_argument("--image-size", type=int, default=224, help="input resolution (224 -> 49 tokens)")
    demo.add_argument("--poolers", nargs="+", default=None, help="pooler names (default: all registered)")
    demo.set_defaults(run=_demo)
