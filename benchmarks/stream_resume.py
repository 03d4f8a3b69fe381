"""Time to the first batch of a sharded run: fresh vs resumed at step N (resume without replay).

A resumed webdataset run skips to each reader's stored position at the tar level
(`dalip.data.kinds.wds.WebDatasetShards.reader_stream`), so its first batch should take
about as long as a fresh run's, whatever N; replaying the stream (dalip before 2026-12-07)
decoded every sample the run had already trained on. Rounds are interleaved (fresh,
resumed, fresh, ...) and the medians reported.

    python benchmarks/stream_resume.py [--steps 200] [--batch 32] [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import numpy as np
import torch
from PIL import Image

from dalip.data.batch import collate
from dalip.data.kinds.wds import WdsSpec
from dalip.train.batches import TrainBatches
from dalip.train.distributed import DistInfo


def write_shards(folder: Path, shards: int, per_shard: int, size: int) -> str:
    """JPEG (``size`` px, noise) + caption shards; their brace pattern."""
    rng = np.random.default_rng(0)
    for s in range(shards):
        with tarfile.open(folder / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(per_shard):
                image = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(image, "JPEG")
                for ext, data in (("jpg", image.getvalue()), ("txt", f"shard {s} sample {i}".encode())):
                    info = tarfile.TarInfo(f"{s:03d}{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"shard-{{000..{shards - 1:03d}}}.tar")


def first_batch_s(pattern: str, args: argparse.Namespace, state: dict | None) -> float:
    spec = WdsSpec(train=pattern, image_size=args.image_size, shuffle_buffer=args.shuffle_buffer)
    batches = TrainBatches(spec.source(), collate, args.batch, args.workers, 0, DistInfo(0, 0, 1, torch.device("cpu")))
    if state is not None:
        batches.load_state_dict(state)
    start = time.perf_counter()
    next(batches)
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="resume after this many batches")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--shuffle-buffer", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        per_shard = 100
        shards = -(-(args.steps + 20) * args.batch // per_shard)
        pattern = write_shards(Path(folder), shards, per_shard, args.image_size)
        spec = WdsSpec(train=pattern, image_size=args.image_size, shuffle_buffer=args.shuffle_buffer)
        run = TrainBatches(spec.source(), collate, args.batch, args.workers, 0, DistInfo(0, 0, 1, torch.device("cpu")))
        for _ in range(args.steps):
            next(run)
        state = run.state_dict()
        fresh, resumed = [], []
        for _ in range(args.rounds):
            fresh.append(first_batch_s(pattern, args, None))
            resumed.append(first_batch_s(pattern, args, state))
    f, r = statistics.median(fresh), statistics.median(resumed)
    print("# Resume without replay: time to the first batch of a sharded run, fresh vs resumed\n")
    print(*C.machine_lines("cpu"), sep="\n")
    print(f"- {shards} shards x {per_shard} JPEGs ({args.image_size} px), batch {args.batch}, {args.workers} workers, "
          f"shuffle block {args.shuffle_buffer}; {args.rounds} interleaved rounds")
    print(f"- first batch, fresh run: **{f:.2f} s** (median)")
    print(f"- first batch, resumed at step {args.steps}: **{r:.2f} s** (median)")
    print(f"- resumed / fresh: **{r / f:.2f}x**")


if __name__ == "__main__":
    main()
