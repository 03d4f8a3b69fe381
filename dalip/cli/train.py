"""``dalip train``: train a model from a config (or resume / overwrite a run folder), then evaluate it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dalip._optional import require
from dalip.errors import ConfigError
from dalip.runs import load_config
from dalip.runs.config import TrainConfig
from dalip.runs.folder import existing_run_files
from dalip.train import train

__all__ = ["register"]

DEFAULT_CONFIG = "quickstart"
"""The config of ``dalip train`` without ``--config`` and without ``--resume`` (the README's first command)."""


def run_config(config: str | None, output: Path, resume: bool, overrides: list[str]) -> TrainConfig:
    """The config ``dalip train`` runs: ``--config`` (default `DEFAULT_CONFIG`), or the resumed run's own.

    ``--resume`` never trains a run the user did not name: without ``--config`` it needs the
    run's ``config.yaml``; with ``--config`` and nothing to resume in ``output`` it starts
    that run and says so (the same command then resumes it: preemptible jobs resubmit it).

    Raises:
        ConfigError: ``--resume`` without ``--config`` and no run (or no ``config.yaml``) in ``output``.
    """
    saved = output / "config.yaml"
    if not resume:
        return load_config(config or DEFAULT_CONFIG, overrides)
    if config is None and saved.is_file():
        return load_config(saved, overrides)  # the run's own resolved config (+ overrides, checked by train)
    found = existing_run_files(output)
    if config is None and found:
        raise ConfigError(f"--resume {output}: the run has no config.yaml ({', '.join(found[:4])}); "
                          "pass the run's --config")
    if config is None:
        raise ConfigError(f"--resume: nothing to resume in {output} (no run there); pass --config CONFIG to "
                          "start the run (the same command resumes it later), or check --output")
    if not found and os.environ.get("RANK", "0") == "0":  # one line, not one per torchrun process
        print(f"nothing to resume in {output}: starting the run of {config}", flush=True)
    return load_config(config, overrides)


def _train(args: argparse.Namespace) -> int:
    require("matplotlib.figure", "train", "dalip train (its training.png)")  # before the run, not after it
    output = Path(args.output)
    config = run_config(args.config, output, args.resume, args.overrides)
    train(config, output, resume=args.resume, overwrite=args.overwrite)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    train = commands.add_parser("train", help="train a model from a config, then evaluate it")
    train.add_argument("--config", default=None,
                       help=f"shipped config name or YAML path (default: {DEFAULT_CONFIG}; with --resume: the "
                       "run's own config.yaml, and a given --config must not change the run's settings)")
    train.add_argument("--output", required=True, help="run folder (config, metrics, checkpoint, eval.json, plot)")
    runs = train.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in OUTPUT from its newest intact checkpoint; with --config and no "
                      "run in OUTPUT, start that run (so one command can be resubmitted); without --config "
                      "and no run there, an error")
    runs.add_argument("--overwrite", action="store_true",
                      help="delete the run already in OUTPUT (its own files) and start again")
    train.add_argument("overrides", nargs="*", help="config overrides: section.key=value")
    train.set_defaults(run=_train)
