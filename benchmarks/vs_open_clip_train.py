"""dalip's training recipe vs open_clip's own trainer: images per second on the same job.

Issue 8, item 3. Both trainers run the same model (random init), batch, precision,
loss (plain CLIP) and data: a caption CSV of generated JPEG files (smooth random
images, 256 px, so decoding and resizing cost what small web images cost), read
by each trainer's own CSV loader with the same number of workers. Each trainer
logs its throughput every step (open_clip: ``.../s/gpu`` of its log lines;
dalip: ``images_per_s`` of ``metrics.jsonl`` with ``run.log_every=1``); the
report gives the median over the steps after ``--skip`` warm-up steps, for each
of ``--rounds`` alternating runs, and the ratio dalip / open_clip (goal >= 1.0).

    python benchmarks/vs_open_clip_train.py            # GPU: ViT-B-16, batch 256, bf16, 60 steps
    python benchmarks/vs_open_clip_train.py --device cpu --model ViT-S-32 --batch 4 --steps 4 --skip 1 \\
        --precision fp32 --workers 1 --image-files 8   # CPU smoke run

Needs ``pandas`` (open_clip's CSV loader). Writes ``results/vs_open_clip_train_<device>.md``
(``--out``) and prints it; the runs' logs stay in ``--work`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import numpy as np
import torch
import yaml
from PIL import Image

GOAL = 1.0  # dalip images/s / open_clip images/s
WORDS = ["red", "blue", "small", "large", "striped", "round", "bright", "dark", "green", "soft"]
THINGS = ["circle", "square", "cloud", "flower", "tile", "wave", "leaf", "stone", "shell", "star"]
OPEN_CLIP_RATE = re.compile(r"Batch \(t\): [\d.]+, ([\d.]+)/s, ([\d.]+)/s/gpu")


def make_data(folder: Path, files: int, rows: int, seed: int = 0) -> Path:
    """``files`` smooth random JPEGs (256 px) and a tab-separated caption CSV of ``rows`` rows
    (files repeated) in open_clip's default layout (columns ``filepath``, ``title``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(files):
        path = folder / f"img{i:05d}.jpg"
        if not path.is_file():
            coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((256, 256), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    lines = ["filepath\ttitle"]
    words = np.random.default_rng(seed + 1)  # captions do not depend on which images already exist
    for r in range(rows):
        first, second = words.choice(WORDS, 2)
        lines.append(f"{paths[r % files]}\ta {first} {second} {words.choice(THINGS)}")
    csv = folder / f"train_{rows}.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def _run(cmd: list[str], log: Path, env: dict) -> float:
    """Run ``cmd`` with stdout + stderr into ``log``; returns the wall time; raises with the log's tail."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit code {code}; end of {log}:\n{tail}")
    return time.perf_counter() - t0


def run_open_clip(args, csv: Path, work: Path, tag: str, env: dict) -> tuple[list[float], float]:
    """open_clip_train.main on the CSV; returns (images/s per logged step, wall seconds)."""
    precision = {"bf16": "amp_bf16", "fp32": "fp32"}[args.precision]
    cmd = [
        sys.executable, "-m", "open_clip_train.main", "--model", args.model, "--train-data", str(csv),
        "--dataset-type", "csv", "--batch-size", str(args.batch), "--precision", precision,
        "--workers", str(args.workers), "--epochs", "1", "--lr", "5e-4", "--warmup", "10",
        "--log-every-n-steps", "1", "--logs", str(work), "--name", tag, "--report-to", "", "--seed", "0",
    ]
    wall = _run(cmd, work / f"{tag}.log", env)
    rates = [float(m.group(2)) for m in OPEN_CLIP_RATE.finditer((work / tag / "out.log").read_text())]
    return rates, wall


def run_dalip(args, csv: Path, work: Path, tag: str, env: dict) -> tuple[list[float], float]:
    """``dalip train`` on the same CSV as plain CLIP; returns (images/s per step, wall seconds)."""
    config = {
        "model": {"name": args.model, "first_order": "tower", "second_order": None},
        "loss": {"name": "clip"},
        "data": {"spec": {"dataset": "csv", "train": str(csv), "image_size": args.image_size},
                 "batch_size": args.batch, "workers": args.workers},
        "optim": {"lr": 5e-4, "head_lr": 5e-4, "warmup_steps": 10, "steps": args.steps},
        "run": {"precision": args.precision, "log_every": 1, "checkpoint_every": 10**6},
    }
    path = work / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "dalip.cli", "train", "--config", str(path), "--output", str(work / tag)]
    wall = _run(cmd, work / f"{tag}.log", env)
    rows = [json.loads(line) for line in (work / tag / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["images_per_s"] for r in rows], wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16", help="an open_clip architecture name (both trainers)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    ap.add_argument("--skip", type=int, default=10, help="warm-up steps left out of the medians")
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of each trainer")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1), help="data-loader workers, each")
    ap.add_argument("--image-files", type=int, default=2048, help="distinct generated images")
    ap.add_argument("--image-size", type=int, default=224, help="model input size (dalip's CSV transform)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--work", help="folder for data and logs (default: a temporary folder)")
    ap.add_argument("--out", help="results file (default results/vs_open_clip_train_<device>.md)")
    args = ap.parse_args(argv)
    if args.steps <= args.skip:
        ap.error(f"--steps ({args.steps}) must exceed --skip ({args.skip})")
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))
    if kind == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    work = Path(args.work or tempfile.mkdtemp(prefix="dalip-vs-open-clip-"))
    csv = make_data(work / "data", args.image_files, args.steps * args.batch)
    results: dict[str, list[tuple[float, float]]] = {"open_clip": [], "dalip": []}
    for r in range(args.rounds):
        for name, runner in (("open_clip", run_open_clip), ("dalip", run_dalip)):
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr)
            rates, wall = runner(args, csv, work, f"{name}_{r}", env)
            if len(rates) <= args.skip:
                raise RuntimeError(f"{name} logged {len(rates)} steps, fewer than --skip + 1; see {work}")
            results[name].append((statistics.median(rates[args.skip:]), wall))
    lines = [
        f"# dalip vs open_clip_train: training throughput ({kind})",
        "",
        *C.machine_lines(kind),
        f"- model {args.model} (random init), batch {args.batch}, precision {args.precision}, plain CLIP loss,"
        f" {args.steps} steps per run, medians over steps {args.skip + 1}-{args.steps}; {args.workers} loader workers"
        f" each; data: {args.image_files} generated 256 px JPEGs in a {args.steps * args.batch}-row caption CSV",
        "",
        "| round | open_clip images/s | dalip images/s | ratio | open_clip wall (s) | dalip wall (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r, ((oc, oc_wall), (dl, dl_wall)) in enumerate(zip(results["open_clip"], results["dalip"])):
        lines.append(f"| {r + 1} | {oc:.1f} | {dl:.1f} | {dl / oc:.3f} | {oc_wall:.0f} | {dl_wall:.0f} |")
    ratio = statistics.median(d for d, _ in results["dalip"]) / statistics.median(o for o, _ in results["open_clip"])
    lines += [
        "",
        f"- images/s ratio dalip / open_clip: **{ratio:.3f}** (goal >= {GOAL}: {'met' if ratio >= GOAL else 'MISSED'})",
        f"- logs and data: `{work}` (wall times include start-up, the final checkpoint and, for dalip, the plot)",
    ]
    C.write_report("\n".join(lines) + "\n", args.out or os.path.join(C.RESULTS, f"vs_open_clip_train_{kind}.md"))


if __name__ == "__main__":
    main()
