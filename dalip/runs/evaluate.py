"""Evaluation of a run: at the end of training and from a saved checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dalip.errors import ConfigError
from dalip.eval import ZeroShotSet, evaluate, format_results, save_results
from dalip.eval.fusion import check_fusion_weights, format_fusion, plot_fusion
from dalip.models import create_model, get_tokenizer
from dalip.runs.config import TrainConfig
from dalip.runs.data import eval_image_transform, run_eval_sets, zero_shot_sets
from dalip.runs.folder import unused_path
from dalip.runs.load import load_run

__all__ = ["evaluate_checkpoint", "evaluate_export", "evaluate_run"]


def _with_zero_shot(eval_sets: Mapping[str, Any], zero_shot: Mapping[str, ZeroShotSet]) -> dict:
    clash = sorted(set(eval_sets) & set(zero_shot))
    if clash:
        raise ConfigError(f"zero-shot set name(s) {clash} clash with the run's eval sets; set 'name'")
    return {**eval_sets, **zero_shot}


def evaluate_run(
    model: Any,
    tokenizer: Any,
    eval_sets: dict,
    config: TrainConfig,
    output_json: Path,
    zero_shot: Mapping[str, ZeroShotSet] | None = None,
) -> dict:
    """Zero-shot and retrieval metrics of every eval set; writes JSON and prints a table.

    Besides ``eval_sets``, evaluates the labelled image sets of ``config.eval.zero_shot``
    (or ``zero_shot`` when given), each under its name, with the model's own transform.
    With ``config.eval.fusion``, the fusion curve also goes to the JSON (``fusion@<a>``
    entries), a table and ``<json stem>_fusion.png`` (the training alpha marked).
    """
    eval_sets = _with_zero_shot(eval_sets, zero_shot_sets(config) if zero_shot is None else zero_shot)
    if not eval_sets:
        print("no evaluation sets (the dataset brings none, data.spec.val and eval.zero_shot are unset): evaluation skipped")
        return {}
    results = evaluate(
        model, tokenizer, eval_sets,
        embeddings=config.eval.embeddings,
        batch_size=config.eval.batch_size,
        image_transform=eval_image_transform(config, model),
        fusion=config.eval.fusion,
    )
    trained = getattr(model, "train_alpha", model.alpha)  # a run's checkpoint evaluated at another model.alpha
    _report(results, output_json, bool(config.eval.fusion), trained, combined=model.alpha)
    return results


def _report(results: dict, output_json: Path, fusion: bool, alpha: float | None = None,
            combined: float | None = None) -> None:
    """Write the JSON and print the table; with ``fusion``, the fusion table and plot too, marking the training
    ``alpha`` and the ``combined`` embedding's weight (see `dalip.eval.fusion.format_fusion`)."""
    save_results(results, output_json)
    print(format_results(results))
    print(f"evaluation written to {output_json}")
    if fusion:
        print(format_fusion(results, alpha, combined=combined))
        plot = plot_fusion(results, output_json.with_name(f"{output_json.stem}_fusion.png"), alpha, combined=combined)
        print(f"fusion curve plotted to {plot}")


def evaluate_export(
    name: str, output: str | Path, zero_shot: Mapping[str, ZeroShotSet], fusion: list[float] | None = None,
    batch_size: int = 64,
) -> dict:
    """``dalip eval --model local-dir:EXPORT`` of a dalip export: every embedding its heads give.

    The whole DALIP model (``dalip.create_model("local-dir:...")``) is scored on the
    ``zero_shot`` sets with its own preprocessing (the run's, for an export of a run):
    ``first``, ``second`` and ``combined`` with second-order heads, and the ``fusion``
    curve, the numbers ``dalip eval --checkpoint`` gives for the run it came from.

    Raises:
        ConfigError: ``fusion`` weights outside [0, 1], or for an export without second-order heads.
    """
    try:
        model, tokenizer = create_model(name), get_tokenizer(name)
    except ValueError as err:
        raise ConfigError(f"--model {name}: {err}") from None
    if fusion is not None:
        try:
            fusion = list(check_fusion_weights(fusion))
        except ValueError as err:
            raise ConfigError(f"--fusion: {err}") from None
        if not model.has_second_order:
            raise ConfigError(f"--fusion needs second-order heads; the export {name} has a first-order embedding only")
    results = evaluate(model, tokenizer, zero_shot, batch_size=batch_size, fusion=fusion)
    _report(results, Path(output), bool(fusion), combined=model.alpha)  # the training alpha is not stored
    return results


def evaluate_checkpoint(
    checkpoint: str | Path,
    output: str | Path | None = None,
    overrides: list[str] | None = None,
    zero_shot: Mapping[str, ZeroShotSet] | None = None,
    run_sets: bool = False,
    fusion: list[float] | None = None,
) -> dict:
    """``dalip eval``: rebuild the run's model from its checkpoint and evaluate it.

    With ``zero_shot`` (``{name: ZeroShotSet}``), only those sets are evaluated, or
    also the run's own (its data eval sets and ``eval.zero_shot``) with ``run_sets``.
    The JSON goes to ``output``, by default ``eval.json`` (``zero_shot.json`` with
    ``zero_shot``) beside the checkpoint; when that file exists (e.g. the run's own final
    evaluation), a new ``eval-2.json``, ``eval-3.json``, ... instead: a default never
    replaces earlier results (an explicit ``output`` is written as given).
    ``fusion`` weights (``dalip eval --fusion``) replace ``eval.fusion`` of the run's config.
    """
    checkpoint = Path(checkpoint)
    overrides = [*(overrides or []), *([f"eval.fusion={list(fusion)}"] if fusion is not None else [])]
    model, config = load_run(checkpoint, overrides)
    tokenizer = get_tokenizer(config.model.name)
    if zero_shot is None:
        output = Path(output) if output else unused_path(checkpoint.parent / "eval.json")
        return evaluate_run(model, tokenizer, run_eval_sets(config, model), config, output)
    output = Path(output) if output else unused_path(checkpoint.parent / "zero_shot.json")
    if run_sets:
        own = _with_zero_shot(run_eval_sets(config, model), zero_shot_sets(config))
        return evaluate_run(model, tokenizer, own, config, output, zero_shot)
    return evaluate_run(model, tokenizer, {}, config, output, zero_shot)
