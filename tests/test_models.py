"""The DALIP wrapper on tiny open_clip models of every supported tower kind."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import dalip
from dalip.errors import PretrainedMismatchError
from dalip.models import create_model, extract_text_tokens, load_checkpoint, read_state_dict

EMBED = 24
VIT = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
TEXT = {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


def tiny(vision=VIT, text=TEXT, **extra):
    return {"embed_dim": EMBED, "vision_cfg": dict(vision), "text_cfg": dict(text), **extra}


TOWERS = {
    "vit+builtin": tiny(),
    "timm_cnn+transformer": tiny({"timm_model_name": "test_efficientnet", "timm_pool": "avg", "timm_proj": "linear", "image_size": 96}, custom_text=True),
    "timm_vit+transformer": tiny({"timm_model_name": "test_vit", "timm_pool": "", "timm_proj": "linear", "image_size": 160}, custom_text=True),
}


def fake_text(b: int, length: int = 12, vocab: int = 64) -> torch.Tensor:
    """SOT, words, EOT (the largest id, as CLIP's tokenizer), zero padding."""
    ids = torch.zeros(b, length, dtype=torch.long)
    for i in range(b):
        n = 3 + i % 5
        ids[i, 0] = vocab - 2
        ids[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,))
        ids[i, n - 1] = vocab - 1
    return ids


def images_for(model, b=3):
    size = model.clip.visual.image_size if hasattr(model.clip.visual, "image_size") else 32
    size = size[0] if isinstance(size, tuple) else size
    return torch.randn(b, 3, size, size)


@pytest.fixture(scope="module", params=list(TOWERS))
def kind(request):
    return request.param


@pytest.mark.parametrize("second", ["mbdc", "cov", "bdc", "isqrt_cov", None])
def test_forward_keys_shapes_for_every_tower_kind(kind, second):
    model = create_model(TOWERS[kind], second_order=second, second_options={"reduced_dim": 4} if second != "mbdc" else {"heads": 2, "reduced_dim": 4})
    images = images_for(model)
    out = model(images, fake_text(3))
    assert list(out)[:5] == ["image_features", "text_features", "image_second", "text_second", "logit_scale"]
    assert out["image_features"].shape == out["text_features"].shape == (3, EMBED)
    if second is None:
        assert out["image_second"] is None and out["text_second"] is None
    else:
        assert out["image_second"].shape == out["text_second"].shape == (3, EMBED)
        assert torch.allclose(out["image_second"].norm(dim=-1), torch.ones(3))
        sum(v.sum() for v in out.values() if v is not None and v.ndim).backward()
        assert all(p.grad is not None for p in model.second_heads.parameters() if p.requires_grad)


def test_first_order_default_is_the_towers_own_output(kind):
    model = create_model(TOWERS[kind], second_order="mean").eval()
    images, texts = images_for(model), fake_text(3)
    out = model(images, texts)
    torch.testing.assert_close(out["image_features"], F.normalize(model.clip.encode_image(images), dim=-1))
    torch.testing.assert_close(out["text_features"], F.normalize(model.clip.encode_text(texts), dim=-1))


def test_encode_returns_one_tensor_whose_dot_is_the_mixed_similarity():
    model = create_model(tiny(), second_order="mbdc", alpha=0.3, second_options={"heads": 2}).eval()
    images, texts = images_for(model), fake_text(3)
    out = model(images, texts)
    img, txt = model.encode_image(images), model.encode_text(texts)
    assert isinstance(img, torch.Tensor) and img.shape == (3, 2 * EMBED)
    mixed = 0.3 * out["image_features"] @ out["text_features"].T + 0.7 * out["image_second"] @ out["text_second"].T
    torch.testing.assert_close(img @ txt.T, mixed)
    torch.testing.assert_close(model.encode_image(images, embedding="second"), out["image_second"])
    model.alpha = 0.8  # a weight chosen after training: the same similarity at the new mix
    mixed = 0.8 * out["image_features"] @ out["text_features"].T + 0.2 * out["image_second"] @ out["text_second"].T
    torch.testing.assert_close(model.encode_image(images) @ model.encode_text(texts).T, mixed)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        model.alpha = 1.5
    plain = create_model(tiny(), second_order=None)
    assert plain.encode_text(texts).shape == (3, EMBED)
    with pytest.raises(ValueError, match="no second-order head"):
        plain.encode_text(texts, embedding="second")


def test_text_tokens_mask_padding_and_after_eot():
    model = create_model(tiny(), second_order="mbdc", second_options={"heads": 2}).eval()
    texts = fake_text(4)
    tower = extract_text_tokens(model.clip, texts)
    eot = texts.argmax(-1)
    assert torch.equal(tower.mask, torch.arange(12)[None] <= eot[:, None])
    torch.testing.assert_close(tower.guide, tower.tokens[torch.arange(4), eot])
    changed = texts.clone()
    for i, e in enumerate(eot.tolist()):
        changed[i, e + 1 :] = torch.randint(1, 60, (11 - e,))  # garbage after EOT
    a, b = model.encode_text(texts, embedding="second"), model.encode_text(changed, embedding="second")
    torch.testing.assert_close(a, b)


def test_first_order_poolers_and_per_tower_choices():
    model = create_model(tiny(), first_order="mean", second_order={"image": "mbdc", "text": "cov"},
                         second_options={"image": {"heads": 2}, "text": {"reduced_dim": 3}})
    assert type(model.second_heads["image"].pooler).__name__ == "MBDC"
    assert model.second_heads["text"].pooler.out_dim == 6 and isinstance(model.second_heads["text"].proj, torch.nn.Linear)
    out = model(images_for(model), fake_text(2 if False else 3))
    assert out["image_features"].shape == (3, EMBED)
    assert set(map(id, model.head_parameters())) == set(map(id, [*model.first_heads.parameters(), *model.second_heads.parameters()]))


def test_separate_second_scale():
    model = create_model(tiny(), separate_second_scale=True, second_options={"heads": 2})
    out = model(images_for(model), fake_text(3))
    assert out["second_logit_scale"].ndim == 0 and any(p is model.second_logit_scale for p in model.head_parameters())


def test_bad_inputs():
    model = create_model(tiny(), second_options={"heads": 2})
    with pytest.raises(ValueError, match="batch sizes differ: 3 images, 2 texts"):
        model(images_for(model), fake_text(2))
    with pytest.raises(ValueError, match="token ids"):
        model.encode_text(torch.randn(2, 12))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        model.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="tokens have width 32"):
        create_model(tiny(), second_options={"dim": 16})
    with pytest.raises(ValueError, match="unsupported image tower ModifiedResNet"):
        create_model(tiny({"layers": [1, 1, 1, 1], "width": 8, "image_size": 64, "head_width": 8}))
    with pytest.raises(ValueError, match="unknown model 'ViT-Z-99'"):
        create_model("ViT-Z-99")
    with pytest.raises(dalip.UnknownComponentError, match="Known poolers"):
        create_model(tiny(), second_order="mdbc")
    with pytest.raises(ValueError, match="alpha"):
        create_model(tiny(), alpha=1.5)
    with pytest.raises(ValueError, match="hub tag"):
        create_model(tiny(), pretrained="openai")


def test_plain_clip_runs_open_clips_own_forward(kind, monkeypatch):
    """No head reads the tokens: the towers' plain forward, the same numbers as open_clip's model."""
    model = create_model(TOWERS[kind], second_order=None).eval()
    images, texts = images_for(model), fake_text(3)
    with torch.no_grad():
        image_ref, text_ref, _ = model.clip(images, texts)[:3]  # open_clip's own forward (normalised)
        import dalip.models.dalip_model as wrapper

        def no_tokens(*args, **kwargs):
            raise AssertionError("tokens extracted although no head needs them")

        monkeypatch.setattr(wrapper, "extract_image_tokens", no_tokens)
        monkeypatch.setattr(wrapper, "extract_text_tokens", no_tokens)
        out = model(images, texts)
    assert torch.equal(out["image_features"], image_ref) and torch.equal(out["text_features"], text_ref)
    with pytest.raises(ValueError, match="images must have shape"):
        model.encode_image(images[0])
    # a first-order pooler on the image tower only: only that tower extracts tokens
    mixed = create_model(TOWERS[kind], first_order={"image": "mean", "text": "tower"}, second_order=None)
    with pytest.raises(AssertionError, match="tokens extracted"):
        mixed(images, texts)
    assert mixed.encode_text(texts).shape == (3, EMBED)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_open_clip_checkpoint_loads_into_towers_heads_stay_fresh(tmp_path, suffix):
    source = create_model(tiny(), second_order=None)
    path = tmp_path / f"clip{suffix}"
    state = {f"module.{k}": v.contiguous() for k, v in source.clip.state_dict().items()}  # DDP-style prefix
    if suffix == ".pt":
        torch.save({"state_dict": state, "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    torch.manual_seed(123)
    model = create_model(tiny(), pretrained=path, second_options={"heads": 2})
    torch.manual_seed(123)
    fresh = create_model(tiny(), second_options={"heads": 2})
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    for key, value in source.clip.state_dict().items():
        torch.testing.assert_close(model.clip.state_dict()[key], value)
    for (k, a), (_, b) in zip(model.second_heads.state_dict().items(), fresh.second_heads.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    # a partial checkpoint is refused (strict, the default), or loaded as far as it matches and reported
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in source.clip.state_dict().items() if not k.startswith("visual.")} | {"extra.w": torch.ones(1)}, partial)
    with pytest.raises(PretrainedMismatchError, match=r"missing \(e.g. \['visual\..*1 unexpected \(e.g. \['extra.w'\]"):
        load_checkpoint(model, partial)
    report = load_checkpoint(model, partial, strict=False)
    assert report.unexpected == ["extra.w"] and report.missing and all(k.startswith("visual.") for k in report.missing)


def test_pretrained_of_another_shape_is_refused_unless_relaxed(tmp_path):
    """Same key names, other shapes (e.g. a wider model): strict names the keys; relaxed loads the rest."""
    source = create_model(tiny(), second_options={"heads": 2})
    state = source.clip.state_dict()
    key = "visual.proj" if "visual.proj" in state else next(k for k, v in state.items() if v.ndim == 2)
    other = {**state, key: torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])}
    path = tmp_path / "other.pt"
    torch.save(other, path)
    with pytest.raises(PretrainedMismatchError, match=f"1 of another shape .*{key}"):
        create_model(tiny(), pretrained=path, second_options={"heads": 2})
    model = create_model(tiny(), pretrained=path, second_options={"heads": 2}, pretrained_strict=False)
    assert [m.split(":")[0] for m in model.load_report.mismatched] == [key] and "another shape" in str(model.load_report)
    torch.testing.assert_close(model.clip.state_dict()["logit_scale"], state["logit_scale"])


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoints_never_unpickle_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(ValueError, match="weights-only"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")


def test_list_models_and_tokenizer():
    assert "effl0-minilm" in dalip.models.list_models("effl0*")
    assert "ViT-B-16" in dalip.models.list_models("ViT-B-16")
    ids = dalip.models.get_tokenizer("ViT-B-16")(["a dog"])
    assert ids.shape == (1, 77)


@pytest.fixture(scope="module")
def effl0_minilm():
    return create_model("effl0-minilm", second_order="mbdc").eval()


def test_effl0_minilm_text_tower_is_really_pretrained(effl0_minilm):
    tokenizer = dalip.models.get_tokenizer("effl0-minilm")
    with torch.no_grad():
        dog, puppy, car = effl0_minilm.encode_text(tokenizer(["dog", "puppy", "car"]), embedding="first")
    assert dog @ puppy > dog @ car + 0.2  # measured: 0.80 vs 0.48 with the shipped weights


def test_effl0_minilm_image_trunk_holds_the_shipped_imagenet_weights(effl0_minilm):
    shipped = list(torch.load(dalip.models.efficientnet_lite0_weights(), weights_only=True).values())
    trunk = list(effl0_minilm.clip.visual.trunk.state_dict().values())
    assert torch.equal(trunk[0], shipped[0]) and torch.equal(trunk[-1], shipped[-3])
    out = effl0_minilm(torch.randn(2, 3, 128, 128), dalip.models.get_tokenizer("effl0-minilm")(["a", "b"]))
    assert out["image_second"].shape == (2, 384)
    tower = effl0_minilm.image_tower(torch.randn(1, 3, 128, 128))
    assert tower.tokens.shape == (1, 16, 1280)  # 4 x 4 final grid at 128 px


def test_model_output_feeds_the_losses_and_matches_open_clip():
    import open_clip

    model = create_model(tiny(), second_options={"heads": 2})
    out = model(images_for(model, 4), fake_text(4))
    reference = open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"])
    assert torch.equal(dalip.create_loss("distribution", alpha=1.0)(**out), reference)
    mixed = dalip.create_loss("distribution", alpha=0.5)(**out)
    second = open_clip.ClipLoss()(out["image_second"], out["text_second"], out["logit_scale"])
    torch.testing.assert_close(mixed, 0.5 * reference + 0.5 * second)
    mixed.backward()
    assert model.second_heads["image"].pooler.in_proj.weight.grad is not None


def test_open_clip_options_reach_dict_configs_for_siglip():
    model = create_model(tiny(), second_options={"heads": 2}, init_logit_bias=-10.0)
    out = model(images_for(model, 4), fake_text(4))
    assert out["logit_bias"].item() == -10.0
    loss = dalip.create_loss("distribution", base="siglip")(**out)
    assert torch.isfinite(loss)
