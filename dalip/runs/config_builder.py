"""A nested dict -> a config dataclass, checking keys and value types against the annotations.

```python
build_dataclass(TrainConfig, {"optim": {"lr": "3e-4"}}, "")   # TrainConfig(optim=OptimConfig(lr=0.0003, ...))
build_dataclass(OptimConfig, {"lrr": 1}, "optim")              # ConfigError: unknown config key 'optim.lrr'. Did you mean 'lr'?
```
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from dalip.errors import ConfigError

__all__ = ["build_dataclass", "type_matches"]


def type_matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a config field's annotation (ints are floats, bools are not numbers)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        return any(type_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or annotation)


def _unknown_key(path: str, key: Any, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {path!r}.{hint} Valid keys: {', '.join(names)}")


def _field_value(annotation: Any, value: Any, path: str) -> Any:
    """One field's value: a nested section built, a YAML 1.1 float string read, the type checked."""
    if isinstance(value, str) and type_matches(1.0, annotation) and not type_matches(value, annotation):
        try:  # YAML 1.1 reads 3e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value or {}, path)
    if not type_matches(value, annotation):
        expected = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
        raise ConfigError(f"config key {path!r} expects {expected}, got {type(value).__name__} {value!r}")
    return float(value) if annotation is float else value


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """``cls(**values)``, its nested sections built too.

    Args:
        cls: a config dataclass (`TrainConfig` or one of its sections).
        values: the section's mapping.
        where: its dotted path in the config (``""`` at the top), for messages.

    Raises:
        ConfigError: not a mapping, an unknown key (with the closest valid one) or a wrong type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(values).__name__}: {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise _unknown_key(path, key, names)
        kwargs[key] = _field_value(hints[key], value, path)
    return cls(**kwargs)
