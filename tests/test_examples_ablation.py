"""Every example script runs in its smoke size (subprocess, repository root, PYTHONPATH = root)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_mbdc_in_a_timm_classifier():
    out = run_example("mbdc_timm_classifier.py", "--smoke")
    assert "9 classes; 145 train / 46 test images" in out
    assert " mean pooler + linear: test top-1" in out and " mbdc pooler + linear: test top-1" in out


@pytest.mark.slow  # the small version: tests/test_docs.py runs examples/tutorials/quickstart.py
def test_quickstart_training_from_python(tmp_path):
    out = run_example("quickstart_training.py", "--output", str(tmp_path), "--smoke")
    assert "model effl0-minilm" in out and "combined: twemoji-domain concepts top-1" in out
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "checkpoint.pt").is_file()


def test_assemble_and_run_an_ablation(tmp_path):
    out = run_example("ablation.py", "--output", str(tmp_path), "--smoke", "--base", TINY)
    assert (tmp_path / "sweep.yaml").is_file() and (tmp_path / "results.png").is_file()
    rows = read_csv(tmp_path / "results.csv")
    assert {r["variant"] for r in rows} == {"plain_clip", "cls_cov"} and {r["n_seeds"] for r in rows} == {"2"}
    assert "| plain_clip | first | 2 |" in out


def test_weight_interpolation(tmp_path):
    out = run_example("weight_interpolation.py", "--output", str(tmp_path), "--smoke", "--config", TINY)
    folder = tmp_path / "interpolation"
    assert {r["variant"] for r in read_csv(folder / "interpolation.csv")} == {"t=0", "t=0.5", "t=1"}
    assert (folder / "interpolation.png").is_file() and "# Weight interpolation" in out
