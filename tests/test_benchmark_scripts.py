"""The GPU recipe benchmarks run end to end at smoke size on the CPU.

`benchmarks/train_step.py` (DALIP vs CLIP step time) and
`benchmarks/vs_open_clip_train.py` (dalip vs open_clip's own trainer) are meant for
a GPU session; here they run tiny so that a broken script is found before a GPU is
lent. The numbers they print at this size mean nothing and are not checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every markdown table row below the separator."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(cells[0]) <= set("-:") and cells[0] not in ("variant", "round"):
            rows[cells[0]] = cells[1:]
    return rows


def test_train_step_benchmark_smoke(tmp_path):
    out = tmp_path / "step.md"
    text = run_script("train_step.py", "--device", "cpu", "--model", "tests/assets/tiny-clip.json", "--batch", "4",
                      "--steps", "2", "--warmup", "1", "--rounds", "2", "--precision", "fp32", "--out", str(out))
    assert out.read_text() in text  # the report is written and printed
    rows = table_rows(text)
    assert {"clip", "dalip"} <= set(rows) and {"backward", "optimizer", "forward + loss"} <= set(rows)
    # dalip has the two mbdc_paper heads on top of the same towers: more parameters and FLOPs
    assert float(rows["dalip"][0]) > float(rows["clip"][0]) and float(rows["dalip"][5]) > float(rows["clip"][5])
    assert re.search(r"step time ratio dalip / clip: \*\*\d+\.\d+\*\* \(median of all 4 paired step ratios", text)
    assert re.search(r"per round: \d+\.\d+, \d+\.\d+ \(spread", text)
    assert "glibc keeps freed large blocks" in text and "= 1.05 x the FLOP ratio" in text


@pytest.mark.slow
def test_vs_open_clip_train_smoke(tmp_path):
    out = tmp_path / "vs.md"
    text = run_script("vs_open_clip_train.py", "--device", "cpu", "--model", "ViT-S-32", "--batch", "4", "--steps", "3",
                      "--skip", "1", "--precision", "fp32", "--workers", "1", "--image-files", "4",
                      "--work", str(tmp_path / "work"), "--out", str(out))
    rows = table_rows(out.read_text())
    assert list(rows) == ["1"] and all(float(v) > 0 for v in rows["1"])  # both trainers ran and logged steps
    assert (tmp_path / "work" / "open_clip_0" / "out.log").is_file()
    assert (tmp_path / "work" / "dalip_0" / "metrics.jsonl").is_file()
    assert re.search(r"images/s ratio dalip / open_clip: \*\*\d+\.\d+\*\*", text)


def test_scaling_script_measures_a_small_size(tmp_path):
    run_script("scaling.py", "--device", "cpu", "--repeats", "1", "--quick", "--out-dir", str(tmp_path))
    text = (tmp_path / "scaling_cpu.md").read_text()
    assert (tmp_path / "scaling_cpu.png").stat().st_size > 10_000
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| bdc core", "| mbdc"))]
    measured = [r for r in rows if len(r) == 6]
    assert len(measured) == 16 and all(float(r[3]) > 0 and float(r[5]) > 0 for r in measured)  # time, FLOPs
    # the FLOP model: the bdc core's Gram products are exactly linear in M, quadratic in r
    slopes = {(r[0].strip(), r[1].strip()): float(r[3]) for r in rows if len(r) == 8}
    assert slopes[("bdc core", "M")] == pytest.approx(1.0, abs=0.02)
    assert slopes[("bdc core", "r")] == pytest.approx(2.0, abs=0.02)
    assert text.count("- **bdc core, ") == 4 and text.count("- **mbdc, ") == 4  # one reading per curve


def run_session(tmp_path: Path, *stages: str, total_s: int = 3000) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "TOTAL_S": str(total_s),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # python3 = this Python
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), *stages], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=3600)  # budgets, not speed: load must not fail it
    return proc, out


@pytest.mark.slow  # the small version: the stage-budget test below runs the session script too
def test_gpu_session_runs_its_stages_and_packs_the_results(tmp_path):
    kept = ROOT / "benchmarks" / "results" / "train_step_cpu.md"
    before = kept.read_bytes() if kept.exists() else None
    proc, out = run_session(tmp_path, "step", "scaling")
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = (out / "summary.md").read_text()
    assert re.search(r"\| step \| 0 \| \d+ \|", summary) and re.search(r"\| scaling \| 0 \| \d+ \|", summary)
    assert re.search(r"train_step_cpu.md: step time ratio dalip / clip: \*\*\d", summary)
    with tarfile.open(out / "results.tar") as tar:
        names = set(tar.getnames())
    assert {"train_step_cpu.md", "scaling_cpu.md", "scaling_cpu.png", "step.txt", "scaling.txt"} <= names
    assert (out / "session.log").is_file()
    assert (kept.read_bytes() if kept.exists() else None) == before  # smoke output stays out of results/


def test_gpu_session_skips_stages_past_its_time_budget_and_rejects_unknown_ones(tmp_path):
    proc, out = run_session(tmp_path, "tests", total_s=5)
    assert proc.returncode == 0 and "| tests | skipped (no time left) | 0 |" in (out / "summary.md").read_text()
    proc, _ = run_session(tmp_path, "warp")
    assert proc.returncode == 2 and "unknown stage warp" in proc.stdout + proc.stderr


@pytest.mark.slow  # decodes the embedded training set twice; the stream-resume script test reads TrainBatches too
def test_epoch_boundary_script_reads_across_epochs():
    text = run_script("epoch_boundary.py", "--batch", "512", "--workers", "1", "--epochs", "2", "--step-s", "0",
                      "--image-size", "32")
    assert re.search(r"inside epochs \(median\): \*\*\d+ ms\*\*", text)
    assert re.search(r"epoch boundaries: \*\*\d+ ms\*\*", text)  # one boundary between two epochs


def test_recipe_profile_times_the_parts_that_differ(tmp_path):
    out = tmp_path / "profile.md"
    text = run_script("recipe_profile.py", "--model", "ViT-S-32", "--batch", "4", "--repeat", "1", "--out", str(out))
    rows = table_rows(out.read_text())
    assert out.read_text() in text
    for part in ("AdamW step, torch default (open_clip_train)", "AdamW step, fused (dalip)",
                 "decode + train transform, dalip (per image)", "decode + train transform, open_clip (per image)"):
        assert float(rows[part][0]) > 0, part


def test_stream_resume_script_times_fresh_and_resumed_first_batches():
    text = run_script("stream_resume.py", "--steps", "5", "--batch", "4", "--workers", "0", "--rounds", "1",
                      "--image-size", "16", "--shuffle-buffer", "8")
    assert re.search(r"resumed at step 5: \*\*[\d.]+ s\*\*", text) and re.search(r"resumed / fresh: \*\*[\d.]+x", text)
