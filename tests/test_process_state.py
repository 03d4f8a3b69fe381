"""``import dalip``, building the quickstart model and drawing plots change nothing process-wide.

Run in a fresh interpreter with a clean environment (no ``HF_HUB_OFFLINE``, a non-Agg
matplotlib backend) so any global switch would show; the baseline is taken after
importing torch, timm, open_clip, torchmetrics, matplotlib and transformers, whose own
import-time settings are theirs (torchmetrics imports ``matplotlib.pyplot`` when matplotlib
is installed; dalip's own code never does, which the last test checks in its sources).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import logging, os, sys, tempfile
from pathlib import Path
import torch, timm, open_clip, torchmetrics, matplotlib
from transformers.utils import logging as hf_logging

def snapshot():
    return {
        "environ": dict(os.environ),
        "root_level": logging.getLogger().level,
        "transformers_level": logging.getLogger("transformers").level,
        "transformers_verbosity": hf_logging.get_verbosity(),
        "backend": matplotlib.get_backend(),
        "pyplot_loaded": "matplotlib.pyplot" in sys.modules,
    }

def compare(before, stage):
    after = snapshot()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if changed.get("environ"):
        b, a = changed["environ"]
        changed["environ"] = {k: (b.get(k), a.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert not changed, f"{stage} changed process state: {changed}"
    print(f"{stage}: unchanged")

import ctypes
mallopt_calls = []  # glibc allocator settings are the CLI's (dalip.cli.allocator), never the library's

class SpyCDLL(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            mallopt_calls.append(name)
        return super().__getattr__(name)

ctypes.CDLL = SpyCDLL
_snapshot = snapshot
snapshot = lambda: {**_snapshot(), "mallopt_calls": list(mallopt_calls)}

base = snapshot()
assert base["backend"] == "svg" and "HF_HUB_OFFLINE" not in base["environ"], base
import dalip
compare(base, "import dalip")
model = dalip.create_model("effl0-minilm")
tokens = dalip.get_tokenizer("effl0-minilm")(["a red apple"])
assert model.encode_text(tokens).shape == (1, 768)
compare(base, "create_model('effl0-minilm') + tokenizer")

from dalip.train.plots import plot_run
from dalip.sweep.plots import plot_tradeoff
out = Path(tempfile.mkdtemp())
results = {"first": {"val": {"concepts/top1": 0.5, "concepts/chance_top1": 0.1}}}
plot_run([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], results, out / "run.png")
plot_tradeoff([(0.0, 0.4, 0.6), (1.0, 0.7, 0.5)], out / "tradeoff.png", "domain", "general")
assert (out / "run.png").stat().st_size > 0 and (out / "tradeoff.png").stat().st_size > 0
compare(base, "plots")
'''


def test_import_build_and_plots_leave_the_process_alone() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "MPLBACKEND")}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND="svg")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("import dalip", "create_model('effl0-minilm') + tokenizer", "plots"):
        assert f"{stage}: unchanged" in proc.stdout


def test_dalip_never_imports_pyplot() -> None:
    """pyplot holds global figures and picks a backend: dalip draws on `matplotlib.figure.Figure` only."""
    users = [p for p in (ROOT / "dalip").rglob("*.py") if "matplotlib.pyplot" in p.read_text()
             or "import pyplot" in p.read_text()]
    assert not users, users


def test_the_cli_keeps_freed_memory_and_the_library_does_not(monkeypatch, tmp_path):
    """`dalip` (the process owner) sets glibc's thresholds; the setting works on this Linux."""
    from dalip.cli import allocator, main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--output", str(tmp_path / "run")]) == 2
    assert calls == [1]
    monkeypatch.undo()
    import platform

    assert allocator.keep_freed_memory() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
