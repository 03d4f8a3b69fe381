"""Exporting a run: its checkpoint's model written as an open_clip hub-style folder plus the DALIP model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dalip.errors import ConfigError
from dalip.models import DALIPModel, export_model, get_tokenizer
from dalip.runs.config import TrainConfig
from dalip.runs.data import make_spec
from dalip.runs.load import load_run


def _set_run_preprocess(model: DALIPModel, config: TrainConfig) -> None:
    """Give the model the size / mean / std the run evaluated with (``data.spec``'s, else the model's own), so
    that the export is scored as the run's checkpoint is and open_clip's transform matches the run's."""
    import open_clip

    spec = make_spec(config)
    own = {"size": spec.image_size, "mean": spec.mean and tuple(spec.mean), "std": spec.std and tuple(spec.std)}
    cfg = open_clip.get_model_preprocess_cfg(model.clip)
    open_clip.set_model_preprocess_cfg(model.clip, {**cfg, **{k: v for k, v in own.items() if v}})


def export_run(
    checkpoint: str | Path, output: str | Path, *, open_clip_files: bool = True, alpha: float | None = None,
    overwrite: bool = False,
) -> Path:
    """`export_model` of a ``dalip train`` checkpoint (rebuilt with `dalip.runs.load.load_run`).

    ``alpha`` (e.g. a weight chosen off a fusion curve) replaces the run's fusion weight
    of the ``combined`` embedding, learned or not. ``overwrite``: see `export_model`.

    Raises:
        ConfigError: ``alpha`` for a run without second-order heads (no ``combined`` to weigh).
    """
    model, config = load_run(checkpoint, [f"model.alpha={alpha}"] if alpha is not None else None)
    if alpha is not None and not model.has_second_order:
        raise ConfigError(
            f"--alpha {alpha}: the run has no second-order heads (model.second_order is null), so no combined "
            "embedding to weigh; export without --alpha"
        )
    _set_run_preprocess(model, config)
    return export_model(
        model, dataclasses.asdict(config.model), output, tokenizer=get_tokenizer(config.model.name),
        open_clip_files=open_clip_files, source=str(model.load_report.source), overwrite=overwrite,
    )
