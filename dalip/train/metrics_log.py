"""The run's metrics: JSON lines, plus TensorBoard and Weights & Biases when asked for."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from dalip._optional import require

__all__ = ["METRICS", "MetricsLog", "eval_scalars", "read_metrics"]

METRICS = "metrics.jsonl"
"""The metrics file of a run folder: one JSON object per logged step."""


class MetricsLog:
    """Metrics as JSON lines (and TensorBoard scalars when ``run.tensorboard``, Weights & Biases when ``run.wandb``)."""

    def __init__(self, output: Path, rows: list[dict], tensorboard: bool, wandb: dict | None = None) -> None:
        self.path, self.rows = output / METRICS, rows
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # drop steps after the checkpoint
        self.writer = None
        if tensorboard:
            require("tensorboard", "tensorboard", "run.tensorboard=true")
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(output / "tensorboard"))
        self.wandb = _start_wandb(output, **wandb) if wandb is not None else None

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, row["step"])
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def write_eval(self, step: int, results: dict) -> None:
        """An evaluation's numbers (``eval/<embedding>/<set>/<metric>``) to TensorBoard and W&B at ``step``.

        The JSON files of the evaluation hold them already; counts and chance levels are left out.
        """
        scalars = eval_scalars(results)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None and scalars:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def eval_scalars(results: dict, prefix: str = "eval") -> dict[str, float]:
    """The metrics of nested evaluation results as flat ``prefix/a/b/metric`` floats (no counts or chance levels)."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(eval_scalars(value, name))
        elif isinstance(value, float) and not str(key).rpartition("/")[2].startswith("chance"):
            flat[name] = value
    return flat


def _start_wandb(output: Path, project: str, name: str | None, config: dict) -> Any:
    """A W&B run logging into ``output/wandb``; a resumed dalip run continues the same W&B run.

    The W&B run id is kept in ``output/wandb/dalip_run_id``. W&B's own settings
    (``WANDB_MODE=offline``, ``WANDB_API_KEY``, ...) apply as usual.
    """
    wandb = require("wandb", "wandb", "run.wandb=true")
    folder = output / "wandb"
    folder.mkdir(parents=True, exist_ok=True)
    id_file = folder / "dalip_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, name=name or output.resolve().name, id=run_id, resume="allow",
                      config=config, dir=str(output))


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


def read_metrics(path: Path, up_to_step: int) -> list[dict]:
    """The rows of a metrics file up to ``up_to_step`` (a resumed run drops the steps after its checkpoint)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= up_to_step]


