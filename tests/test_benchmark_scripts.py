"""The GPU recipe benchmarks run end to end at smoke size on the CPU.

`benchmarks/train_step.py` (DALIP vs CLIP step time) and
`benchmarks/vs_open_clip_train.py` (dalip vs open_clip's own trainer) are meant for
a GPU session; here they run tiny so that a broken script is found before a GPU is
lent. The numbers they print at this size mean nothing and are not checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
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
                      "--steps", "2", "--warmup", "1", "--precision", "fp32", "--out", str(out))
    assert out.read_text() in text  # the report is written and printed
    rows = table_rows(text)
    assert set(rows) == {"clip", "dalip"}
    # dalip has the two mbdc_paper heads on top of the same towers: more parameters and FLOPs
    assert float(rows["dalip"][0]) > float(rows["clip"][0]) and float(rows["dalip"][5]) > float(rows["clip"][5])
    assert re.search(r"step time ratio dalip / clip: \*\*\d+\.\d+\*\*", text)


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


def test_scaling_script_measures_a_small_size():
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import scaling\n"
        "for kind in ('bdc core', 'mbdc'):\n"
        "    t, mib = scaling.measure(scaling.make_step(kind, {'B': 2, 'M': 8, 'r': 4, 'h': 2}, 'cpu'), 'cpu', 1)\n"
        "    assert t > 0 and mib > 0, (kind, t, mib)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
