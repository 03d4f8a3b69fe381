"""Where dalip's and open_clip's trainers spend a CPU step: the parts that differ, timed in one run.

``vs_open_clip_train.py`` compares the two trainers end to end; this script times
the pieces in which their recipes differ, on the same model and data:

* image decoding + training transform (per image): dalip's `decode_image` and
  ``DataSpec`` transform (open_clip's random resized crop, scale 0.9-1) vs
  ``open_clip.image_transform(is_train=True)`` (random resized crop 0.9-1);
* tokenising a batch of captions (dalip: in the training process; open_clip: in its
  loader workers);
* the optimizer step: torch's default AdamW, as open_clip_train builds it (a
  per-tensor loop on a CPU) vs dalip's fused AdamW;
* gradient-norm clipping (dalip: ``optim.grad_clip`` 1.0 by default; open_clip: off).

    python benchmarks/recipe_profile.py --model ViT-S-32 --batch 16

Prints a markdown table (median milliseconds, and per training step at ``--batch``);
``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import numpy as np
import open_clip
import torch
from PIL import Image

from dalip.data import create_dataset
from dalip.data.batch import decode_image


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-S-32", help="open_clip architecture (random init)")
    ap.add_argument("--batch", type=int, default=16, help="images per training step")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="dalip-recipe-profile-"))
    rng = np.random.default_rng(0)
    path = folder / "img.jpg"  # a smooth random 256 px JPEG, as vs_open_clip_train.py generates
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((256, 256), Image.BICUBIC).save(path, quality=90)
    dalip_tf = create_dataset({"dataset": "csv", "train": "unused.csv", "image_size": args.image_size}).train_transform()
    open_clip_tf = open_clip.image_transform(args.image_size, is_train=True)
    tokenizer = open_clip.get_tokenizer(args.model)
    captions = [f"a red striped circle number {i}" for i in range(args.batch)]

    model = open_clip.create_model(args.model)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    default_adamw = torch.optim.AdamW(params, lr=1e-4)  # open_clip_train: torch's default implementation
    fused_adamw = torch.optim.AdamW(params, lr=1e-4, fused=True)  # dalip.train.build_optimizer

    rows = [
        ("decode + train transform, dalip (per image)", median_ms(lambda: dalip_tf(decode_image(path)), 20 * args.repeat), args.batch),
        ("decode + train transform, open_clip (per image)",
         median_ms(lambda: open_clip_tf(Image.open(path).convert("RGB")), 20 * args.repeat), args.batch),
        (f"tokenise {args.batch} captions (dalip: training process)", median_ms(lambda: tokenizer(captions), 4 * args.repeat), 1),
        ("AdamW step, torch default (open_clip_train)", median_ms(default_adamw.step, args.repeat), 1),
        ("AdamW step, fused (dalip)", median_ms(fused_adamw.step, args.repeat), 1),
        ("gradient-norm clipping (dalip default; open_clip off)",
         median_ms(lambda: torch.nn.utils.clip_grad_norm_(params, 1e9), args.repeat), 1),
    ]
    lines = [
        f"# Recipe profile: the parts where dalip's and open_clip's trainers differ ({args.model}, CPU)",
        "",
        *C.machine_lines("cpu"),
        f"- {sum(p.numel() for p in params) / 1e6:.1f} M trainable parameters; images 256 px JPEG -> {args.image_size} px",
        "",
        f"| part | median (ms) | per step of {args.batch} images (ms) |",
        "|---|---:|---:|",
        *(f"| {name} | {ms:.2f} | {ms * per_step:.1f} |" for name, ms, per_step in rows),
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        C.write_report(text, args.out)
    else:
        print(text)


if __name__ == "__main__":
    main()
