"""``dalip eval``: a run's checkpoint on its own eval sets, or a run or open_clip model zero-shot on labelled images."""

from __future__ import annotations

import argparse

from dalip.data.eval_sets import zero_shot_eval_set
from dalip.errors import ConfigError
from dalip.eval import evaluate, format_results, save_results
from dalip.models import create_model, get_tokenizer
from dalip.models.names import is_dalip_export
from dalip.models.sources import untrained_notice
from dalip.runs.evaluate import evaluate_checkpoint, evaluate_export

__all__ = ["register"]


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
    notice = untrained_notice(model)
    if notice:  # the numbers are then those of seeded, not learned, layers
        print(f"--model {args.model}: {notice}", flush=True)
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
        if is_dalip_export(args.model):  # the whole DALIP model: every embedding its heads give, --fusion too
            if args.overrides or args.with_run_sets or args.pretrained is not None:
                raise ConfigError("config overrides, --with-run-sets and --pretrained do not apply to a dalip export")
            evaluate_export(args.model, args.output, _zero_shot_sets(args), args.fusion, batch_size=args.batch_size)
            return 0
        if args.overrides or args.with_run_sets or args.fusion:
            raise ConfigError("config overrides, --with-run-sets and --fusion apply to --checkpoint runs only (and "
                              "--fusion to dalip exports): an open_clip model has a first-order embedding only")
        _eval_pretrained(args, _zero_shot_sets(args))
        return 0
    if args.pretrained is not None:
        raise ConfigError("--pretrained goes with --model (a checkpoint brings its own weights)")
    sets = _zero_shot_sets(args) if args.zero_shot else None
    evaluate_checkpoint(args.checkpoint, args.output, args.overrides, sets, args.with_run_sets, args.fusion)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
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
