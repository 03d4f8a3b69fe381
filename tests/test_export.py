"""``dalip export``: open_clip loads the towers, dalip the whole model; runs load without their
pretrained file; ``load_for_benchmark`` serves clip_benchmark's zero-shot routine."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

import dalip
from dalip.errors import ConfigError
from dalip.models.export import DALIP_CONFIG, DALIP_WEIGHTS, OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from dalip.runs.checkpoint import atomic_save
from dalip.runs.config import config_to_dict, load_config
from dalip.runs.export import export_run
from dalip.runs.load import load_run

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def save_run(tmp_path: Path, *overrides: str) -> tuple[Path, dalip.DALIPModel]:
    """A checkpoint written as dalip.train.loop writes it, of a tiny randomly initialised model."""
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CFG))
    config = load_config(None, ["data.spec.dataset=twemoji", f"model.name={tmp_path / 'tiny.json'}", "model.second_order=cov",
                                f"model.pretrained={tmp_path / 'gone.safetensors'}", *overrides])
    m = config.model
    torch.manual_seed(0)
    model = dalip.create_model(m.name, first_order=m.first_order, second_order=m.second_order, alpha=m.alpha)
    with torch.no_grad():  # move the heads off their initialisation
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    atomic_save({"model": model.state_dict(), "step": 7, "config": config_to_dict(config)}, checkpoint)
    return checkpoint, model.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=16)(["a leaf", "a photo of a mushroom", "x"])
    return torch.rand(3, 3, 32, 32), tokens


def test_load_run_needs_no_pretrained_file(tmp_path: Path) -> None:
    checkpoint, model = save_run(tmp_path)
    loaded, config = load_run(checkpoint)
    assert config.model.pretrained.endswith("gone.safetensors")  # recorded, never read
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert "step 7" in str(loaded.load_report)


def test_export_loads_in_open_clip_and_dalip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, model = save_run(tmp_path)
    out = export_run(checkpoint, tmp_path / "export")
    assert {p.name for p in out.iterdir()} >= {OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, DALIP_CONFIG, DALIP_WEIGHTS}
    images, tokens = inputs()

    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    clip.eval()
    with torch.no_grad():
        pairs = [(clip.encode_image(images, normalize=True), model.encode_image(images, embedding="first")),
                 (clip.encode_text(tokens, normalize=True), model.encode_text(tokens, embedding="first"))]
    diff = max((a - b).abs().max().item() for a, b in pairs)
    print(f"open_clip export vs dalip first-order: max abs diff {diff:.3g}")
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)

    whole = dalip.create_model(f"local-dir:{out}")
    assert isinstance(whole, dalip.DALIPModel) and "dalip export" in whole.load_report.source
    with torch.no_grad():
        for embedding in ("first", "second", "combined"):
            assert torch.equal(whole.encode_image(images, embedding=embedding), model.encode_image(images, embedding=embedding))
            assert torch.equal(whole.encode_text(tokens, embedding=embedding), model.encode_text(tokens, embedding=embedding))
    assert torch.equal(dalip.get_tokenizer(f"local-dir:{out}")(["a leaf"]), tokens[:1])
    print(capsys.readouterr().out)


def test_export_with_a_chosen_fusion_weight(tmp_path: Path) -> None:
    """``alpha=0.8`` (``dalip export --alpha``): the exported model's combined embedding mixes at 0.8."""
    checkpoint, model = save_run(tmp_path)
    assert model.alpha == 0.5
    whole = dalip.create_model(f"local-dir:{export_run(checkpoint, tmp_path / 'export', alpha=0.8)}")
    model.alpha = 0.8
    images, tokens = inputs()
    with torch.no_grad():
        assert whole.alpha == 0.8
        assert torch.equal(whole.encode_image(images), model.encode_image(images))
        assert torch.equal(whole.encode_text(tokens), model.encode_text(tokens))
    with pytest.raises(ConfigError, match=r"model.alpha must be in \[0, 1\]"):
        export_run(checkpoint, tmp_path / "bad", alpha=1.5)


def test_pooler_first_order_exports_dalip_files_only(tmp_path: Path) -> None:
    checkpoint, model = save_run(tmp_path, "model.first_order=mean")
    with pytest.raises(ValueError, match="open_clip's model does not have"):
        export_run(checkpoint, tmp_path / "export")
    out = export_run(checkpoint, tmp_path / "export", open_clip_files=False)
    assert not (out / OPEN_CLIP_CONFIG).exists()
    _, tokens = inputs()
    whole = dalip.create_model(f"local-dir:{out}")
    with torch.no_grad():
        assert torch.equal(whole.encode_text(tokens, embedding="first"), model.encode_text(tokens, embedding="first"))


def test_export_cli_and_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from dalip.cli import main

    calls: list = []

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs) -> None:
            calls.append(("create_repo", repo_id))

        def upload_folder(self, repo_id: str, folder_path: str, **kwargs) -> str:
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return "url"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    checkpoint, _ = save_run(tmp_path)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(out), "--push-to-hub", "me/tiny"]) == 0
    assert calls[0] == ("create_repo", "me/tiny")
    assert calls[1][:2] == ("upload_folder", "me/tiny") and OPEN_CLIP_WEIGHTS in calls[1][2] and DALIP_WEIGHTS in calls[1][2]
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--output", str(out)]) == 2
    with pytest.raises(FileNotFoundError, match="dalip_config.json of a dalip export"):
        dalip.models.load_export(tmp_path)


def test_load_for_benchmark_with_clip_benchmark(tmp_path: Path) -> None:
    from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier

    checkpoint, model = save_run(tmp_path)
    classnames, templates = ["leaf", "mushroom", "flower"], ["a photo of a {c}.", "{c}"]
    for embedding, width in (("first", 32), ("second", 32), ("combined", 64)):
        bench, transform, tokenizer = dalip.load_for_benchmark(str(checkpoint), "laion400m_e32", embedding=embedding)
        weights = zero_shot_classifier(bench, tokenizer, classnames, templates, "cpu", amp=False)
        assert weights.shape == (width, 3)
        images = torch.stack([transform(Image.new("RGB", (48, 48), c)) for c in ("red", "green", "blue")])
        with torch.no_grad():
            expected = model.encode_image(images, embedding=embedding)
        torch.testing.assert_close(bench.encode_image(images), expected)
        loader = torch.utils.data.DataLoader(list(zip(images, torch.tensor([0, 1, 2]))), batch_size=2)
        logits, target = run_classification(bench, weights, loader, "cpu", amp=False)
        assert logits.shape == (3, 3) and target.tolist() == [0, 1, 2]
    cfg = open_clip.get_model_preprocess_cfg(bench.model.clip)
    assert cfg["size"] == (32, 32) and cfg["resize_mode"] == "shortest"


def test_quickstart_model_preprocess_cfg() -> None:
    from dalip.interop import eval_transform

    model = dalip.create_model("effl0-minilm", pretrained_towers=False)
    cfg = open_clip.get_model_preprocess_cfg(model.clip)
    assert cfg["size"] == 128 and tuple(cfg["mean"]) == (0.5,) * 3 and cfg["resize_mode"] == "squash"
    assert eval_transform(model)(Image.new("RGB", (300, 100))).shape == (3, 128, 128)


def test_clip_benchmark_model_type_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clip_benchmark.models as cb_models

    checkpoint, model = save_run(tmp_path)
    monkeypatch.setitem(cb_models.TYPE2FUNC, "dalip", dalip.load_for_benchmark)
    monkeypatch.setattr(cb_models, "MODEL_TYPES", [*cb_models.MODEL_TYPES, "dalip"])
    bench, _, _ = cb_models.load_clip("dalip", str(checkpoint), "laion400m_e32", None, device="cpu")
    _, tokens = inputs()
    with torch.no_grad():
        torch.testing.assert_close(bench.encode_text(tokens), model.encode_text(tokens))


def test_quickstart_export_names_minilm_portably(tmp_path: Path) -> None:
    import dataclasses

    from dalip.models import export_model
    from dalip.models.configs import MINILM_HUB_ID
    from dalip.runs.config import ModelConfig

    section = dataclasses.asdict(ModelConfig())  # effl0-minilm with mbdc heads
    model = dalip.create_model(section["name"], pretrained_towers=False).eval()
    out = export_model(model, section, tmp_path / "export", tokenizer=dalip.get_tokenizer("effl0-minilm"))
    text_cfg = json.loads((out / OPEN_CLIP_CONFIG).read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == MINILM_HUB_ID and (out / "tokenizer.json").is_file()
    images, texts = torch.rand(2, 3, 128, 128), dalip.get_tokenizer("effl0-minilm")(["a cat", "a dog"])
    whole = dalip.create_model(f"local-dir:{out}")  # rebuilt from the local package, offline
    with torch.no_grad():
        assert torch.equal(whole.encode_image(images), model.encode_image(images))
        assert torch.equal(whole.encode_text(texts), model.encode_text(texts))
