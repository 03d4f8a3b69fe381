"""Training recipe: configs, the loop, checkpoints, torchrun support."""

from dalip.train.config import ConfigError, TrainConfig, list_configs, load_config
from dalip.train.builders import build_model, build_optimizer
from dalip.train.loop import NonFiniteLossError, train
from dalip.train.run_loading import load_run

__all__ = [
    "ConfigError", "NonFiniteLossError", "TrainConfig", "build_model", "build_optimizer", "list_configs", "load_config", "load_run", "train",
]
