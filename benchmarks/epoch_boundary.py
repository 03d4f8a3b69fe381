"""How long the training loop waits for its next batch, inside an epoch and at epoch boundaries.

The recipe's `TrainBatches` (one loader for the whole run) is read batch after batch
on the embedded Twemoji training set, with a sleep standing in for the training step
during which the workers prefetch. With a new loader per epoch (dalip before
2026-12-02), the first batch of every epoch waited for an empty pipeline to refill;
the report gives the median wait inside epochs and the waits at the boundaries.

    python benchmarks/epoch_boundary.py [--batch 256] [--workers 2] [--epochs 3] [--step-s 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import torch

from dalip.runs.config import load_config
from dalip.train.batches import build_data
from dalip.train.distributed import DistInfo


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs to read (the boundaries between them are timed)")
    ap.add_argument("--step-s", type=float, default=0.3, help="seconds of 'training step' after each batch")
    args = ap.parse_args(argv)
    config = load_config("quickstart", [f"data.batch_size={args.batch}", f"data.workers={args.workers}",
                                        f"data.spec.image_size={args.image_size}"])
    batches = build_data(config, DistInfo(0, 0, 1, torch.device("cpu"))).train
    per_epoch = batches.per_epoch
    waits = []
    for k in range(args.epochs * per_epoch):
        t0 = time.perf_counter()
        next(batches)
        waits.append(time.perf_counter() - t0)
        time.sleep(args.step_s)
    boundaries = [waits[e * per_epoch] for e in range(1, args.epochs)]
    inside = [w for k, w in enumerate(waits) if k % per_epoch > 1]  # past each epoch's first two batches
    print(*C.machine_lines("cpu"), sep="\n")
    print(f"- Twemoji training set, batch {args.batch}, {args.workers} workers, {per_epoch} batches per epoch,"
          f" {args.step_s} s per step")
    print(f"- wait for a batch inside epochs (median): **{1e3 * statistics.median(inside):.0f} ms**")
    print(f"- wait at the epoch boundaries: **{', '.join(f'{1e3 * w:.0f}' for w in boundaries)} ms**")
    print(f"- first batch of the run (workers starting): {1e3 * waits[0]:.0f} ms")


if __name__ == "__main__":
    main()
