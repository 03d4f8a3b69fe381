"""Sweep files: one base config, shared overrides, named variants (override sets) and seeds.

```yaml
# examples/ablations/second_order.yaml
base: base.yaml                  # a config path (relative to this file) or a shipped name
seeds: [0, 1, 2]                 # default seeds (``dalip sweep --seeds`` replaces them)
overrides: [optim.steps=100]     # optional: applied to every variant
variants:                        # name -> override list (or a mapping of dotted keys)
  plain_clip: [model.second_order=null, model.alpha=1]
  cls_mbdc: []                   # the base itself
  cls_cov: {model.second_order: cov, model.second_options: {reduced_dim: 16}}
```

A run's config is ``base <- overrides <- variant <- smoke <- command-line
overrides <- seed`` (later wins); the seed sets ``run.seed`` and
``data.spec.seed``. Every variant is validated when the file is loaded, so an
unknown key fails before any run starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dalip.errors import ConfigError
from dalip.runs.config import TrainConfig, load_config, read_yaml_file

__all__ = ["SMOKE_OVERRIDES", "SweepSpec", "load_sweep", "run_overrides"]

#: what ``--smoke`` adds to every run: a few tiny steps, so any sweep ends in minutes on a CPU
SMOKE_OVERRIDES: tuple[str, ...] = (
    "optim.steps=2", "optim.warmup_steps=0", "data.batch_size=8", "data.workers=0",
    "run.log_every=1", "run.checkpoint_every=1",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a variant name is a folder name
_KEYS = {"base", "seeds", "overrides", "variants", "description"}


@dataclass
class SweepSpec:
    """A parsed sweep file.

    Attributes:
        path: the sweep file.
        base: the base config (an absolute path, or a shipped config name).
        seeds: default seeds.
        overrides: overrides applied to every variant.
        variants: variant name -> its overrides (``section.key=value`` strings).
        description: free text.
    """

    path: Path
    base: str
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""

    def config(self, variant: str, seed: int | None = None, extra: list[str] | None = None) -> TrainConfig:
        """The resolved config of one run (see the module docstring for the order)."""
        if variant not in self.variants:
            raise ConfigError(f"{self.path}: unknown variant {variant!r}; known: {', '.join(self.variants)}")
        overrides = run_overrides(self.overrides + self.variants[variant] + list(extra or []), seed)
        try:
            return load_config(self.base, overrides)
        except ConfigError as err:
            raise ConfigError(f"{self.path}: variant {variant!r}: {err}") from None


def run_overrides(overrides: list[str], seed: int | None) -> list[str]:
    """``overrides`` plus the seed's (``run.seed``, ``data.spec.seed``) when a seed is given."""
    return overrides if seed is None else [*overrides, f"run.seed={seed}", f"data.spec.seed={seed}"]


def _as_overrides(value: Any, where: str) -> list[str]:
    """A list of ``key=value`` strings, or a mapping of dotted keys, as override strings."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ConfigError(f"{where} must be a list of 'section.key=value' strings or a mapping of dotted keys, got {value!r}")


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {value!r}")
    return value


def load_sweep(path: str | Path, validate: bool = True) -> SweepSpec:
    """Read and check a sweep file.

    Raises:
        ConfigError: missing file, non-UTF-8 or malformed YAML, unknown top-level key,
            a duplicate key (two variants of one name), bad variant name, or a variant
            whose config does not validate.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    data = read_yaml_file(path)  # a variant name given twice is an error, not a silent last-wins
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file must be a mapping with 'base' and 'variants'")
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    if not isinstance(data.get("base"), str):
        raise ConfigError(f"{path}: 'base' (a config path or shipped config name) is required")
    variants = data.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: 'variants' must be a non-empty mapping of name -> overrides")
    for name in variants:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{path}: variant name {name!r} must be a plain folder name (letters, digits, _ . + -)")
    base = path.parent / data["base"]
    spec = SweepSpec(
        path=path,
        base=str(base.resolve()) if base.is_file() else data["base"],
        seeds=_seeds(data.get("seeds", [0]), str(path)),
        overrides=_as_overrides(data.get("overrides"), f"{path}: 'overrides'"),
        variants={name: _as_overrides(v, f"{path}: variant {name!r}") for name, v in variants.items()},
        description=str(data.get("description", "")),
    )
    if validate:
        for name in spec.variants:
            spec.config(name)
    return spec
