"""Pretrained towers by every open_clip route, offline: open_clip's download functions are
replaced by ones returning a local file, so the rest is open_clip's own resolution."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import open_clip.factory
import open_clip.pretrained
import pytest
import torch
from safetensors.torch import save_file

import dalip
import dalip.models.hub
from dalip.models.export import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS

TINY = "dalip-test-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TAG_PREPROCESS = {"mean": (0.25, 0.25, 0.25), "std": (0.5, 0.5, 0.5)}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A tiny architecture with one hub tag and one hub repo, served from local files."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY, json.loads(json.dumps(TINY_CFG)))
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"tiny_tag": {"hf_hub": "org/tiny/", **TAG_PREPROCESS}})
    torch.manual_seed(1)
    weights = open_clip.create_model(TINY).state_dict()
    weights_file = tmp_path / "weights.safetensors"
    save_file(weights, str(weights_file))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / OPEN_CLIP_CONFIG).write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": TAG_PREPROCESS}))
    save_file(weights, str(repo / OPEN_CLIP_WEIGHTS))
    calls: list = []

    def download_pretrained(cfg: dict, prefer_hf_hub: bool = True, cache_dir: str | None = None) -> str:
        calls.append(("tag", cfg.get("hf_hub"), cache_dir))
        return str(weights_file)

    def download_pretrained_from_hf(model_id: str, filename: str | None = None, revision=None, cache_dir=None) -> str:
        calls.append(("hf", model_id, filename))
        if model_id != "org/tiny":
            raise FileNotFoundError(f"no repo {model_id}")
        return str(repo / (filename or OPEN_CLIP_WEIGHTS))

    monkeypatch.setattr(open_clip.factory, "download_pretrained", download_pretrained)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", download_pretrained_from_hf)
    monkeypatch.setattr(dalip.models.hub, "hub_unreachable", lambda *a, **k: None)  # the hub above answers
    return {"weights": weights, "file": weights_file, "repo": repo, "calls": calls}


def assert_towers_equal(model: dalip.DALIPModel, weights: dict) -> None:
    state = model.clip.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def assert_fresh_heads(model: dalip.DALIPModel) -> None:
    report = model.load_report
    heads = [k for k in model.state_dict() if k.startswith(("first_heads.", "second_heads."))]
    assert heads and sorted(report.fresh) == sorted(heads)
    assert "start fresh" in str(report) and "second_heads" in str(report)


def test_tag_route_loads_the_tag_weights(hub: dict) -> None:
    model = dalip.create_model(TINY, pretrained="tiny_tag", cache_dir="/tmp/cache")
    assert_towers_equal(model, hub["weights"])
    assert hub["calls"] == [("tag", "org/tiny/", "/tmp/cache")]
    assert model.embed_dim == 32 and model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert_fresh_heads(model)
    assert "tiny_tag" in model.load_report.source
    cfg = open_clip.get_model_preprocess_cfg(model.clip)
    assert tuple(cfg["mean"]) == TAG_PREPROCESS["mean"]  # the tag's preprocessing, as open_clip sets it


def test_unknown_tag_lists_valid_tags_before_downloading(hub: dict) -> None:
    with pytest.raises(ValueError, match="Valid tags: tiny_tag"):
        dalip.create_model(TINY, pretrained="laion9b")
    with pytest.raises(ValueError, match="laion2b_s34b_b88k"):  # a real architecture lists open_clip's tags
        dalip.create_model("ViT-B-16", pretrained="not-a-tag")
    assert hub["calls"] == []


def test_hf_hub_route(hub: dict) -> None:
    model = dalip.create_model("hf-hub:org/tiny", second_order="cov")
    assert_towers_equal(model, hub["weights"])
    assert model.embed_dim == 32
    assert ("hf", "org/tiny", "open_clip_config.json") in hub["calls"]
    assert "hf-hub:org/tiny" in model.load_report.source
    assert_fresh_heads(model)
    tokens = dalip.get_tokenizer("hf-hub:org/tiny")(["a photo of a leaf"])
    assert tokens.shape == (1, 16)  # the repo config's context length
    with pytest.raises(ValueError, match="carries its own weights"):
        dalip.create_model("hf-hub:org/tiny", pretrained="tiny_tag")


def test_local_dir_route(hub: dict) -> None:
    model = dalip.create_model(f"local-dir:{hub['repo']}")
    assert_towers_equal(model, hub["weights"])
    assert_fresh_heads(model)
    assert dalip.get_tokenizer(f"local-dir:{hub['repo']}")(["x"]).shape == (1, 16)
    assert hub["calls"] == []
    with pytest.raises(FileNotFoundError, match="not found"):
        dalip.create_model(f"local-dir:{hub['repo']}-missing")
    (hub["repo"] / OPEN_CLIP_CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        dalip.create_model(f"local-dir:{hub['repo']}")


def test_file_route_and_architecture_only(hub: dict) -> None:
    model = dalip.create_model(TINY, pretrained=str(hub["file"]))
    assert_towers_equal(model, hub["weights"])
    assert_fresh_heads(model)
    assert str(hub["file"]) in model.load_report.source
    bare = dalip.create_model("hf-hub:org/tiny", pretrained_towers=False)  # the architecture only
    assert not torch.equal(bare.clip.state_dict()["text_projection"], hub["weights"]["text_projection"])
    with pytest.raises(ValueError, match="no checkpoint file"):
        dalip.create_model(TINY_CFG, pretrained="tiny_tag")


def test_yaml_config_accepts_every_route(hub: dict, tmp_path: Path) -> None:
    from dalip.errors import ConfigError
    from dalip.runs.config import load_config

    for name, pretrained in ((TINY, "tiny_tag"), ("hf-hub:org/tiny", None), (f"local-dir:{hub['repo']}", None)):
        config = load_config(None, ["data.spec.dataset=twemoji", f"model.name={name}", f"model.pretrained={pretrained or 'null'}"])
        assert config.model.name == name and config.model.pretrained == pretrained
    with pytest.raises(ConfigError, match="Valid tags: tiny_tag"):
        load_config(None, [f"model.name={TINY}", "model.pretrained=laion9b"])
    with pytest.raises(ConfigError, match="no such folder"):
        load_config(None, [f"model.name=local-dir:{tmp_path / 'nope'}"])


def test_build_model_prints_the_load_report(hub: dict, capsys: pytest.CaptureFixture) -> None:
    from dalip.runs import build_model, load_config

    model = build_model(load_config(None, ["data.spec.dataset=twemoji", "model.name=hf-hub:org/tiny"]))
    assert_towers_equal(model, hub["weights"])
    out = capsys.readouterr().out
    assert "hf-hub:org/tiny" in out and "start fresh" in out
