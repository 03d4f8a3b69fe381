"""Where webdataset shards come from, and reading one shard's samples at the tar level.

``data.spec.train`` names shards as open_clip does: local paths, ``pipe:CMD`` (the command
writes the tar to stdout: ``pipe:aws s3 cp s3://bucket/shard-0000.tar -``), ``http(s)://``
URLs (read through curl), and any other scheme webdataset's opener ``webdataset.gopen``
knows; brace patterns (``data-{0000..0999}.tar``) and ``"::"``-joined sources, each of
which may carry an upsampling factor when shards are resampled.

`shard_groups` reads a shard's members grouped by key from the tar headers, so the
samples before a resume point are passed over without their bytes being read (local
files: seeked over; streams: read and dropped) and never decoded.
"""

from __future__ import annotations

import contextlib
import math
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse
from urllib.request import url2pathname

from dalip._optional import require

__all__ = ["RawGroup", "check_shards", "check_stream_options", "expand_shards", "shard_groups", "shard_sources",
           "shard_weights", "source_patterns"]

_WHAT = "webdataset shards"
_LOCAL_SCHEMES = ("", "file")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members (``__index__`` ...), skipped as it does


class RawGroup(NamedTuple):
    """One sample of a shard, not decoded.

    Attributes:
        shard: index of the shard in the reader's list.
        offset: index of the sample (key group) in its shard.
        url: the shard.
        key: the members' common name; for an unreadable rest of a shard, the last good key.
        members: ``{extension: bytes}``, or None for the unreadable rest of a shard (one bad sample).
        error: why the rest of the shard is unreadable (None for a sample).
    """

    shard: int
    offset: int
    url: str
    key: str | None
    members: dict[str, bytes] | None
    error: str | None = None


def source_patterns(train: str | Sequence[str]) -> list[str]:
    """The ``"::"``-separated sources of ``train`` (a string, or a list whose items are taken in turn)."""
    if isinstance(train, str):
        return [part for part in train.split("::") if part]
    return [part for item in train for part in source_patterns(item)]


def shard_sources(train: str | Sequence[str]) -> list[list[str]]:
    """The shards of each source of ``train``, brace patterns and ``${NAME}`` (``WDS_NAME``) expanded."""
    shardlists = require("webdataset.shardlists", "train", _WHAT)
    return [list(shardlists.expand_urls(part)) for part in source_patterns(train)]


def expand_shards(pattern: str | Sequence[str]) -> list[str]:
    """Shard paths or URLs from a list, ``"::"``-separated patterns, or brace patterns (webdataset's expansion).

    ``"data-{000..009}.tar"`` keeps the zero padding; ``"{a,b}.tar"`` lists alternatives;
    ``${NAME}`` is the environment variable ``WDS_NAME``, as in webdataset and open_clip.
    """
    return [shard for source in shard_sources(pattern) for shard in source]


def _local_path(url: str) -> Path | None:
    """The file of a local shard (a path or ``file:`` URL), None for a remote one."""
    parsed = urlparse(url)
    if parsed.scheme not in _LOCAL_SCHEMES:
        return None
    return Path(url2pathname(parsed.path) if parsed.scheme == "file" else url)


def check_shards(urls: Sequence[str]) -> None:
    """Refuse shards webdataset cannot open, and local shards that do not exist (remote ones are not checked).

    Raises:
        ValueError: a scheme webdataset's opener does not know (``s3://`` names the ``pipe:`` form).
        FileNotFoundError: local shards that are missing (counted, the first three named).
    """
    schemes = require("webdataset.gopen", "train", _WHAT).gopen_schemes
    for url in urls:
        scheme = urlparse(url).scheme
        if scheme == "s3":
            raise ValueError(f"train: {url!r}: read S3 shards through the AWS CLI, as webdataset documents: "
                             f"'pipe:aws s3 cp {url} -'")
        if scheme not in _LOCAL_SCHEMES and (scheme == "__default__" or scheme not in schemes):
            known = ", ".join(sorted(f"{s}:" for s in schemes if s != "__default__"))
            raise ValueError(f"train: {url!r}: unknown scheme {scheme!r}; use a local path or one of {known}")
    missing = [url for url in urls if (path := _local_path(url)) is not None and not path.is_file()]
    if missing:
        raise FileNotFoundError(f"train: {len(missing)} of {len(urls)} local shards do not exist, e.g. {missing[:3]}")


def check_stream_options(sources: int, upsampling: Sequence[float] | None, resampled: bool,
                         num_samples: int | None) -> None:
    """The resampling options against each other and the number of ``"::"`` sources.

    Raises:
        TypeError, ValueError: naming the option (``upsampling``, ``resampled``, ``num_samples``).
    """
    if not isinstance(resampled, bool):
        raise TypeError(f"resampled must be true or false, got {resampled!r}")
    if upsampling is not None and (isinstance(upsampling, str) or not isinstance(upsampling, Sequence)):
        raise TypeError(f"upsampling must be a list of numbers, one per '::' source of train, got {upsampling!r}")
    if upsampling is not None:
        if not resampled:
            raise ValueError("upsampling needs resampled: true (shards drawn with replacement, weighted per source)")
        if len(upsampling) != sources:
            raise ValueError(f"upsampling needs one factor per '::'-separated source of train: {sources} sources, "
                             f"got {len(upsampling)} factors {list(upsampling)}")
        if not all(isinstance(f, (int, float)) and math.isfinite(f) and f >= 0 for f in upsampling) or not any(
                upsampling):
            raise ValueError(f"upsampling factors must be finite numbers >= 0, not all 0, got {list(upsampling)}")
    if resampled and (num_samples is None or not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"resampled: true needs num_samples, the epoch size of the stream (an integer >= 1, "
                         f"open_clip's --train-num-samples), got {num_samples!r}")
    if not resampled and num_samples is not None:
        raise ValueError("num_samples sets the epoch size of a resampled stream: set resampled: true, or drop "
                         "num_samples (a plain stream's epoch is one pass over its shards)")


def shard_weights(sources: Sequence[Sequence[str]], upsampling: Sequence[float] | None) -> list[float]:
    """Each shard's draw weight: its source's upsampling factor (1 without), as open_clip's resampled shards."""
    factors = list(upsampling) if upsampling is not None else [1.0] * len(sources)
    return [float(f) for f, shards in zip(factors, sources, strict=True) for _ in shards]


def _seekable(stream: object) -> bool:
    seekable = getattr(stream, "seekable", None)  # webdataset's pipes have no seekable()
    return bool(seekable()) if callable(seekable) else False


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """``(member, key, extension)`` of the regular sample members, without reading their data."""
    tariterators = require("webdataset.tariterators", "train", _WHAT)
    for info in iter(tar.next, None):
        tar.members = []  # a stream: keep no index of the shard in memory
        key, ext = tariterators.base_plus_ext(info.name)
        if not info.isreg() or key is None or _META.match(info.name):
            continue
        yield info, key, ext.lower()


def shard_groups(url: str, first: int = 0, keep: Callable[[int], bool] = lambda offset: True,
                 shard: int = 0) -> Iterator[RawGroup]:
    """The samples of one shard from sample ``first`` on, those whose offset ``keep`` accepts, read but not decoded.

    Members are grouped by key as webdataset does (the key ends at the first dot of the
    name). Samples before ``first`` and those not kept are passed over at the tar level.
    A truncated or unreadable shard ends with one `RawGroup` whose ``members`` is None,
    at the offset of the sample it broke in (kept or not by the same rule); the samples
    before it are kept.

    Args:
        url: a local path or a URL `webdataset.gopen` opens (``pipe:``, ``http(s)://`` ...).
        first: offset of the first sample to yield.
        keep: which offsets this reader takes (every one by default).
        shard: the index stored in the groups' ``shard`` field.
    """
    gopen = require("webdataset.gopen", "train", _WHAT).gopen
    offset, key, members, wanted = -1, None, {}, False
    stream = None
    try:
        stream = gopen(url, "rb")
        with tarfile.open(fileobj=stream, mode="r:*" if _seekable(stream) else "r|*") as tar:
            for info, name, ext in _members(tar):
                if name != key:
                    if wanted:
                        yield RawGroup(shard, offset, url, key, members)
                    offset, key, members = offset + 1, name, {}
                    wanted = offset >= first and keep(offset)
                if wanted:
                    members[ext] = tar.extractfile(info).read()
        if wanted:
            yield RawGroup(shard, offset, url, key, members)
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:  # a cut shard, a failed download or command
        broken = max(offset, 0)
        if broken >= first and keep(broken):
            yield RawGroup(shard, broken, url, key, None, f"{type(err).__name__}: {err}")
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):  # a pipe abandoned early exits with SIGPIPE or curl's 23
                stream.close()
