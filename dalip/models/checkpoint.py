"""Reading checkpoints safely (never unpickling arbitrary objects)."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from dalip.errors import CorruptCheckpointError, PretrainedMismatchError

__all__ = ["LoadReport", "load_checkpoint", "read_state_dict"]


@dataclass
class LoadReport:
    """Where a model's weights came from and what did not load.

    Attributes:
        missing: model keys the checkpoint lacked.
        unexpected: checkpoint keys the model did not take.
        mismatched: keys of both whose shapes differ (not loaded).
        source: the weights' origin (a file, an open_clip tag or schema name, a run checkpoint).
        fresh: names of head parameters that start from their fresh initialisation
            (the second-order heads, and first-order pooler heads).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source: str = ""
    fresh: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"weights: {self.source or 'unknown source'}"]
        lines.append(f"{len(self.missing)} missing keys {self.missing[:5]}, {len(self.unexpected)} unexpected {self.unexpected[:5]}")
        if self.mismatched:
            lines.append(f"{len(self.mismatched)} of another shape (not loaded) {self.mismatched[:5]}")
        if self.fresh:
            heads = sorted({".".join(n.split(".")[:2]) for n in self.fresh})
            lines.append(f"start fresh: {len(self.fresh)} head tensors ({', '.join(heads)})")
        return "\n".join(lines)


def _unreadable(path: Path, err: Exception) -> CorruptCheckpointError:
    """One line on why ``path`` is not a checkpoint dalip reads: never the advice to unpickle it
    (torch's own message suggests ``weights_only=False``, which runs any code the file holds)."""
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+)", str(err))
        objects = f" ({found.group(1)})" if found else ""
        return CorruptCheckpointError(
            f"{path} holds Python objects{objects} besides tensors, and dalip reads checkpoints weights-only, never "
            "unpickling objects (that can run code): give a file of tensors only, saved with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return CorruptCheckpointError(f"{path} is not a checkpoint (neither a torch.save file of tensors nor "
                                  f".safetensors; {type(err).__name__}: {first[:200]})")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` file (``weights_only=True``).

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and the
    ``module.`` prefix that DistributedDataParallel adds.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: not a checkpoint, one holding Python objects (never unpickled) or
            no tensor dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader's error: say which file and why, without unpickling it
        raise _unreadable(path, err) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CorruptCheckpointError(f"{path} does not hold a dictionary of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load an open_clip checkpoint into a DALIP model's towers, or a dalip checkpoint whole.

    Keys of a plain open_clip checkpoint go into ``model.clip``; the new heads keep
    their fresh initialisation (head keys are never required, and a dalip checkpoint's
    heads of another configuration are not loaded).

    Args:
        model: a `DALIPModel` (or any module).
        path: ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``.
        strict: every tower weight must come from the file, with its shape, and the file
            may hold no other tower key; otherwise `PretrainedMismatchError` (listing
            examples). ``strict=False`` loads what matches and reports the rest in the
            returned `LoadReport` (even when nothing matched).

    Raises:
        PretrainedMismatchError: ``strict`` and the file does not fit the towers.
    """
    state = read_state_dict(path)
    target = model
    if hasattr(model, "clip") and not any(k.startswith("clip.") for k in state):
        target = model.clip
    own = target.state_dict()
    heads = set(head_keys(model)) if target is model else set()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    report = LoadReport(
        # BatchNorm's step counters are not weights (a run with frozen BatchNorm saves none)
        missing=[k for k in own if k not in state and k not in heads and not k.endswith("num_batches_tracked")],
        unexpected=[k for k in state if k not in own and k.split(".")[0] not in _HEADS],
        source=f"file {path}",
        mismatched=[f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model" for k in mismatched],
    )
    towers_mismatched = [k for k in mismatched if k not in heads]
    if strict and (report.missing or report.unexpected or towers_mismatched):
        matched = len(own) - len(heads) - len(report.missing) - len(towers_mismatched)
        raise PretrainedMismatchError(
            f"{path} does not fit the model's towers: {matched} of {len(own) - len(heads)} tower weights matched; "
            f"{len(report.missing)} missing (e.g. {report.missing[:3]}), {len(report.unexpected)} unexpected "
            f"(e.g. {report.unexpected[:3]}), {len(towers_mismatched)} of another shape (e.g. {report.mismatched[:2]}). "
            "Is it a checkpoint of another architecture? To load only what matches, pass pretrained_strict=False "
            "(model.pretrained_strict=false)"
        )
    loadable = {k: v for k, v in state.items() if k not in mismatched}
    target.load_state_dict(loadable, strict=False)
    loaded = set(loadable) if target is model else set()
    report.fresh = [k for k in head_keys(model) if k not in loaded]
    return report


_HEADS = ("first_heads", "second_heads", "second_logit_scale")


def head_keys(model: nn.Module) -> list[str]:
    """State-dict keys of a DALIP model's own heads (first/second-order poolers, second logit scale)."""
    return [k for k in model.state_dict() if k.split(".")[0] in _HEADS]
