"""The documentation: runnable examples run, and the site builds strictly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dalip

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "tutorials").glob("*.py")) + [ROOT / "examples" / "swap_second_order.py"]


def run_python(path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(path), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path):
    # a subprocess: examples register components in their own process only
    result = run_python(path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    catalogue = (site / "components" / "index.html").read_text()
    for name in dalip.list_poolers():
        assert name in catalogue
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    for page in site.rglob("*.html"):  # offline: no scripts or styles from the network
        assert not re.search(r'(src|href)="https?://[^"]+\.(js|css)', page.read_text()), page
