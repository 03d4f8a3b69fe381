"""Equal batches on every rank (issue 20, item 1): corrupt images and uneven shards under torchrun (gloo, 2 CPUs).

The feature all-gather of the contrastive loss needs the same number of samples on every
rank: unreadable samples are replaced from the rank's order / stream, so every batch holds
exactly ``data.batch_size`` samples, and a 2-rank step scores the same loss as one process
on the concatenated global batch.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
N_IMAGES = 96


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def _corrupt(i: int) -> bool:
    return i % 5 == 3  # one image in five


@pytest.fixture
def corrupt_csv(tmp_path: Path) -> Path:
    """A CSV of 96 images in which every fifth file is not an image."""
    (tmp_path / "img").mkdir()
    rows = ["filepath\ttitle"]
    for i in range(N_IMAGES):
        path = tmp_path / "img" / f"{i:03d}.png"
        path.write_bytes(b"not a png" if _corrupt(i) else _png(i))
        rows.append(f"{path}\ta photo of thing number {i}")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path / "train.tsv"


@pytest.fixture
def uneven_shards(tmp_path: Path) -> str:
    """Three webdataset shards of 7, 19 and 40 samples, one in five corrupt."""
    i = 0
    for s, size in enumerate((7, 19, 40)):
        with tarfile.open(tmp_path / f"shard-{s}.tar", "w") as tar:
            for _ in range(size):
                for ext, data in (("png", b"broken" if _corrupt(i) else _png(i)), ("txt", f"shard {s} item {i}".encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                i += 1
    return str(tmp_path / "shard-{0..2}.tar")


def _spec(kind: str, source: str) -> list[str]:
    if kind == "csv":
        return [f"data.spec={{dataset: csv, train: {source}, image_size: 64}}"]
    return [f"data.spec={{dataset: wds, train: '{source}', image_size: 64, shuffle_buffer: 8}}"]


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    return subprocess.run([torchrun, "--standalone", f"--nproc_per_node={nproc}", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


STEP_SCRIPT = r'''
import sys, torch
from dalip.models import get_tokenizer
from dalip.runs import load_config
from dalip.runs.model import build_model
from dalip.train.batches import build_data
from dalip.train.builders import build_loss
from dalip.train.distributed import init_distributed

config = load_config(sys.argv[1], sys.argv[3:])
dist = init_distributed()
torch.manual_seed(0)
model = build_model(config).eval()  # eval mode: the same BatchNorm on both sides of the comparison
tokenizer = get_tokenizer(config.model.name)
batches = build_data(config, dist, model, tokenizer=tokenizer).train
saved = []
for _ in range(2):
    batch = next(batches)
    with torch.no_grad():
        loss = build_loss(config)(**model(batch.images, batch.tokens))
    saved.append({"images": batch.images, "tokens": batch.tokens, "loss": loss, "skipped": batch.skipped})
torch.save(saved, f"{sys.argv[2]}/rank{dist.rank}.pt")
'''


@pytest.mark.parametrize("kind", ["csv", "wds"])
def test_two_rank_step_scores_the_global_batch(tmp_path, corrupt_csv, uneven_shards, kind):
    """Both ranks hold exactly batch_size samples; their loss equals one process's on the global batch (1e-5)."""
    from dalip.models import get_tokenizer
    from dalip.runs import load_config
    from dalip.runs.model import build_model
    from dalip.train.builders import build_loss

    script = tmp_path / "step.py"
    script.write_text(STEP_SCRIPT)
    overrides = [*_spec(kind, str(corrupt_csv) if kind == "csv" else uneven_shards), "data.batch_size=8",
                 "data.workers=1"]
    result = _torchrun(str(script), TINY, str(tmp_path), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    config = load_config(TINY, overrides)
    torch.manual_seed(0)
    model, loss_fn = build_model(config).eval(), build_loss(config)
    assert get_tokenizer(config.model.name) is not None
    skipped = 0
    for step in range(2):
        images = torch.cat([ranks[r][step]["images"] for r in (0, 1)])
        tokens = torch.cat([ranks[r][step]["tokens"] for r in (0, 1)])
        assert images.shape[0] == 16 and all(ranks[r][step]["images"].shape[0] == 8 for r in (0, 1))
        with torch.no_grad():
            expected = loss_fn(**model(images, tokens))
        for r in (0, 1):
            torch.testing.assert_close(ranks[r][step]["loss"], expected, atol=1e-5, rtol=0)
        skipped += sum(ranks[r][step]["skipped"] for r in (0, 1))
    assert skipped > 0  # corrupt samples were met and replaced


@pytest.mark.parametrize("kind", ["csv", pytest.param("wds", marks=pytest.mark.slow)])
def test_torchrun_training_survives_corrupt_images(tmp_path, corrupt_csv, uneven_shards, kind):
    """The issue's repro: 2 processes, one image in five corrupt; the run finishes and counts every rank's skips."""
    out = tmp_path / "run"
    source = str(corrupt_csv) if kind == "csv" else uneven_shards
    result = _torchrun("-m", "dalip.cli", "train", "--config", TINY, "--output", str(out), "optim.steps=6",
                       *_spec(kind, source), "data.batch_size=8", "run.log_every=1", "eval.embeddings=[first]")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert sum(r["skipped"] for r in rows) > 0
    assert all(r["images_per_s"] > 0 and r["images_per_s_per_rank"] * 2 == pytest.approx(r["images_per_s"])
               for r in rows)
