"""The ``dalip`` command line: ``train``, ``eval``, ``demo`` and the commands of
the modules in ``COMMAND_MODULES`` (each has ``register(commands)`` adding its
sub-parsers with a ``run`` default)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from dalip.models import create_model, get_tokenizer
from dalip._optional import MissingExtraError, require
from dalip.cli.allocator import keep_freed_memory
from dalip.demo import format_table, run_demo
from dalip.errors import ConfigError, CorruptCheckpointError, NonFiniteLossError
from dalip.eval import NonFiniteEmbeddingError, evaluate, format_results, save_results, zero_shot_eval_set
from dalip.pooling import POOLERS
from dalip.runs import load_config
from dalip.runs.evaluate import evaluate_checkpoint
from dalip.train import train

__all__ = ["COMMAND_MODULES", "FILE_OUTPUT_COMMANDS", "check_output", "main"]

COMMAND_MODULES: list[str] = ["dalip.cli.sweep", "dalip.cli.adapt", "dalip.cli.export"]
"""Modules contributing sub-commands; each defines ``register(commands)`` adding its sub-parsers."""


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


def _per_set(values: list[str] | None, sources: list[str], flag: str) -> list[str | None]:
    """``--classnames`` / ``--name``: none, or one per ``--zero-shot`` in the same order."""
    if not values:
        return [None] * len(sources)
    if len(values) != len(sources):

        raise ConfigError(f"{flag} given {len(values)} times for {len(sources)} --zero-shot sets (once per set, in order)")
    return list(values)


def _zero_shot_sets(args: argparse.Namespace) -> dict:
    """``{name: ZeroShotSet}`` of the ``--zero-shot`` sources; bad input is a `ConfigError` (exit 2)."""

    sets: dict = {}
    classnames = _per_set(args.classnames, args.zero_shot, "--classnames")
    for source, names, name in zip(args.zero_shot, classnames, _per_set(args.name, args.zero_shot, "--name")):
        try:
            found = zero_shot_eval_set(
                source, names, args.templates, name=name, batch_size=args.batch_size, workers=args.workers,
                img_key=args.img_key, label_key=args.label_key, separator=args.separator,
            )
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(str(err)) from None
        if found.name in sets:
            raise ConfigError(f"two --zero-shot sets named {found.name!r}; tell them apart with --name")
        sets[found.name] = found
    return sets


def _eval_pretrained(args: argparse.Namespace, sets: dict) -> None:
    """``--model NAME [--pretrained TAG]``: the open_clip model unchanged (plain CLIP, first embedding)."""

    try:
        model = create_model(args.model, pretrained=args.pretrained, second_order=None)
        tokenizer = get_tokenizer(args.model)
    except ValueError as err:
        raise ConfigError(f"--model {args.model}: {err}") from None
    results = evaluate(model, tokenizer, sets, ("first",), batch_size=args.batch_size)
    save_results(results, args.output)
    print(format_results(results))
    print(f"evaluation written to {args.output}")


def _eval(args: argparse.Namespace) -> int:

    if (args.checkpoint is None) == (args.model is None):
        raise ConfigError("give either --checkpoint (a dalip run) or --model (an open_clip model, unchanged)")
    if args.model is not None:
        if not args.zero_shot or not args.output:
            raise ConfigError("--model needs --zero-shot DIR_OR_CSV and --output OUT.json")
        if args.overrides or args.with_run_sets or args.fusion:
            raise ConfigError("config overrides, --with-run-sets and --fusion apply to --checkpoint runs only "
                              "(an open_clip model has a first-order embedding only)")
        _eval_pretrained(args, _zero_shot_sets(args))
        return 0
    if args.pretrained is not None:
        raise ConfigError("--pretrained goes with --model (a checkpoint brings its own weights)")
    sets = _zero_shot_sets(args) if args.zero_shot else None
    evaluate_checkpoint(args.checkpoint, args.output, args.overrides, sets, args.with_run_sets, args.fusion)
    return 0


def _demo(args: argparse.Namespace) -> int:

    if args.image_size < 32:  # EfficientNet-Lite0 downsamples 32x: smaller gives no token
        raise ConfigError(f"--image-size must be >= 32, got {args.image_size}")
    unknown = [p for p in args.poolers or [] if p not in POOLERS]
    if unknown:
        raise ConfigError(f"--poolers: unknown {unknown}; known: {', '.join(POOLERS.list())}")

    print(format_table(run_demo(image_size=args.image_size, poolers=args.poolers)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dalip", description="Distribution-aligned language-image pre-training.")
    commands = parser.add_subparsers(dest="command", required=True)

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

    ev = commands.add_parser(
        "eval", help="evaluate a checkpoint or a pretrained model (zero-shot and retrieval)",
        description="Evaluate a dalip run (--checkpoint) on its own eval sets, or a run or an open_clip model "
        "(--model) zero-shot on labelled images (--zero-shot). The JSON is {embedding: {set: {metric: value}}}, "
        "e.g. results['first']['leaves']['zero_shot/balanced_accuracy'].",
    )
    ev.add_argument("--checkpoint", default=None, help="a checkpoint.pt written by dalip train")
    ev.add_argument("--model", default=None, help="instead of --checkpoint: an open_clip / dalip model, scored unchanged")
    ev.add_argument("--pretrained", default=None, help="with --model: its weights (hub tag or local file)")
    ev.add_argument("--zero-shot", action="append", default=None, metavar="DIR_OR_CSV",
                    help="labelled images: a folder with one sub-folder per class, or a CSV/TSV (repeatable)")
    ev.add_argument("--classnames", action="append", default=None, metavar="FILE",
                    help="class names, one per line (once per --zero-shot, in order)")
    ev.add_argument("--templates", default="openai_imagenet", metavar="FILE|NAME",
                    help="prompt templates: a file with {c} or {} per line, or openai_imagenet (default), "
                    "openai_imagenet_simple, simple")
    ev.add_argument("--name", action="append", default=None, help="set name in the JSON (once per --zero-shot)")
    ev.add_argument("--img-key", default="filepath", help="CSV image-path column (default: filepath)")
    ev.add_argument("--label-key", default="label", help="CSV label column (default: label)")
    ev.add_argument("--separator", default=None, help="CSV separator (default: tab for .tsv, else comma)")
    ev.add_argument("--batch-size", type=int, default=64, help="zero-shot image batch size (default: 64)")
    ev.add_argument("--workers", type=int, default=0, help="zero-shot image decoding processes (default: 0)")
    ev.add_argument("--with-run-sets", action="store_true",
                    help="with --checkpoint and --zero-shot: also evaluate the run's own eval sets")
    ev.add_argument("--output", default=None,
                    help="JSON file (default: eval.json, or zero_shot.json with --zero-shot, beside the checkpoint; "
                    "eval-2.json, eval-3.json, ... when it exists: a default never replaces earlier results)")
    ev.add_argument("--fusion", nargs="+", type=float, default=None, metavar="A",
                    help="fusion weights in [0, 1]: also score a * s_first + (1 - a) * s_second for each (one pass of "
                    "the towers), written as fusion@<a> entries, a table and <output>_fusion.png; put it last")
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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the CLI owns its process; data workers fork

    keep_freed_memory()  # large per-step tensors reuse heap memory instead of fresh mmaps (dalip.cli.allocator)
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

        user_errors = (ConfigError, FileNotFoundError, CorruptCheckpointError, NonFiniteLossError, NonFiniteEmbeddingError)
        # an OSError naming a file (permission denied, a file where a folder belongs) is the user's to fix too
        if isinstance(err, user_errors) or (isinstance(err, OSError) and err.filename is not None):
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
