"""Fault injection (issue 21, cases 1, 9, 10): hub access, untrained layers, honest reports.

- no network / ``HF_HUB_OFFLINE=1`` for a hub tag, an ``hf-hub:`` name or ``model.pretrained``:
  one line naming the tag / repo and "no network or hub access", exit 2, before open_clip downloads;
- a model with untrained layers: the same call gives the same model, and a zero-shot evaluation says
  which layers are untrained;
- the fusion table marks the training alpha and the ``combined`` weight apart; ``pretrained=local-dir:``
  gives the local-dir message; a checkpoint without its ``.sha256`` warns in one line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import open_clip
import open_clip.factory
import open_clip.pretrained
import pytest
import torch
from huggingface_hub.errors import OfflineModeIsEnabled
from PIL import Image

import dalip
import dalip.models.hub
from dalip.cli import main
from dalip.errors import HubUnavailableError
from dalip.eval import format_fusion
from dalip.models.sources import untrained_notice
from dalip.runs.checkpoint import load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")
TINY_TRAIN = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
ARCH = "dalip-test-hub-tiny"
REPO = "org/hub-tiny"
TAG_REPO = "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"  # what open_clip downloads for ViT-B-16 laion2b_s34b_b88k


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A labelled folder: 2 classes of 2 plain images."""
    root = tmp_path_factory.mktemp("zs") / "colours"
    for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), tuple(v + 20 * i for v in colour)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """The hub does not answer; open_clip's downloaders fail the test if called (the refusal comes first)."""
    calls: list = []

    def download(*args, **kwargs):
        calls.append(args)
        raise AssertionError("open_clip started a download although the hub is unreachable")

    monkeypatch.setattr(dalip.models.hub, "hub_unreachable", lambda *a, **k: "https://huggingface.co did not answer")
    monkeypatch.setattr(open_clip.factory, "download_pretrained", download)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", download)
    return calls


def one_error_line(stderr: str, command: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.strip()]
    assert line.startswith(f"dalip {command}: error: "), line
    return line


# case 1: hub without network ------------------------------------------------------------------------


def test_hub_tag_with_hf_hub_offline_is_one_line_exit_2(folder, tmp_path):
    """The issue's command in a fresh process with HF_HUB_OFFLINE=1 and an empty hub cache."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "dalip.cli", "eval", "--model", "ViT-B-16", "--pretrained", "laion2b_s34b_b88k",
         "--zero-shot", str(folder), "--output", str(tmp_path / "x.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr, "eval")
    for words in ("laion2b_s34b_b88k", "ViT-B-16", TAG_REPO, "no network or hub access", "HF_HUB_OFFLINE"):
        assert words in line, line
    assert not (tmp_path / "x.json").exists()


def test_hub_names_and_tags_without_network_stop_before_any_download(no_network, folder, tmp_path, capsys):
    for argv, words in [
        (["--model", "ViT-B-16", "--pretrained", "laion2b_s34b_b88k"], ["laion2b_s34b_b88k", TAG_REPO]),
        (["--model", f"hf-hub:{REPO}"], [f"hf-hub:{REPO}"]),
    ]:
        assert main(["eval", *argv, "--zero-shot", str(folder), "--output", str(tmp_path / "x.json")]) == 2
        line = one_error_line(capsys.readouterr().err, "eval")
        assert "no network or hub access: https://huggingface.co did not answer" in line, line
        assert all(w in line for w in words) and "not in the local cache" in line, line
    with pytest.raises(HubUnavailableError, match="pretrained tag 'laion2b_s34b_b88k' of ViT-B-16"):
        dalip.create_model("ViT-B-16", pretrained="laion2b_s34b_b88k")
    assert not no_network  # refused before open_clip started a download (and its retries)


def test_train_with_a_hub_tag_without_network_is_one_line(no_network, tmp_path, capsys):
    code = main(["train", "--config", TINY_TRAIN, "--output", str(tmp_path / "run"),
                 "model.name=ViT-B-16", "model.pretrained=laion2b_s34b_b88k"])
    assert code == 2
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dalip train: error: ")]
    assert len(line) == 1 and "no network or hub access" in line[0] and TAG_REPO in line[0], line
    assert not no_network


@pytest.fixture
def cached_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny architecture with a hub tag, its repo 'in the cache' (so no reachability check), and
    huggingface_hub's download raising its offline error inside open_clip's own download code."""
    config = json.loads(Path(TINY).read_text())
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, config)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, {"tag": {"hf_hub": f"{REPO}/"}})
    cache = tmp_path / "hub"
    (cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / "abc").mkdir(parents=True)

    def offline(*args, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", offline)
    return cache


def test_offline_errors_inside_open_clip_become_one_clear_error(cached_hub, caplog):
    with caplog.at_level(logging.ERROR):
        with pytest.raises(HubUnavailableError) as tag_error:
            dalip.create_model(ARCH, pretrained="tag", cache_dir=str(cached_hub))
        with pytest.raises(HubUnavailableError) as name_error:
            dalip.create_model(f"hf-hub:{REPO}", cache_dir=str(cached_hub))
    assert f"pretrained tag 'tag' of {ARCH} (hub repo {REPO}): no network or hub access: HF_HUB_OFFLINE" in str(
        tag_error.value)
    assert f"hf-hub:{REPO}: no network or hub access: HF_HUB_OFFLINE" in str(name_error.value)
    assert not [r for r in caplog.records if "Failed to download" in r.getMessage()]  # the error says it once


def test_reachable_hub_leaves_the_download_to_open_clip(monkeypatch, tmp_path):
    """With the hub answering, open_clip's own downloader runs (here a local stand-in for it)."""
    config = json.loads(Path(TINY).read_text())
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, config)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, {"tag": {"hf_hub": f"{REPO}/"}})
    weights = tmp_path / "w.pt"
    torch.save(open_clip.create_model(ARCH).state_dict(), weights)
    monkeypatch.setattr(dalip.models.hub, "hub_unreachable", lambda *a, **k: None)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(weights))
    model = dalip.create_model(ARCH, pretrained="tag", cache_dir=str(tmp_path / "empty"))
    assert "pretrained='tag'" in model.load_report.source


# case 9: untrained layers seeded and named -----------------------------------------------------------


def test_untrained_projection_is_seeded_and_named():
    """effl0-minilm before training: the image projection on the pretrained EfficientNet is fresh."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = dalip.create_model("effl0-minilm", second_order=None)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state untouched
    torch.manual_seed(7)  # another global state: the same model
    b = dalip.create_model("effl0-minilm", second_order=None)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a.load_report.fresh == ["clip.visual.head.proj.weight"]
    assert untrained_notice(a) == "untrained layers (seeded initialisation, not learned): clip.visual.head.proj"
    drawn = dalip.create_model(TINY, init_seed=None)  # opt out: the global generator, as before
    assert not torch.equal(drawn.state_dict()["clip.visual.head.proj.weight"],
                           dalip.create_model(TINY).state_dict()["clip.visual.head.proj.weight"])


def test_eval_of_an_untrained_model_is_repeatable_and_says_so(folder, tmp_path, capsys):
    outputs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        out = tmp_path / f"r{seed}.json"
        assert main(["eval", "--model", TINY, "--zero-shot", str(folder), "--templates", "simple",
                     "--output", str(out)]) == 0
        outputs.append(json.loads(out.read_text()))
        notices = [x for x in capsys.readouterr().out.splitlines() if x.startswith("--model")]
        assert notices == [f"--model {TINY}: untrained model: every weight keeps its initialisation "
                           + "(seeded), no weights were loaded"], notices
    assert outputs[0] == outputs[1]


# case 10: honest reports -----------------------------------------------------------------------------


def test_fusion_table_marks_the_training_alpha_and_the_combined_weight_apart():
    results = {f"fusion@{a:g}": {"val": {"concepts/top1": a / 2}} for a in (0, 0.5, 0.8, 1)}
    table = format_fusion(results, alpha=0.5, combined=0.8)
    assert "| 0.5 (train alpha) |" in table and "| 0.8 (combined) |" in table
    assert "(train alpha)" not in table.split("| 0.8")[1].splitlines()[0]
    assert "scored at a = 0.8, not the training alpha 0.5" in table.splitlines()[0]
    same = format_fusion(results, alpha=0.5, combined=0.5)
    assert "| 0.5 (train alpha) |" in same and "(combined)" not in same


def test_pretrained_local_dir_gives_the_local_dir_message(folder, tmp_path, capsys):
    missing = tmp_path / "nodir"
    with pytest.raises(ValueError, match=f"local-dir: folder not found: {missing}"):
        dalip.create_model("ViT-B-16", pretrained=f"local-dir:{missing}")
    (tmp_path / "there").mkdir()
    with pytest.raises(ValueError, match="is a whole model") as err:
        dalip.create_model(TINY, pretrained=f"local-dir:{tmp_path / 'there'}")
    assert "not found" not in str(err.value)
    assert main(["eval", "--model", "ViT-B-16", "--pretrained", f"local-dir:{missing}", "--zero-shot", str(folder),
                 "--output", str(tmp_path / "x.json")]) == 2
    line = one_error_line(capsys.readouterr().err, "eval")
    assert f"local-dir: folder not found: {missing}" in line and "unknown pretrained tag" not in line, line


def test_checkpoint_without_checksum_warns_in_one_line(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "step": 3}, path)  # no checkpoint.pt.sha256 beside it
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        assert load_training_checkpoint(path)["step"] == 3
    assert not [w for w in caught if "checksum" in str(w.message)]  # no Python warning (two lines with its source)
    (record,) = [r for r in caplog.records if "checksum" in r.getMessage()]
    assert record.getMessage() == f"{path}: no checksum file checkpoint.pt.sha256; loading it unverified"
