"""Training checkpoints: written atomically, checksummed, read without unpickling objects.

A checkpoint holds the model, optimizer and scheduler states, the step, the
RNG states and the resolved config, so ``--resume`` continues the run exactly.
It is written with `dalip.io.atomic_write` (a temporary file in the same folder, flushed
to disk, then renamed into place): a kill at any moment leaves whole checkpoints, never a torn file.

A run folder keeps the last ``run.keep_checkpoints`` checkpoints: ``checkpoint.pt``
is the newest (the documented path for ``dalip eval`` / ``dalip export``), the older
ones are ``checkpoint-step<N>.pt``. Each has a sidecar ``<name>.sha256`` in
``sha256sum`` format (``sha256sum -c checkpoint.pt.sha256`` checks it by hand),
verified on every load: a truncated or bit-flipped file is refused, and ``--resume``
falls back to the newest intact checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from dalip.errors import CorruptCheckpointError
from dalip.io import atomic_write, atomic_write_text

__all__ = [
    "CHECKPOINT", "atomic_save", "capture_rng", "checkpoint_step", "discard_corrupt_checkpoints",
    "list_checkpoints", "load_training_checkpoint", "restore_rng", "save_training_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
"""File name of a run's newest checkpoint."""
_OLDER = re.compile(r"checkpoint-step(\d+)\.pt")


def _tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor inside ``obj`` (nested dicts, lists, tuples): a checkpoint's size to within its pickle."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _check_disk_space(state: dict[str, Any], folder: Path) -> None:
    """Refuse to start a checkpoint that cannot fit: a clear error instead of a torn write after minutes."""
    need = _tensor_bytes(state) + (1 << 20)  # the pickle and the zip directory on top of the tensors
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk space for a checkpoint in {folder}: it needs about {_size(need)} "
            f"and {_size(free)} is free; the earlier checkpoints are unchanged "
            "(free space, or lower run.keep_checkpoints, then --resume)",
            str(folder),
        )


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` with `dalip.io.atomic_write` (temporary file, fsync, ``os.replace``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    """``<digest>  <name>`` (``sha256sum`` format), written atomically."""
    atomic_write_text(_sidecar(path), f"{digest}  {path.name}\n")


def _recorded_digest(path: Path) -> str | None:
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return None
    words = sidecar.read_text().split()
    return words[0] if words else ""


def list_checkpoints(folder: str | Path) -> list[Path]:
    """A run folder's checkpoints, newest first: ``checkpoint.pt``, then ``checkpoint-step<N>.pt`` by step."""
    folder = Path(folder)
    older = sorted(((int(m.group(1)), p) for p in folder.glob("checkpoint-step*.pt") if (m := _OLDER.fullmatch(p.name))),
                   reverse=True)
    newest = [folder / CHECKPOINT] if (folder / CHECKPOINT).is_file() else []
    return newest + [p for _, p in older]


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint, read lazily (mmap: no tensor is loaded); None if unreadable."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:  # noqa: BLE001 - an unreadable file is set aside by the caller
        return None


def save_training_checkpoint(state: dict[str, Any], folder: str | Path, keep: int = 2) -> Path:
    """Write ``folder/checkpoint.pt`` with its checksum; keep the ``keep`` newest checkpoints.

    The previous ``checkpoint.pt`` becomes ``checkpoint-step<N>.pt`` (a rename, with its
    checksum) before the new one is moved into place, so a kill at any moment leaves
    every earlier checkpoint whole; the oldest beyond ``keep`` are then deleted.

    Args:
        state: a dict with at least ``model`` and ``step``.
        folder: the run folder.
        keep: how many checkpoints to keep (>= 1).

    Returns:
        the path of the new checkpoint.

    Raises:
        OSError: (``ENOSPC``) the folder's disk has less free space than the checkpoint needs;
            nothing is written then.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    newest = folder / CHECKPOINT
    _check_disk_space(state, folder)
    atomic_write(newest, lambda f: torch.save(state, f), before_replace=lambda tmp: _make_room(newest, _sha256(tmp)))
    for stale in list_checkpoints(folder)[keep:]:
        stale.unlink(missing_ok=True)
        _sidecar(stale).unlink(missing_ok=True)
    return newest


def _make_room(newest: Path, digest: str) -> None:
    """Move the current ``newest`` aside (to ``checkpoint-step<N>.pt``, or ``.corrupt`` when unreadable) and
    record ``digest``, the checksum of the new checkpoint about to take its name."""
    if newest.is_file():
        step = checkpoint_step(newest)
        recorded = _recorded_digest(newest)
        if step is None:  # unreadable: keep it for inspection, never as a candidate
            os.replace(newest, newest.with_name(newest.name + ".corrupt"))
        else:
            older = newest.with_name(f"checkpoint-step{step}.pt")
            if recorded:
                _write_sidecar(older, recorded)
            os.replace(newest, older)
        _sidecar(newest).unlink(missing_ok=True)
    _write_sidecar(newest, digest)


def _verify(path: Path) -> None:
    """Check ``path`` against its ``.sha256`` sidecar (a warning when there is none)."""
    recorded = _recorded_digest(path)
    if recorded is None:
        # one line, as dalip's other notices (logging): a Python warning adds its source line
        logger.warning("%s: no checksum file %s; loading it unverified", path, _sidecar(path).name)
    elif (actual := _sha256(path)) != recorded:
        older = [p.name for p in list_checkpoints(path.parent) if p.name != path.name]
        raise CorruptCheckpointError(
            f"{path} is corrupt: its sha256 {actual[:16]}... differs from the recorded {recorded[:16]}... "
            f"({_sidecar(path).name}); the file was truncated or changed after it was written"
            + (f" (older checkpoints of the run: {', '.join(older)})" if older else "")
        )


def discard_corrupt_checkpoints(folder: str | Path) -> Path | None:
    """Set aside the newest checkpoints that fail their checksum, down to the newest intact one (``--resume``).

    Each bad checkpoint is renamed ``<name>.corrupt`` (kept for inspection, never
    loaded again) with a warning naming the file and the reason.

    Returns:
        the newest intact checkpoint, or None when the folder holds no checkpoint.

    Raises:
        CorruptCheckpointError: checkpoints exist but none is intact (each named with its reason).
    """
    bad = []
    for path in list_checkpoints(folder):
        try:
            _verify(path)
        except CorruptCheckpointError as err:
            bad.append(str(err))
            warnings.warn(f"skipping {err}; renamed to {path.name}.corrupt", RuntimeWarning, stacklevel=2)
            os.replace(path, path.with_name(path.name + ".corrupt"))
            _sidecar(path).unlink(missing_ok=True)
            continue
        return path
    if bad:
        raise CorruptCheckpointError(f"no intact checkpoint in {folder} to resume from: {'; '.join(bad)}")
    return None


def capture_rng() -> dict[str, Any]:
    """The RNG states that affect training (torch CPU / CUDA, Python)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, after checking its ``.sha256`` sidecar.

    A checkpoint without a sidecar (written before checksums, or by `atomic_save`)
    loads with a warning that it is unverified.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CorruptCheckpointError: the file does not match its checksum, or cannot be read.
        ValueError: the file is not a dalip training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    _verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # name the file and the reason
        raise CorruptCheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a dalip training checkpoint (no model/step)")
    return state
