"""Resume without replay (issue 20, item 3): a resumed sharded run starts at its stored position.

The checkpoint holds each reader's stream position (epoch, shard, offset, shuffle block); a
resumed run skips to it at the tar level, so its first batch decodes about as many images as a
fresh run's first batch, whatever the step, and its batches are those of the uninterrupted run.
``benchmarks/stream_resume.py`` measures the time to the first batch (fresh vs resumed).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from dalip.data.batch import collate
from dalip.data.kinds import wds
from dalip.train.batches import TrainBatches
from dalip.train.distributed import DistInfo

SHARDS, PER_SHARD, BATCH = 8, 60, 4


def write_shards(folder: Path, shards: int = SHARDS, per_shard: int = PER_SHARD) -> str:
    """``shards`` tar files of ``per_shard`` 8 x 8 PNG + caption samples; the brace pattern of them."""
    pixels = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(pixels, "PNG")
    for s in range(shards):
        with tarfile.open(folder / f"shard-{s:02d}.tar", "w") as tar:
            for i in range(per_shard):
                for ext, data in (("png", pixels.getvalue()), ("txt", f"shard {s} sample {i}".encode())):
                    info = tarfile.TarInfo(f"{s:02d}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"shard-{{00..{shards - 1:02d}}}.tar")


def batches(pattern: str, workers: int = 0) -> TrainBatches:
    spec = wds.WdsSpec(train=pattern, image_size=8, shuffle_buffer=16, augment=False)
    return TrainBatches(spec.source(), collate, BATCH, workers, seed=0, dist=DistInfo(0, 0, 1, torch.device("cpu")))


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts the images decoded in this process."""
    count = [0]
    decode = wds.decode_image

    def counted(*args, **kwargs):
        count[0] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(wds, "decode_image", counted)
    return count


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resumed_stream_decodes_only_what_it_trains_on(tmp_path, decodes, workers):
    pattern = write_shards(tmp_path)
    straight, states, texts = batches(pattern, workers), [], []
    for _ in range(200):  # 800 samples: past the first epoch (480) into the second
        texts.append(next(straight).texts)
        states.append(straight.state_dict())
    fresh = batches(pattern, workers)
    decodes[0] = 0
    next(fresh)
    fresh_decodes = decodes[0]
    for step in (40, 119, 199):  # mid-epoch, the epoch boundary (480 samples), deep into the second epoch
        resumed = batches(pattern, workers)
        resumed.load_state_dict(states[step - 1])
        decodes[0] = 0
        assert next(resumed).texts == texts[step]  # exactly the uninterrupted run's batch
        if workers == 0:  # (workers decode in their own processes)
            assert decodes[0] <= fresh_decodes + 16  # the rest of one shuffle block at most, not `step` batches
        assert [next(resumed).texts for _ in range(199 - step)] == texts[step + 1 :]
