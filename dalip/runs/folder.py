"""Run folders that are never lost: refusal to reuse, ``--overwrite``, a writer lock, fresh result names.

- `claim_run_folder`: a folder that already holds a run (``config.yaml``,
  ``metrics.jsonl`` or a checkpoint) is refused unless the run is resumed or
  overwritten; ``overwrite`` deletes that run's own files (the names in
  `RUN_FILES`) and leaves any other file in the folder alone.
- `RunLock`: ``DIR/.lock``, created with ``O_CREAT | O_EXCL`` and holding the
  writer's pid and host, so two processes never write one run; a lock left by a
  dead process on this host is taken over with a warning.
- `check_resume_config`: a resumed run keeps every setting that alters it; only
  logging, checkpointing, evaluation and speed settings (`RESUME_MAY_CHANGE`) and a
  longer or shorter ``optim.steps`` may differ from the run's ``config.yaml``.
- `unused_path`: ``eval.json`` -> ``eval-2.json`` (``-3``, ...) when the file
  exists, so ``dalip eval`` never replaces a run's results unless told to.
"""

from __future__ import annotations

import os
import shutil
import socket
import warnings
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from dalip.errors import ConfigError, RunFolderError
from dalip.runs.checkpoint import checkpoint_step, discard_corrupt_checkpoints
from dalip.runs.config import TrainConfig, config_from_dict, config_to_dict

__all__ = [
    "RESUME_MAY_CHANGE", "RUN_FILES", "RunLock", "check_resume_config", "claim_run_folder", "discard_unstarted_run",
    "existing_run_files", "unused_path",
]

RUN_FILES = (
    "config.yaml", "metrics.jsonl", "checkpoint.pt", "checkpoint-step*.pt", "checkpoint*.pt.sha256",
    "checkpoint*.pt.corrupt", "eval.json", "eval-*.json", "eval_step*.json", "zero_shot*.json", "training.png",
    "tensorboard", "wandb",
)
"""Glob patterns of the files and folders a run writes (what ``--overwrite`` deletes)."""
_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoint*.pt")  # the files that make a folder a run
LOCK = ".lock"


RESUME_MAY_CHANGE = (
    "run.log_every", "run.checkpoint_every", "run.keep_checkpoints", "run.tensorboard", "run.wandb",
    "run.wandb_project", "run.wandb_name", "run.value_checks", "data.workers", "model.compile",
    "model.grad_checkpointing", "model.cache_frozen", "optim.steps", "eval.*", "distributed.*",
)
"""Settings a resumed run may change: they do not alter what is trained (``optim.steps`` may
extend or shorten the run, down to the checkpoint's step; the cosine schedule then follows
the new length from the resumed step on). Any other difference is refused."""


def existing_run_files(folder: str | Path) -> list[str]:
    """Names of the files in ``folder`` that make it a run (config, metrics, checkpoints), sorted."""
    folder = Path(folder)
    return sorted({p.name for pattern in _MARKERS for p in folder.glob(pattern)}) if folder.is_dir() else []


def _clear_run(folder: Path) -> None:
    for pattern in RUN_FILES:
        for path in folder.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def discard_unstarted_run(folder: str | Path, created: bool) -> bool:
    """After a failure: remove what a run without any checkpoint wrote, so that a plain rerun is accepted.

    Nothing is touched when ``folder`` holds a checkpoint (``--resume`` continues from it).
    The folder itself goes too when ``created`` (this run made it) and nothing else is left.
    Returns whether the run's files were removed.
    """
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("checkpoint*.pt")):
        return False
    _clear_run(folder)
    if created and not any(p.name != LOCK for p in folder.iterdir()):
        shutil.rmtree(folder)
    return True


def claim_run_folder(folder: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Check that a run may write ``folder``; with ``overwrite``, delete the previous run's files.

    Raises:
        RunFolderError: ``folder`` holds a run and neither ``resume`` nor ``overwrite`` is
            set, both are set, or ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--output {folder} is a file, not a run folder")
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other (continue the run, or start it again)")
    found = existing_run_files(folder)
    if found and overwrite:
        print(f"--overwrite: deleting the previous run in {folder} ({', '.join(found)}, ...)", flush=True)
        _clear_run(folder)
    elif found and not resume:
        raise RunFolderError(f"{folder} already holds a run ({', '.join(found[:4])}); pass --resume to continue "
                             "it or --overwrite to delete it and start again (or choose another --output)")


class RunLock:
    """``folder/.lock`` while a process writes the run; released on exit (a context manager).

    The lock file holds ``"<pid> <host>"``. A lock of a live process (or of another
    host: its pid cannot be checked from here) is refused; a lock of a dead pid on
    this host is taken over with a warning.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK
        self.owner = f"{os.getpid()} {socket.gethostname()}"

    def acquire(self) -> Self:
        """Take the lock.

        Raises:
            RunFolderError: another live process holds it (the message names pid and host).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # the second try follows the removal of a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._remove_if_stale():
                    break
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return self
        holder = self._holder() or "an unknown process"
        raise RunFolderError(f"{self.path.parent} is being written by {holder} (lock file {self.path}); "
                             "wait for it to finish, or delete the lock file if that process is gone")

    def _holder(self) -> str | None:
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except FileNotFoundError:
            return None
        return f"pid {pid} on host {host}" if pid else None

    def _remove_if_stale(self) -> bool:
        """Remove a lock whose pid is dead on this host (True), or leave a live / foreign one (False)."""
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            return False
        warnings.warn(f"taking over the stale lock {self.path} of pid {pid}, which is no longer running",
                      RuntimeWarning, stacklevel=3)
        self.path.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        """Delete the lock file if this process holds it."""
        try:
            if self.path.read_text().strip() == self.owner:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.startswith("eval."):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def _plain(tree: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(tree))  # as config.yaml holds it (tuples -> lists)


def _may_change(key: str) -> bool:
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in RESUME_MAY_CHANGE)


def check_resume_config(folder: str | Path, config: TrainConfig) -> None:
    """Compare the config of a resumed run with its saved ``config.yaml``; print the allowed changes.

    Also sets aside corrupt checkpoints (`dalip.runs.checkpoint.discard_corrupt_checkpoints`)
    to find the step the run resumes from.

    Raises:
        RunFolderError: a setting outside `RESUME_MAY_CHANGE` differs (every difference is
            listed), or ``optim.steps`` is below the step of the checkpoint.
        CorruptCheckpointError: the folder has checkpoints, none intact.
    """
    folder = Path(folder)
    saved_path = folder / "config.yaml"
    newest = discard_corrupt_checkpoints(folder)
    if not saved_path.is_file():
        return
    try:
        saved = config_to_dict(config_from_dict(yaml.safe_load(saved_path.read_text()) or {}))
    except (ConfigError, yaml.YAMLError) as err:
        raise RunFolderError(f"cannot resume {folder}: its {saved_path.name} is unreadable ({err})") from None
    before, after = _leaves(_plain(saved)), _leaves(_plain(config_to_dict(config)))
    changed = {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
    refused = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items() if not _may_change(k)]
    if refused:
        raise RunFolderError(
            f"--resume {folder}: the requested config changes settings of the run ({'; '.join(refused)}); "
            f"resume with the run's own config (omit --config) or start a new run (another --output, or --overwrite)"
        )
    step = checkpoint_step(newest) if newest is not None else None
    if step is not None and config.optim.steps < step:
        raise RunFolderError(f"--resume {folder}: optim.steps={config.optim.steps} is below the step of its "
                             f"checkpoint ({step})")
    if changed:
        print(f"resuming {folder} with changed settings (config.yaml updated): "
              + "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()), flush=True)


def unused_path(path: str | Path) -> Path:
    """``path`` if no such file exists, else the first free ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ..."""
    path = Path(path)
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
