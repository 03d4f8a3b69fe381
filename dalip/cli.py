"""The ``dalip`` command line: ``dalip demo`` (``train``, ``eval``, ``sweep`` follow)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    print(format_table(run_demo(image_size=args.image_size, poolers=args.poolers)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalip", description="Distribution-aligned language-image pre-training.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="pool real tokens through every registered pooler and print a table")
    demo.add_argument("--image-size", type=int, default=224, help="input resolution (224 -> 49 tokens)")
    demo.add_argument("--poolers", nargs="+", default=None, help="pooler names (default: all registered)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
