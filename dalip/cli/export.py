"""``dalip export``: a run's model as an open_clip hub-style folder plus the whole DALIP model."""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip.models import push_export
from dalip.models.export import export_files
from dalip.runs.export import export_run

__all__ = ["register"]


def _export(args: argparse.Namespace) -> int:
    folder = export_run(args.checkpoint, Path(args.output), open_clip_files=not args.dalip_only, alpha=args.alpha,
                        overwrite=args.overwrite)
    for path in export_files(folder):  # what this export wrote, not other files in the folder
        print(f"written {path}")
    if args.push_to_hub:
        push_export(folder, args.push_to_hub, private=args.private)
        print(f"uploaded {folder} to https://huggingface.co/{args.push_to_hub}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    export = commands.add_parser(
        "export", help="write a run's model for open_clip (local-dir:/hf-hub:) and dalip.create_model('local-dir:DIR')"
    )
    export.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by dalip train")
    export.add_argument("--output", required=True,
                        help="a new or empty folder: open_clip_config.json + open_clip_model.safetensors, "
                             "dalip_config.json + dalip_model.safetensors, the text tower's config and tokenizer")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --output, deleting the files of a previous export there "
                             "(and no other file)")
    export.add_argument("--dalip-only", action="store_true",
                        help="DALIP files only (needed when the first-order embedding is a pooler head)")
    export.add_argument("--alpha", type=float, default=None, metavar="A",
                        help="fusion weight of the combined embedding, e.g. one chosen with dalip eval --fusion "
                             "(default: the run's own, learned or not; needs second-order heads)")
    export.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="also upload the folder to this Hugging Face Hub repo (needs a login)")
    export.add_argument("--private", action="store_true", help="create the hub repo as private")
    export.set_defaults(run=_export)
