"""The run API: a run's config, its model and data, checkpoints, run folders, loading, evaluating and exporting a run.

Everything that reads or writes a run folder lives here, below the training engine
(`dalip.train`), so that evaluation, export, interpolation and few-shot studies
use a run without importing the training loop.

```python
from dalip.runs import load_config, load_run, evaluate_checkpoint

config = load_config("quickstart", ["optim.steps=100"])
model, config = load_run("runs/quickstart/checkpoint.pt")
evaluate_checkpoint("runs/quickstart/checkpoint.pt", fusion=[0, 0.5, 1])
```
"""

from dalip.errors import ConfigError, CorruptCheckpointError, RunFolderError
from dalip.runs.checkpoint import list_checkpoints, load_training_checkpoint, save_training_checkpoint
from dalip.runs.config import (
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_configs,
    load_config,
    parse_overrides,
    save_config,
)
from dalip.runs.data import eval_image_transform, make_spec, run_eval_sets, zero_shot_sets
from dalip.runs.evaluate import evaluate_checkpoint, evaluate_run
from dalip.runs.export import export_run
from dalip.runs.folder import RunLock, claim_run_folder, unused_path
from dalip.runs.load import load_run
from dalip.runs.model import build_model

__all__ = [
    "ConfigError", "CorruptCheckpointError", "DataConfig", "DistributedConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "RunConfig", "RunFolderError", "RunLock", "TrainConfig", "build_model", "claim_run_folder", "config_from_dict",
    "config_to_dict", "eval_image_transform", "evaluate_checkpoint", "evaluate_run", "export_run", "list_checkpoints",
    "list_configs", "load_config", "load_run", "load_training_checkpoint", "make_spec", "parse_overrides",
    "run_eval_sets", "save_config", "save_training_checkpoint", "unused_path", "zero_shot_sets",
]
