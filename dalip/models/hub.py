"""Hub downloads that fail at once, in one line, when there is no network or hub access.

open_clip fetches hub weights and configs itself (``huggingface_hub.hf_hub_download``);
when the hub cannot be reached, huggingface_hub retries every file that is not cached
for about 25 s and open_clip wraps the error in tracebacks. Here:

- `hub_repo`: the hub repo a model name (an ``hf-hub:`` name, or an architecture with
  a hub tag) downloads from;
- `check_hub_access`: a repo with nothing in the local cache while the hub does not
  answer within seconds (or ``HF_HUB_OFFLINE`` is set) is refused before open_clip starts;
- `hub_errors`: an offline or connection error raised inside open_clip (a repo only partly
  cached, a connection lost midway) becomes the same one-line `HubUnavailableError`.

With the hub reachable, or the repo cached, open_clip downloads exactly as it does on its own.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path

from dalip.errors import HubUnavailableError

__all__ = ["HUB_TIMEOUT_S", "check_hub_access", "hub_errors", "hub_repo", "hub_unreachable", "offline_cause"]

HUB_TIMEOUT_S = 5.0
"""Seconds the hub has to answer one request before it counts as unreachable."""

_NETWORK_ERRORS = {"TransportError", "ConnectionError", "Timeout", "TimeoutException", "TimeoutError"}
"""Class names (anywhere in an error's MRO) of connection failures: the builtin ones and those of
httpx / requests, which huggingface_hub raises (matched by name: no HTTP client is imported here)."""


def hub_repo(name: str, hub_tag: str | None) -> str | None:
    """The hub repo ``open_clip.create_model(name, pretrained=hub_tag)`` downloads from, or None.

    None for a ``local-dir:`` name, no tag, or a tag whose weights come from a URL or a file.
    """
    from open_clip.factory import parse_model_name
    from open_clip.pretrained import get_pretrained_cfg, has_hf_hub

    schema, identifier = parse_model_name(name)
    if schema == "hf-hub":
        return identifier
    if schema or hub_tag is None or not has_hf_hub():
        return None
    cfg = get_pretrained_cfg(name, hub_tag)
    if "file" in cfg or not cfg.get("hf_hub"):
        return None
    return os.path.split(cfg["hf_hub"])[0] or None  # "org/repo/file.bin" or "org/repo/", as open_clip splits it


def _cached(repo: str, cache_dir: str | None) -> bool:
    """True when the hub cache holds a snapshot of ``repo`` (open_clip then falls back to it at once)."""
    from huggingface_hub.file_download import repo_folder_name

    snapshots = _cache_folder(cache_dir) / repo_folder_name(repo_id=repo, repo_type="model") / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _cache_folder(cache_dir: str | None) -> Path:
    """The hub cache open_clip downloads into: its ``cache_dir``, else huggingface_hub's (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE)


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (``HF_HUB_OFFLINE``, no answer in ``timeout`` seconds), or None.

    One HEAD request to the hub endpoint through huggingface_hub's own client (its
    proxy settings and ``HF_ENDPOINT`` apply); any HTTP answer counts as reachable.
    """
    from huggingface_hub import constants, get_session, is_offline_mode

    if is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - any failure to get an answer means no access
        return f"{constants.ENDPOINT} did not answer ({_short(err)})"
    return None


def check_hub_access(what: str, repo: str, cache_dir: str | None = None) -> None:
    """Refuse ``repo`` at once when the local cache has nothing of it and the hub cannot be reached.

    Args:
        what: the name, tag and repo for the message, e.g. ``"pretrained tag 'openai' of 'ViT-B-16'"``.
        repo: the hub repo id (`hub_repo`).
        cache_dir: open_clip's ``cache_dir`` (None: huggingface_hub's cache).

    Raises:
        HubUnavailableError: naming ``what``, the repo and the cause.
    """
    if _cached(repo, cache_dir):
        return
    reason = hub_unreachable()
    if reason is not None:
        raise HubUnavailableError(
            f"{what}: no network or hub access: {reason}, and {repo} is not in the local cache "
            f"({_cache_folder(cache_dir)}). Run once with hub access to cache it, or use a local file / local-dir: model"
        )


def offline_cause(err: BaseException) -> str | None:
    """A short cause when ``err`` or an error it was raised from is an offline / connection failure, else None."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OfflineModeIsEnabled):
            return "HF_HUB_OFFLINE is set and the files are not in the local cache"
        if isinstance(current, LocalEntryNotFoundError):
            return "the hub could not be reached and the files are not in the local cache"
        network = {c.__name__ for c in type(current).__mro__} & _NETWORK_ERRORS
        url_error = isinstance(current, urllib.error.URLError) and not isinstance(current, urllib.error.HTTPError)
        if network or url_error:
            return f"connection failed ({_short(current)})"
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn an offline / connection error raised in the block into a `HubUnavailableError` naming ``what``."""
    try:
        yield
    except HubUnavailableError:
        raise
    except Exception as err:
        cause = offline_cause(err)
        if cause is None:
            raise
        raise HubUnavailableError(f"{what}: no network or hub access: {cause}") from err


def _short(err: BaseException) -> str:
    """The first line of an error's message (its type when empty), at most 200 characters."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
