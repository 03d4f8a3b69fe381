"""The ``dalip`` command line: ``train``, ``eval``, ``demo`` and the commands of
the modules in ``COMMAND_MODULES`` (each has ``register(commands)`` adding its
sub-parsers with a ``run`` default)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

__all__ = ["COMMAND_MODULES", "main"]

COMMAND_MODULES: list[str] = ["dalip.sweep.cli", "dalip.adapt.cli", "dalip.models.cli"]
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


def _per_set(values: list[str] | None, sources: list[str], flag: str) -> list[str | None]:
    """``--classnames`` / ``--name``: none, or one per ``--zero-shot`` in the same order."""
    if not values:
        return [None] * len(sources)
    if len(values) != len(sources):
        from .train.config import ConfigError

        raise ConfigError(f"{flag} given {len(values)} times for {len(sources)} --zero-shot sets (once per set, in order)")
    return list(values)


def _zero_shot_sets(args: argparse.Namespace) -> dict:
    """``{name: ZeroShotSet}`` of the ``--zero-shot`` sources; bad input is a `ConfigError` (exit 2)."""
    from .eval import zero_shot_eval_set
    from .train.config import ConfigError

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
    from . import create_model, get_tokenizer
    from .eval import evaluate, format_results, save_results
    from .train.config import ConfigError

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
    from .train.config import ConfigError
    from .train.evaluate import evaluate_checkpoint

    if (args.checkpoint is None) == (args.model is None):
        raise ConfigError("give either --checkpoint (a dalip run) or --model (an open_clip model, unchanged)")
    if args.model is not None:
        if not args.zero_shot or not args.output:
            raise ConfigError("--model needs --zero-shot DIR_OR_CSV and --output OUT.json")
        if args.overrides or args.with_run_sets:
            raise ConfigError("config overrides and --with-run-sets apply to --checkpoint runs only")
        _eval_pretrained(args, _zero_shot_sets(args))
        return 0
    if args.pretrained is not None:
        raise ConfigError("--pretrained goes with --model (a checkpoint brings its own weights)")
    sets = _zero_shot_sets(args) if args.zero_shot else None
    evaluate_checkpoint(args.checkpoint, args.output, args.overrides, sets, args.with_run_sets)
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
                    help="JSON file (default: eval.json, or zero_shot.json with --zero-shot, beside the checkpoint)")
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
