"""Webdataset sources (local, pipe:, http://, "::" with upsampling), resampled shards and the resumable reader stream."""

from __future__ import annotations

import functools
import io
import itertools
import json
import shutil
import tarfile
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dalip.data.kinds.wds as wds_module
from dalip.data import WebDatasetShards, create_dataset

pytest.importorskip("webdataset")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@functools.cache
def _jpeg(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(out, format="JPEG")
    return out.getvalue()


def _shard(path: Path, tag: str, n: int, bad: tuple[int, ...] = ()) -> list[str]:
    """A shard of ``n`` samples captioned ``{tag}-{k}``; the samples in ``bad`` have an undecodable image."""
    with tarfile.open(path, "w") as tar:
        for k in range(n):
            _add(tar, f"{tag}_{k:03d}.jpg", b"not a jpeg" if k in bad else _jpeg(10 * k % 250))
            _add(tar, f"{tag}_{k:03d}.txt", f"{tag}-{k}".encode())
    return [f"{tag}-{k}" for k in range(n) if k not in bad]


def _texts(samples) -> list[str | None]:
    return [None if s is None else s[1] for s in samples]


def _take(stream, n: int) -> list[tuple[str | None, dict]]:
    return [(None if s is None else s[1], pos) for s, pos in itertools.islice(stream, n)]


def _first_epoch(items: list[tuple[str | None, dict]], epoch: int = 0) -> list[str | None]:
    """The captions of epoch ``epoch`` of a stream started there: up to the item whose next position is epoch + 1."""
    last = next(i for i, (_, position) in enumerate(items) if position["epoch"] == epoch + 1)
    return [t for t, _ in items[:last + 1]]


# ---------------------------------------------------------------- sources
@pytest.fixture
def http_shards(tmp_path):
    """Four shards served over HTTP from a loopback server: ``(url pattern, captions in shard order)``."""
    root = tmp_path / "www"
    root.mkdir()
    captions = [c for s in range(4) for c in _shard(root / f"shard-{s}.tar", f"h{s}", 3)]

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no request lines on the test's stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/shard-{{0..3}}.tar", captions
    server.shutdown()
    server.server_close()
    thread.join()


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="webdataset reads http:// through curl")


@needs_curl
def test_http_shards_through_webdataset_opener(http_shards):
    pattern, captions = http_shards
    data = WebDatasetShards(pattern, shuffle_buffer=0, shuffle_shards=False)
    assert data.shards[0].startswith("http://127.0.0.1:") and len(data.shards) == 4
    assert _texts(data.epoch_samples()) == captions
    by_worker = [_texts(data.epoch_samples(r, 2)) for r in range(2)]  # by shard: 2 shards each
    assert sorted(by_worker[0] + by_worker[1]) == sorted(captions)
    assert not set(by_worker[0]) & set(by_worker[1])


@needs_curl
def test_missing_remote_shard_is_one_bad_sample_not_refused(http_shards):
    pattern, captions = http_shards
    missing = pattern.replace("{0..3}", "404")
    data = WebDatasetShards(f"{pattern}::{missing}", shuffle_buffer=0, shuffle_shards=False)  # not checked up front
    assert _texts(data.epoch_samples()) == [*captions, None]


def test_pipe_and_local_sources_joined(tmp_path):
    first = _shard(tmp_path / "a.tar", "a", 3)
    second = _shard(tmp_path / "b.tar", "b", 2, bad=(0,))
    data = WebDatasetShards(f"pipe:cat {tmp_path / 'a.tar'}::{tmp_path / 'b.tar'}", shuffle_buffer=0,
                            shuffle_shards=False)
    assert data.shards == [f"pipe:cat {tmp_path / 'a.tar'}", str(tmp_path / "b.tar")]
    assert _texts(data.epoch_samples()) == [*first, None, *second]


def test_missing_local_shards_and_unknown_schemes_refused(tmp_path):
    _shard(tmp_path / "s-0.tar", "s", 1)
    with pytest.raises(FileNotFoundError, match=r"train: 2 of 3 local shards do not exist"):
        WebDatasetShards(str(tmp_path / "s-{0..2}.tar"))
    with pytest.raises(FileNotFoundError, match="1 of 2 local shards"):
        WebDatasetShards(f"file://{tmp_path}/s-0.tar::file://{tmp_path}/s-9.tar")
    with pytest.raises(ValueError, match=r"pipe:aws s3 cp s3://bucket/x-0.tar -"):
        WebDatasetShards("s3://bucket/x-{0..1}.tar")
    with pytest.raises(ValueError, match="unknown scheme 'nope'"):
        WebDatasetShards("nope://host/x.tar")


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"upsampling": [1, 2]}, ValueError, "upsampling needs resampled"),
    ({"resampled": True, "num_samples": 10, "upsampling": [1]}, ValueError, "one factor per '::'-separated source"),
    ({"resampled": True, "num_samples": 10, "upsampling": [1, -1]}, ValueError, "numbers >= 0"),
    ({"resampled": True, "num_samples": 10, "upsampling": [0, 0]}, ValueError, "not all 0"),
    ({"resampled": True, "num_samples": 10, "upsampling": "1::2"}, TypeError, "list of numbers"),
    ({"resampled": True}, ValueError, "resampled: true needs num_samples"),
    ({"resampled": True, "num_samples": 0}, ValueError, "needs num_samples"),
    ({"num_samples": 100}, ValueError, "num_samples sets the epoch size of a resampled stream"),
    ({"resampled": "yes", "num_samples": 10}, TypeError, "resampled must be true or false"),
])
def test_spec_options_checked_without_reading_shards(options, error, match):
    with pytest.raises(error, match=match):
        create_dataset({"dataset": "wds", "train": "/nowhere/a-{0..3}.tar::/nowhere/b.tar", **options})
    spec = create_dataset({"dataset": "wds", "train": "a-{0..3}.tar::b.tar", "resampled": True,
                           "num_samples": 10, "upsampling": [1, 2]})
    assert (spec.resampled, spec.num_samples, spec.upsampling) == (True, 10, [1, 2])


# ---------------------------------------------------------------- resampled
def test_upsampling_counts_follow_the_factors(tmp_path):
    for s in range(2):
        _shard(tmp_path / f"a-{s}.tar", f"a{s}", 4)
        _shard(tmp_path / f"b-{s}.tar", f"b{s}", 4)
    pattern = f"{tmp_path}/a-{{0..1}}.tar::{tmp_path}/b-{{0..1}}.tar"
    data = WebDatasetShards(pattern, shuffle_buffer=8, upsampling=[1, 3], resampled=True, num_samples=2000)
    texts = _texts(data.epoch_samples())
    assert len(texts) == 2000
    share_b = sum(t.startswith("b") for t in texts) / len(texts)
    assert share_b == pytest.approx(0.75, abs=0.06)  # 500 shard draws: 3.5 sd
    even = WebDatasetShards(pattern, upsampling=[1, 1], resampled=True, num_samples=2000)
    assert sum(t.startswith("b") for t in _texts(even.epoch_samples())) / 2000 == pytest.approx(0.5, abs=0.08)


def test_resampled_streams_seeded_per_reader(tmp_path):
    for s in range(6):
        _shard(tmp_path / f"r-{s}.tar", f"r{s}", 3)
    pattern = str(tmp_path / "r-{0..5}.tar")

    def stream(reader: int, seed: int = 0, position=None, n: int = 30):
        data = WebDatasetShards(pattern, shuffle_buffer=4, seed=seed, resampled=True, num_samples=40)
        return _take(data.reader_stream(reader, 2, position), n)

    first = stream(0)
    assert stream(0) == first  # a rerun with the same seed sees the same samples
    assert _texts(s for s, _ in stream(1)) != _texts(s for s, _ in first)  # another reader, other draws
    assert [t for t, _ in stream(0, seed=1)] != [t for t, _ in first]
    assert [p for _, p in first[:21]] == [{"epoch": 0, "drawn": n} for n in range(1, 20)] + [
        {"epoch": 1, "drawn": 0}, {"epoch": 1, "drawn": 1}]  # num_samples // readers a reader's epoch
    resumed = stream(0, position=first[4][1], n=16)  # reseeded from (epoch 0, drawn 5): the epoch still ends at 20
    assert [p for _, p in resumed] == [p for _, p in first[5:21]]
    assert stream(0, position=first[4][1], n=16) == resumed
    json.dumps(first[-1][1])


# ---------------------------------------------------------------- the resumable stream
@pytest.fixture
def uneven_shards(tmp_path) -> tuple[str, list[str]]:
    """Four shards of 3, 5, 2 and 4 samples, one undecodable image, one shard cut inside its third sample."""
    good = _shard(tmp_path / "u-0.tar", "u0", 3) + _shard(tmp_path / "u-1.tar", "u1", 5, bad=(2,))
    good += _shard(tmp_path / "u-2.tar", "u2", 2)
    whole = tmp_path / "whole.tar"
    _shard(whole, "u3", 4)
    with tarfile.open(whole) as tar:
        cut = tar.getmember("u3_002.jpg").offset_data + 5
    (tmp_path / "u-3.tar").write_bytes(whole.read_bytes()[:cut])
    return str(tmp_path / "u-{0..3}.tar"), good + ["u3-0", "u3-1"]


# 6 readers > 4 shards: split by sample; pipe: shards are streams, skipped by reading (local ones by seeking)
@pytest.mark.parametrize(("readers", "pipe"), [(1, False), (2, False), (6, False), (2, True), (6, True)])
def test_reader_stream_resumes_exactly_from_every_position(uneven_shards, readers, pipe):
    pattern, good = uneven_shards
    data = WebDatasetShards(f"pipe:cat {pattern}" if pipe else pattern, shuffle_buffer=3, seed=5)
    epochs = []
    for reader in range(readers):
        items = _take(data.reader_stream(reader, readers), 30 // readers + 8)
        epochs.append(_first_epoch(items))
        for n, (_, position) in enumerate(items[:-1]):
            assert json.loads(json.dumps(position)) == position
            ahead = min(4 if pipe else 9, len(items) - n - 1)  # a pipe: a process per shard opened
            resumed = _take(data.reader_stream(reader, readers, position), ahead)
            assert resumed == items[n + 1:n + 1 + len(resumed)], (reader, n, position)
        assert {p["epoch"] for _, p in items} >= {1, 2}  # the resumes crossed epoch boundaries
    every = [t for epoch in epochs for t in epoch]
    assert Counter(t for t in every if t is not None) == Counter(good)  # each good sample once per epoch
    assert every.count(None) == 2  # the bad image and the cut shard, each in one reader


def test_resume_skips_earlier_shards_and_decodes_only_what_comes(uneven_shards, monkeypatch):
    pattern, _ = uneven_shards
    data = WebDatasetShards(pattern, shuffle_buffer=4, seed=2)
    items = _take(data.reader_stream(0, 1), 16)
    n = next(i for i, (_, p) in enumerate(items) if p["shard"] >= 2 and p["index"] == 2)  # mid-block, 3rd shard
    position = items[n][1]
    decoded, opened = [], []
    decode, groups = wds_module.decode_image, wds_module.shard_groups

    def counted_decode(raw: bytes, where: str):
        decoded.append(where)
        return decode(raw, where)

    def counted_groups(url: str, first: int = 0, *args, **kwargs):
        opened.append((Path(url).name, first))
        return groups(url, first, *args, **kwargs)

    monkeypatch.setattr(wds_module, "decode_image", counted_decode)
    monkeypatch.setattr(wds_module, "shard_groups", counted_groups)
    _take(data.reader_stream(0, 1), n + 1)
    before = list(decoded)  # the decodes of samples 0 .. n
    decoded.clear()
    _take(data.reader_stream(0, 1), n + 4)
    uninterrupted = decoded[len(before):]  # those of samples n + 1 .. n + 3
    decoded.clear()
    opened.clear()
    resumed = _take(data.reader_stream(0, 1, position), 3)
    assert resumed == items[n + 1:n + 4]
    assert decoded == uninterrupted and len(before) > 3  # nothing before the position is decoded again
    order = list(data.shards)
    np.random.default_rng([2, 0]).shuffle(order)  # the epoch's shard order, as the reader draws it
    assert opened[0] == (Path(order[position["shard"]]).name, position["offset"])  # earlier shards never opened


def test_truncated_shard_reported_once_over_all_readers(uneven_shards, monkeypatch):
    pattern, _ = uneven_shards
    reports = []
    monkeypatch.setattr(wds_module, "report_bad_sample", lambda where, why: reports.append((where, why)))
    data = WebDatasetShards(pattern, shuffle_buffer=0)
    for reader in range(6):
        list(data.epoch_samples(reader, 6))
    cut = [r for r in reports if "unreadable shard" in r[1]]
    assert len(cut) == 1 and cut[0][0].endswith("u-3.tar") and "'u3_002'" in cut[0][1]


def test_iter_is_one_epoch_of_the_reader_stream(uneven_shards):
    pattern, _ = uneven_shards
    data = WebDatasetShards(pattern, shuffle_buffer=3, seed=1)
    data.set_epoch(1)
    stream = data.reader_stream(0, 1, {"epoch": 1, "shard": 0, "offset": 0, "block": 0, "index": 0})
    epoch1 = _first_epoch(_take(stream, 40), epoch=1)
    assert _texts(data) == epoch1 and len(epoch1) == 13  # 12 good, the bad image, the cut shard
    data.set_epoch(0)
    assert _texts(data) == _first_epoch(_take(data.reader_stream(0, 1), 40)) != epoch1


def test_positions_of_the_other_kind_and_empty_readers_refused(tmp_path):
    _shard(tmp_path / "one.tar", "o", 1)
    data = WebDatasetShards(str(tmp_path / "one.tar"))
    with pytest.raises(ValueError, match="integer keys epoch, shard, offset, block, index"):
        data.reader_stream(0, 1, {"epoch": 0, "drawn": 3})  # refused at the call, before any reading
    with pytest.raises(ValueError, match="reader must be in"):
        data.reader_stream(2, 2)
    with pytest.raises(ValueError, match="reader 1 of 2 got no samples"):
        next(data.reader_stream(1, 2))  # one sample, two readers: never one for reader 1
    resampled = WebDatasetShards(str(tmp_path / "one.tar"), resampled=True, num_samples=1)
    with pytest.raises(ValueError, match="num_samples=1 gives each of the 2 readers"):
        resampled.reader_stream(0, 2)


def test_val_beside_a_resampled_upsampled_stream_is_a_plain_source(tmp_path):
    """``val`` (or ``mix_with``) of the same kind keeps the shuffle options, not the training stream's draws."""
    from dalip.data import create_dataset
    from dalip.data.build import source_spec

    spec = create_dataset("wds", train="a.tar::b.tar", upsampling=[1, 2], resampled=True, num_samples=100,
                          shuffle_buffer=7)
    val = source_spec(spec, str(tmp_path / "v.tar"))
    assert (val.train, val.upsampling, val.resampled, val.num_samples, val.shuffle_buffer) == (
        str(tmp_path / "v.tar"), None, False, None, 7)
