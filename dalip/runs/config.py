"""Training configuration: dataclasses, YAML files and ``key=value`` overrides.

A config is a YAML file with the sections below (every key optional); the
command line overrides any leaf with ``section.key=value`` (values parsed as
YAML, so ``optim.lr=3e-4``, ``model.second_order=null``,
``model.second_options={heads: 2}`` work). Unknown keys, wrong types and unknown
component names fail with a message naming the problem.

This module is the entry point (`load_config`, `config_from_dict`) and the one import
path of everything a config is; the parts live in modules of their own:
`dalip.runs.config_schema` (the dataclasses), `dalip.runs.config_builder` (dict ->
dataclass), `dalip.runs.config_files` (YAML, ``base:``, overrides) and
`dalip.runs.validate` (checks, section by section).
"""

from __future__ import annotations

from pathlib import Path

from dalip.runs.config_builder import build_dataclass
from dalip.runs.config_files import (
    CONFIG_DIR,
    PATH_KEYS,
    config_to_dict,
    list_configs,
    merge_trees,
    parse_overrides,
    read_config_tree,
    read_yaml_file,
    save_config,
)
from dalip.runs.config_schema import (
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from dalip.runs.validate import ZERO_SHOT_KEYS, validate, validate_zero_shot

__all__ = [
    "CONFIG_DIR", "PATH_KEYS", "ZERO_SHOT_KEYS", "DataConfig", "DistributedConfig", "EvalConfig", "LossConfig", "ModelConfig",
    "OptimConfig", "RunConfig", "TrainConfig", "config_from_dict", "config_to_dict", "list_configs", "load_config",
    "parse_overrides", "read_yaml_file", "save_config", "validate", "validate_zero_shot",
]


def config_from_dict(data: dict, overrides: list[str] | None = None) -> TrainConfig:
    """A validated config from a nested dict (e.g. the one stored in a checkpoint)."""
    config = build_dataclass(TrainConfig, merge_trees(data, parse_overrides(overrides or [])), "")
    validate(config)
    return config


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a config (shipped name or YAML path), apply overrides, validate.

    Raises:
        ConfigError: unknown key, wrong type, unknown component, malformed YAML,
            missing file; the message names the problem.
    """
    return config_from_dict(read_config_tree(name_or_path) if name_or_path is not None else {}, overrides)
