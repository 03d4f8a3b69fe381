"""Config files: YAML reading (``base:`` composition, relative paths), ``key=value`` overrides, saving.

A config file is a YAML mapping of sections; ``base: NAME_OR_PATH`` starts from another
config (a shipped name or a path relative to the file) and merges this one's keys over it.
A config is plain data here: `dalip.runs.config` turns the merged tree into a `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from dalip.errors import ConfigError
from dalip.io import atomic_write_text
from dalip.runs.config_schema import TrainConfig

__all__ = [
    "CONFIG_DIR", "PATH_KEYS", "config_to_dict", "list_configs", "merge_trees", "parse_overrides",
    "read_config_tree", "read_yaml_file", "save_config",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
"""The configs shipped with the package (``dalip/configs/*.yaml``), loadable by name."""

PATH_KEYS = (("model", "name"), ("model", "pretrained"), ("data", "spec", "train"), ("data", "spec", "val"))
"""Keys whose relative file paths are resolved against the config's folder."""

REPLACED_KEYS = ("second_options",)
"""Sections an update replaces whole instead of merging into (a pooler's options are not another's)."""


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["optim.lr=1e-4", "model.second_order=null"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {err}") from None
        _set_path(tree, key.strip(), value)
    return tree


def _other_dataset(base: Any, update: dict) -> bool:
    """A ``data.spec`` update naming another dataset kind than the base's: the base's kind options do not carry over.

    A base without a ``dataset`` names no kind (there is no default one): its options carry over.
    """
    return isinstance(base, dict) and "dataset" in base and "dataset" in update and update["dataset"] != base["dataset"]


def merge_trees(base: dict, update: dict, path: str = "") -> dict:
    """``update`` merged into a copy of ``base``, section by section.

    ``model.second_options`` and a ``data.spec`` naming another dataset kind replace the
    base's instead (their keys belong to one pooler / one kind).
    """
    out = dict(base)
    for key, value in update.items():
        where = f"{path}.{key}" if path else str(key)
        replace = key in REPLACED_KEYS or (where == "data.spec" and _other_dataset(out.get(key), value))
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not replace:
            out[key] = merge_trees(out[key], value, where)
        else:
            out[key] = value
    return out


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (``dalip/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_zero_shot_paths(data: dict, folder: Path) -> None:
    """``eval.zero_shot`` entries: their folders and files, relative to the config's folder when there."""
    evaluation = data.get("eval")
    entries = evaluation.get("zero_shot") if isinstance(evaluation, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        for key in ("path", "classnames", "templates"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).exists():
                entry[key] = str((folder / value).resolve())


def _resolve_paths(data: dict, folder: Path) -> None:
    """File paths in a config are relative to the config's folder when a file is there."""
    _resolve_zero_shot_paths(data, folder)
    for keys in PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).is_file():
            node[keys[-1]] = str((folder / value).resolve())


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (not last-wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (a later one would silently replace it)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_file(path: Path) -> Any:
    """The YAML document of a file; unreadable, non-UTF-8 or malformed YAML and duplicate keys are a `ConfigError`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None


def _config_path(name_or_path: str | Path) -> Path:
    """A config file, or the shipped config of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"config {str(name_or_path)!r} is neither a file nor a shipped config ({', '.join(list_configs())})"
        )
    return shipped


def read_config_tree(name_or_path: str | Path, chain: tuple[Path, ...] = ()) -> dict:
    """The nested dict of a config file (shipped name or path), its ``base:`` chain merged in.

    Args:
        name_or_path: a YAML file or the name of a shipped config.
        chain: the files that named this one as their base (to report a ``base:`` cycle).

    Raises:
        ConfigError: missing or unreadable file, malformed YAML, not a mapping, a bad or cyclic ``base:``.
    """
    path = _config_path(name_or_path)
    if path.resolve() in chain:  # `base:` cycle: a -> b -> a would recurse forever
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: 'base:' cycle: {cycle}")
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    _resolve_paths(data, path.parent)
    base = data.pop("base", None)  # configs compose: `base: quickstart` plus small overrides
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a config path or shipped name, got {base!r}")
        base_path = (path.parent / base) if (path.parent / base).is_file() else base
        data = merge_trees(read_config_tree(base_path, (*chain, path.resolve())), data)
    return data


def config_to_dict(config: TrainConfig) -> dict:
    """Plain nested dict (YAML/JSON-safe) of a config."""
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically: a kill never leaves a torn ``config.yaml``)."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
