"""The documentation: runnable examples run, and the site builds strictly."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dalip

# every name in these modules' __all__ must be documented in the API reference
REFERENCE_MODULES = [
    "dalip", "dalip.registry", "dalip.pooling", "dalip.pooling.functional", "dalip.pooling.layers",
    "dalip.losses", "dalip.models", "dalip.data", "dalip.eval", "dalip.errors", "dalip.runs", "dalip.runs.config",
    "dalip.runs.checkpoint", "dalip.train", "dalip.cli", "dalip.sweep", "dalip.adapt", "dalip.interop",
    "dalip.io", "dalip.train.builders", "dalip.train.loop", "dalip.train.metrics_log",
]

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
        assert f'id="{name}"' in catalogue, name
    for name in dalip.list_losses():
        assert f'id="loss-{name}"' in catalogue, name
    # the API reference: an anchor per public name (dalip.X.name) of every public module
    anchors = {
        anchor.rsplit(".", 1)[-1]
        for page in (site / "reference").rglob("*.html")
        for anchor in re.findall(r'id="(dalip\.[\w.]+)"', page.read_text())
    }
    for module in REFERENCE_MODULES:
        missing = set(importlib.import_module(module).__all__) - anchors - {"__version__"}
        assert not missing, f"{module}: not in the API reference: {sorted(missing)}"
    # snippets were included (a failed include leaves the marker or an empty block)
    for page in ("tutorials/train", "tutorials/register-a-component", "concepts/objective", "tutorials/scale-out",
                 "tutorials/ablation", "tutorials/few-shot", "tutorials/your-data"):
        html = (site / page / "index.html").read_text()
        assert "--8&lt;--" not in html and "--8<--" not in html, page
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    for page in site.rglob("*.html"):  # offline: no scripts or styles from the network
        assert not re.search(r'(src|href)="https?://[^"]+\.(js|css)', page.read_text()), page


def _doc_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``dalip ...`` line in the fenced code blocks of the docs and README.

    Backslash continuations are joined, comments dropped; ``torchrun ... -m dalip.cli ARGS`` counts as ``dalip ARGS``.
    """
    pages = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
    found = []
    for page in pages:
        blocks, block, language = [], None, ""
        for raw in page.read_text().splitlines():
            fence = re.match(r"\s*```(\w*)", raw)
            if fence and block is None:
                block, language = [], fence.group(1)
            elif fence:
                if language in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(block))
                block = None
            elif block is not None:
                block.append(raw)
        for text in blocks:
            for line in text.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip().removeprefix("$ ")
                match = re.search(r"(?:(?:^|&& |; |/bin/)dalip|-m dalip\.cli) (.*)", line)
                if match and not line.startswith("#") and match.group(1) != "--help":
                    found.append((page.relative_to(ROOT).as_posix(), match.group(1)))
    return found


def test_every_documented_command_parses():
    """Each ``dalip`` command shown in the docs parses with the real parser, overrides included."""
    import shlex

    from dalip.cli import build_parser
    from dalip.runs.config import parse_overrides

    commands = _doc_commands()
    assert len(commands) > 20  # the extraction finds the docs' commands
    parser = build_parser()
    for page, command in commands:
        words = shlex.split(command.replace("$f", "x"))
        try:
            args = parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{page}: `dalip {command}` does not parse")
        parse_overrides(getattr(args, "overrides", None) or [])  # section.key=value, YAML values


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_quickstart_table_is_the_recorded_run(page):
    """The quickstart table on the page is `benchmarks/results/quickstart_cpu_eval.json`, to the printed digit."""
    import json

    results = json.loads((ROOT / "benchmarks" / "results" / "quickstart_cpu_eval.json").read_text())
    text = (ROOT / page).read_text()
    rows = {"first order": "first", "second order (MBDC)": "second", "combined": "combined"}
    columns = [(subset, task) for subset in ("twemoji-domain", "twemoji-general")
               for task in ("concepts", "subcategories")]
    for label, embedding in rows.items():
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {label} |")]
        printed = [float(cell.split()[0]) for cell in line.strip("|").split("|")[1:]]
        recorded = [round(100 * results[embedding][s][f"{t}/top1"], 1) for s, t in columns]
        assert printed == recorded, f"{page}: {label} row {printed} but the recorded run has {recorded}"
    fusion = json.loads((ROOT / "benchmarks" / "results" / "quickstart_cpu_fusion.json").read_text())
    for embedding in rows.values():  # the fusion file is the same checkpoint's evaluation
        assert fusion[embedding] == results[embedding]


def test_scale_out_example_config_resolves():
    """The scale-out tutorial's config (remote resampled shards, accumulation, bf16) is a valid config."""
    from dalip.runs.config import load_config

    config = load_config(ROOT / "examples" / "scale_out" / "vitb16_shards.yaml")
    assert (config.model.name, config.optim.accum_steps, config.run.precision) == ("ViT-B-16", 4, "bf16")
    assert config.data.spec["resampled"] and config.data.spec["train"].startswith("pipe:aws s3 cp")
