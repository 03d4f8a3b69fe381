"""The error types shared across dalip's layers: every one a user can cause and fix (the CLI prints it as one line, exit 2)."""

from __future__ import annotations

__all__ = [
    "ConfigError", "CorruptCheckpointError", "HubUnavailableError", "NonFiniteEmbeddingError", "NonFiniteLossError",
    "PretrainedMismatchError", "RunFolderError",
]


class ConfigError(ValueError):
    """A malformed config: unknown key, wrong type, unknown component, bad value."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is unreadable or does not match its recorded checksum."""


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked (an existing run, another writer)."""


class HubUnavailableError(ConfigError):
    """Hub weights or configs that cannot be fetched: no network, the hub unreachable, or ``HF_HUB_OFFLINE``
    set, and the files not in the local cache (the message names the tag or repo and the cause).

    A `ConfigError` so that every command reports it in one line (exit 2): the fix is a
    setting (the network, the cache, ``HF_HUB_OFFLINE``, or another model name).
    """


class NonFiniteLossError(ValueError):
    """Training diverged: a non-finite loss (or non-finite weights after a step).

    The run stops at the next logging / checkpoint step without writing a
    checkpoint or evaluating; the checkpoints written before stay as they were.
    """


class NonFiniteEmbeddingError(ValueError):
    """Encoded features contain NaN or Inf; raised instead of scoring them (the message names the embedding)."""


class PretrainedMismatchError(ValueError):
    """A pretrained checkpoint that does not fit the model's towers (``strict`` loading)."""
