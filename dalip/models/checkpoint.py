"""Reading checkpoints safely (never unpickling arbitrary objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "load_checkpoint", "read_state_dict"]


@dataclass
class LoadReport:
    """Keys the checkpoint lacked for the model, and keys the model did not take."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.missing)} missing keys {self.missing[:5]}, {len(self.unexpected)} unexpected {self.unexpected[:5]}"


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
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys))
