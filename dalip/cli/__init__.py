"""The ``dalip`` command line: one module per sub-command, each parsing its arguments and calling the library.

``dalip.cli.train``, ``eval``, ``demo``, ``export``, ``sweep`` (``sweep`` and
``interpolate``) and ``adapt`` each define ``register(commands)``, adding their
sub-parsers with a ``run`` default. The CLI owns its process: it alone sets the
allocator (`dalip.cli.allocator`) and environment variables for its data workers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import ModuleType

from dalip import errors
from dalip._optional import MissingExtraError
from dalip.cli import adapt, allocator, demo, export, sweep, train
from dalip.cli import eval as eval_command
from dalip.errors import ConfigError
from dalip.registry import UnknownComponentError

__all__ = ["COMMAND_MODULES", "FILE_OUTPUT_COMMANDS", "USER_ERRORS", "build_parser", "check_output", "main"]

COMMAND_MODULES: tuple[ModuleType, ...] = (train, eval_command, demo, sweep, adapt, export)
"""The sub-command modules, in ``dalip --help`` order; each defines ``register(commands)``."""


USER_ERRORS: tuple[type[Exception], ...] = (
    *(getattr(errors, name) for name in errors.__all__), UnknownComponentError, FileNotFoundError,
)
"""The errors a user causes and fixes (every type in `dalip.errors`, unknown names, missing files):
``dalip <command>: error: <message>`` on one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dalip`` parser with every sub-command of `COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(prog="dalip", description="Distribution-aligned language-image pre-training.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``dalip`` command line; returns the exit status (2 for a config or file error)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the CLI owns its process; data workers fork

    allocator.keep_freed_memory()  # large per-step tensors reuse heap memory instead of fresh mmaps (dalip.cli.allocator)
    args = build_parser().parse_args(argv)
    try:
        check_output(args)
        return args.run(args)
    except ImportError as err:
        if isinstance(err, MissingExtraError):  # an extra to install: the message says which
            print(f"dalip {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise
    except (ValueError, OSError) as err:
        # an OSError naming a file (permission denied, a file where a folder belongs) is the user's to fix too
        if isinstance(err, USER_ERRORS) or (isinstance(err, OSError) and err.filename is not None):
            print(f"dalip {args.command}: error: {err}", file=sys.stderr)
            return 2
        raise


FILE_OUTPUT_COMMANDS = ("eval",)
"""Sub-commands whose ``--output`` is a file (a JSON); for the others it is a folder."""


def check_output(args: argparse.Namespace) -> None:
    """``--output``: a folder (or a file for `FILE_OUTPUT_COMMANDS`) that can be created where it points.

    Raises:
        ConfigError: the path, or a folder above it, is a file; or a file output is a folder.
    """
    output = getattr(args, "output", None)
    if output is None:
        return
    path = Path(output)
    if args.command in FILE_OUTPUT_COMMANDS:
        if path.is_dir():
            raise ConfigError(f"--output {output} is a folder; give the path of a JSON file")
        path = path.parent
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        if existing == path:
            raise ConfigError(f"--output {output} is a file; give a folder (it is created when missing)")
        raise ConfigError(f"--output {output}: {existing} is a file, not a folder")


if __name__ == "__main__":
    sys.exit(main())
