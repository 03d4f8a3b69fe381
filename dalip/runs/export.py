"""Exporting a run: its checkpoint's model written as an open_clip hub-style folder plus the DALIP model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dalip.models import export_model, get_tokenizer
from dalip.runs.load import load_run


def export_run(
    checkpoint: str | Path, output: str | Path, *, open_clip_files: bool = True, alpha: float | None = None
) -> Path:
    """`export_model` of a ``dalip train`` checkpoint (rebuilt with `dalip.runs.load.load_run`).

    ``alpha`` (e.g. a weight chosen off a fusion curve) replaces the run's fusion weight
    of the ``combined`` embedding, learned or not.
    """
    model, config = load_run(checkpoint, [f"model.alpha={alpha}"] if alpha is not None else None)
    return export_model(
        model, dataclasses.asdict(config.model), output, tokenizer=get_tokenizer(config.model.name),
        open_clip_files=open_clip_files, source=str(model.load_report.source),
    )

