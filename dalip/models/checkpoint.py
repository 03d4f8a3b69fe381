"""Reading checkpoints safely (never unpickling arbitrary objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "load_checkpoint", "read_state_dict"]


@dataclass
class LoadReport:
    """Where a model's weights came from and what did not load.

    Attributes:
        missing: model keys the checkpoint lacked.
        unexpected: checkpoint keys the model did not take.
        source: the weights' origin (a file, an open_clip tag or schema name, a run checkpoint).
        fresh: names of head parameters that start from their fresh initialisation
            (the second-order heads, and first-order pooler heads).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source: str = ""
    fresh: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"weights: {self.source or 'unknown source'}"]
        lines.append(f"{len(self.missing)} missing keys {self.missing[:5]}, {len(self.unexpected)} unexpected {self.unexpected[:5]}")
        if self.fresh:
            heads = sorted({".".join(n.split(".")[:2]) for n in self.fresh})
            lines.append(f"start fresh: {len(self.fresh)} head tensors ({', '.join(heads)})")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` file (``weights_only=True``).

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and the
    ``module.`` prefix that DistributedDataParallel adds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no tensor dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - say which file and why, without unpickling it
            raise ValueError(f"cannot read {path} as a weights-only checkpoint: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a dictionary of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load an open_clip checkpoint into a DALIP model's towers, or a dalip checkpoint whole.

    Keys of a plain open_clip checkpoint go into ``model.clip``; the new heads keep
    their fresh initialisation. Loading is non-strict and the report lists what
    did not match.
    """
    state = read_state_dict(path)
    target = model
    if hasattr(model, "clip") and not any(k.startswith("clip.") for k in state):
        target = model.clip
    result = target.load_state_dict(state, strict=False)
    loaded = set(state) if target is model else set()
    fresh = [k for k in head_keys(model) if k not in loaded]
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys), f"file {path}", fresh)


def head_keys(model: nn.Module) -> list[str]:
    """State-dict keys of a DALIP model's own heads (first/second-order poolers, second logit scale)."""
    return [k for k in model.state_dict() if k.split(".")[0] in ("first_heads", "second_heads", "second_logit_scale")]
