"""Evaluation of a run: at the end of training and from a saved checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..eval import evaluate, format_results, save_results
from .checkpoint import load_training_checkpoint
from .config import TrainConfig, config_from_dict

__all__ = ["evaluate_checkpoint", "evaluate_run", "finish_run"]


def evaluate_run(model: Any, tokenizer: Any, eval_sets: dict, config: TrainConfig, output_json: Path) -> dict:
    """Zero-shot and retrieval metrics of every eval set; writes JSON and prints a table."""
    from .data_loading import eval_image_transform

    if not eval_sets:
        print("no evaluation sets (data.spec.twemoji_eval is off and data.spec.val is unset): evaluation skipped")
        return {}
    results = evaluate(
        model, tokenizer, eval_sets,
        embeddings=config.eval.embeddings,
        batch_size=config.eval.batch_size,
        image_transform=eval_image_transform(config),
    )
    save_results(results, output_json)
    print(format_results(results))
    print(f"evaluation written to {output_json}")
    return results


def finish_run(model: Any, tokenizer: Any, data: Any, config: TrainConfig, output: Path, metrics: list[dict]) -> dict:
    """End of training: evaluate, write ``eval.json``, draw ``training.png``."""
    from .plots import plot_run

    results = evaluate_run(model, tokenizer, data.eval_sets, config, output / "eval.json")
    print(f"plot written to {plot_run(metrics, results, output / 'training.png')}")
    return results


def evaluate_checkpoint(checkpoint: str | Path, output: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """``dalip eval``: rebuild the run's model from its checkpoint and evaluate it."""
    from ..models import get_tokenizer
    from .data_loading import build_eval_sets
    from .loop import build_model

    checkpoint = Path(checkpoint)
    state = load_training_checkpoint(checkpoint)
    config = config_from_dict(state["config"], overrides)
    model = build_model(config)
    model.load_state_dict(state["model"])
    output = Path(output) if output else checkpoint.parent / "eval.json"
    return evaluate_run(model, get_tokenizer(config.model.name), build_eval_sets(config), config, output)
