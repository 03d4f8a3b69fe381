"""Training recipe: configs, the loop, checkpoints, torchrun support."""

from .config import ConfigError, TrainConfig, list_configs, load_config
from .builders import build_model, build_optimizer
from .loop import NonFiniteLossError, train
from .run_loading import load_run

__all__ = [
    "ConfigError", "NonFiniteLossError", "TrainConfig", "build_model", "build_optimizer", "list_configs", "load_config", "load_run", "train",
]
