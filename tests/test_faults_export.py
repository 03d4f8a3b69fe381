"""Fault injection for ``dalip export`` (issue 21, cases 2-4): a folder that needs the hub, a DALIP export
scored as plain CLIP, an export into a non-empty folder.

- an export moved elsewhere, loaded with no hub access and another working directory -> the text
  tower's config and tokenizer come from the folder: dalip and plain open_clip (given the folder's
  ``text_tower``) give the exporting model's embeddings (``test_export_loads_offline_after_a_move``).
- ``dalip eval --model local-dir:EXPORT`` -> first, second, combined and fusion scores equal to
  ``--checkpoint`` of the run (``test_eval_of_an_export_equals_its_checkpoint``).
- an export into a non-empty folder -> refused (exit 2, one line); ``--overwrite`` deletes only the
  previous export's files (``--dalip-only`` leaves no ``open_clip_*`` file), ``written`` lists exactly
  what was written, every file has the same mode; ``--alpha`` without second-order heads -> refused
  (``test_export_into_a_non_empty_folder``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shapes import make_shapes_folder
from test_export import inputs, save_run

import dalip
from dalip.cli import main
from dalip.models.configs import minilm_path
from dalip.models.export import DALIP_CONFIG, OPEN_CLIP_CONFIG, export_files, export_model

TINY_BERT = {  # a 1-layer BERT: a Hugging Face text tower named by a local folder that will be gone
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32, "num_attention_heads": 2,
    "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 64,
}

OFFLINE_LOAD = """
import json, sys
import open_clip, torch
folder, out = sys.argv[1], sys.argv[2]
images, tokens = torch.load(out, weights_only=True).values()
text_cfg = json.load(open(f"{folder}/open_clip_config.json"))["model_cfg"]["text_cfg"]
clip, _, _ = open_clip.create_model_and_transforms(  # plain open_clip, given the folder's text tower
    f"local-dir:{folder}", text_cfg={**text_cfg, "hf_model_name": f"{folder}/text_tower", "hf_model_pretrained": False})
plain_tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(["a leaf", "a photo of a mushroom"])
import dalip
model = dalip.create_model(f"local-dir:{folder}")
with torch.no_grad():
    got = {"plain_image": clip.eval().encode_image(images, normalize=True),
           "plain_text": clip.encode_text(tokens, normalize=True), "plain_tokens": plain_tokens,
           "dalip_tokens": dalip.get_tokenizer(f"local-dir:{folder}")(["a leaf", "a photo of a mushroom"]),
           "image": model.encode_image(images), "text": model.encode_text(tokens)}
torch.save(got, out)
"""


def file_modes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_loads_offline_after_a_move(tmp_path: Path) -> None:
    bert = tmp_path / "tiny-bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps(TINY_BERT))
    cfg = json.loads((Path(__file__).parent / "assets" / "tiny-clip.json").read_text())
    cfg["text_cfg"] = {"hf_model_name": str(bert), "hf_tokenizer_name": minilm_path(), "hf_model_pretrained": False,
                       "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "context_length": 16}
    (tmp_path / "tiny-bert-clip.json").write_text(json.dumps(cfg))
    section = {"name": str(tmp_path / "tiny-bert-clip.json"), "second_order": "cov", "second_options": {"reduced_dim": 4}}
    model = dalip.create_model(section["name"], second_order="cov", second_options={"reduced_dim": 4}).eval()
    tokenizer = dalip.get_tokenizer(section["name"])
    out = export_model(model, section, tmp_path / "export", tokenizer=tokenizer)
    assert (out / "text_tower" / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert {p.relative_to(out).as_posix() for p in export_files(out)} >= {"text_tower/config.json", "tokenizer.json"}
    assert set(file_modes(out).values()) == {0o666 & ~umask()}

    moved, elsewhere = tmp_path / "moved" / "export", tmp_path / "elsewhere"
    moved.parent.mkdir()
    elsewhere.mkdir()
    shutil.move(str(out), str(moved))
    shutil.rmtree(bert)  # the tower it was built from is gone too
    images, tokens = torch.rand(2, 3, 64, 64), tokenizer(["a leaf", "a photo of a mushroom"])
    torch.save({"images": images, "tokens": tokens}, tmp_path / "io.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "no-cache"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", OFFLINE_LOAD, str(moved), str(tmp_path / "io.pt")], cwd=elsewhere, check=False,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "io.pt", weights_only=True)
    with torch.no_grad():
        for key, embedding in (("plain_image", "first"), ("image", "combined")):
            torch.testing.assert_close(got[key], model.encode_image(images, embedding=embedding), rtol=0, atol=1e-6)
        for key, embedding in (("plain_text", "first"), ("text", "combined")):
            torch.testing.assert_close(got[key], model.encode_text(tokens, embedding=embedding), rtol=0, atol=1e-6)
    assert torch.equal(got["plain_tokens"], tokens) and torch.equal(got["dalip_tokens"], tokens)


def test_eval_of_an_export_equals_its_checkpoint(tmp_path: Path) -> None:
    checkpoint, _ = save_run(tmp_path)
    shapes = make_shapes_folder(tmp_path / "shapes", per_class=2)
    export = tmp_path / "export"
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(export)]) == 0
    common = ["--zero-shot", str(shapes), "--templates", "simple", "--batch-size", "128"]  # 128: eval.batch_size
    fusion = ["--fusion", "0", "0.3", "1"]
    by_run, by_export = tmp_path / "run.json", tmp_path / "export.json"
    assert main(["eval", "--checkpoint", str(checkpoint), *common, "--output", str(by_run), *fusion]) == 0
    assert main(["eval", "--model", f"local-dir:{export}", *common, "--output", str(by_export), *fusion]) == 0
    expected, got = json.loads(by_run.read_text()), json.loads(by_export.read_text())
    assert list(got) == ["first", "second", "combined", "fusion@0", "fusion@0.3", "fusion@1"]
    assert got == expected
    assert (tmp_path / "export_fusion.png").is_file()


def test_export_into_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, _ = save_run(tmp_path)
    out = tmp_path / "export"
    (out / "mine").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "mine" / "vocab.txt").write_text("keep me too")
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == ["mine", "notes.txt"]

    def export(*flags: str) -> list[str]:
        assert main(["export", "--checkpoint", str(checkpoint), "--output", str(out), "--overwrite", *flags]) == 0
        written = [line.removeprefix("written ") for line in capsys.readouterr().out.splitlines()
                   if line.startswith("written ")]
        assert sorted(written) == sorted(str(p) for p in out.rglob("*") if p.is_file() and "mine" not in p.parts
                                         and p.name != "notes.txt")
        assert (out / "notes.txt").read_text() == "keep me" and (out / "mine" / "vocab.txt").is_file()
        assert set(file_modes(out).values()) == {0o666 & ~umask()}, file_modes(out)
        return sorted(Path(p).name for p in written)

    assert OPEN_CLIP_CONFIG in export()
    config = json.loads((out / DALIP_CONFIG).read_text())
    del config["files"]  # as an export written before exports listed their files, with a tokenizer
    (out / DALIP_CONFIG).write_text(json.dumps(config))
    (out / "tokenizer.json").write_text("{}")
    assert export("--dalip-only") == sorted([DALIP_CONFIG, "dalip_model.safetensors"])
    assert not list(out.glob("open_clip_*"))
    whole = dalip.create_model(f"local-dir:{out}")
    _, tokens = inputs()
    assert whole.encode_text(tokens).shape == (3, 64)

    (tmp_path / "first").mkdir()
    first_only, _ = save_run(tmp_path / "first", "model.second_order=null", "loss.name=clip")
    assert main(["export", "--checkpoint", str(first_only), "--output", str(tmp_path / "a"), "--alpha", "0.8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no second-order heads" in err[0], err
    assert not (tmp_path / "a").exists()
