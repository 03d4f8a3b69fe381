"""Exporting a DALIP model as an open_clip hub-style folder plus the whole DALIP model.

A folder written by `export_model` holds

- ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``) and
  ``open_clip_model.safetensors``: the towers and their first-order projections (the
  ``clip.`` part of the state dict). ``open_clip.create_model_and_transforms("local-dir:DIR")``
  or ``"hf-hub:ORG/REPO"`` after an upload loads them; its ``encode_image`` / ``encode_text``
  are dalip's first-order embeddings. HF tokenizers are saved beside them.
- ``dalip_config.json`` (the run's ``model`` section, the open_clip model and preprocess
  configs) and ``dalip_model.safetensors`` (every weight, heads included):
  ``dalip.create_model("local-dir:DIR")`` loads the whole DALIP model.

A first-order *pooler* head (``first_order="mean"``, ...) is not part of open_clip's
model: its first-order embedding cannot be carried by the open_clip files, so such a
model is exported with ``open_clip_files=False`` (DALIP files only).

dalip's own ``effl0-minilm`` names its text tower by a local package folder; the open_clip
config names it by its hub id (``sentence-transformers/all-MiniLM-L6-v2``), which open_clip
resolves on any machine online or with that model's ``config.json`` in the Hugging Face
cache; the DALIP files rebuild it from the local package, fully offline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dalip.io import atomic_write_text
from dalip.models.checkpoint import LoadReport
from dalip.models.configs import MODEL_CONFIGS, portable_model_config
from dalip.models.dalip_model import DALIPModel
from dalip.models.factory import (
    create_model,
    get_tokenizer,
    open_clip_model_config,
    read_json,
    tokenizer_from_config,
)

__all__ = ["export_model", "export_tokenizer", "load_export", "push_export"]

DALIP_CONFIG, DALIP_WEIGHTS = "dalip_config.json", "dalip_model.safetensors"
OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
HEAD_KEYS = ("first_order", "second_order", "second_options", "alpha", "separate_second_scale", "alpha_learnable")


def _save_tensors(state: Mapping[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def export_model(
    model: DALIPModel,
    model_section: Mapping[str, Any],
    output: str | Path,
    *,
    tokenizer: Any = None,
    open_clip_files: bool = True,
    source: str = "",
) -> Path:
    """Write ``model`` to the folder ``output`` (see the module docs for the files).

    Args:
        model: the DALIP model.
        model_section: how it was built: ``name`` (as `create_model` takes it), ``first_order``,
            ``second_order``, ``second_options``, ``alpha``, ``separate_second_scale``, ``open_clip``
            (the ``model`` section of a run config).
        output: the folder (created).
        tokenizer: saved beside the open_clip files when it is a Hugging Face tokenizer.
        open_clip_files: also write the open_clip files (needs ``first_order="tower"``).
        source: a note on the origin, stored in ``dalip_config.json``.

    Returns:
        the folder.

    Raises:
        ValueError: ``open_clip_files`` for a model whose first-order embedding is a pooler head.
    """
    import open_clip


    poolers = {t: f for t, f in model.first_order.items() if f not in ("tower", None)}
    if open_clip_files and poolers:
        raise ValueError(
            f"first_order={poolers} is a dalip pooler head, which open_clip's model does not have: the open_clip "
            "files could not reproduce the first-order embedding. Export the DALIP files only (open_clip_files=False, "
            "`dalip export --dalip-only`)"
        )
    name = str(model_section["name"])
    open_clip_kwargs = dict(model_section.get("open_clip") or {})
    model_cfg = _jsonable(portable_model_config(open_clip_model_config(name, **open_clip_kwargs)))
    preprocess_cfg = _jsonable(open_clip.get_model_preprocess_cfg(model.clip))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if open_clip_files:
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        atomic_write_text(output / OPEN_CLIP_CONFIG, json.dumps(config, indent=2))
        _save_tensors({k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}, output / OPEN_CLIP_WEIGHTS)
        if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
            tokenizer.save_pretrained(str(output))  # open_clip's local-dir: tokenizers read the folder
    section = {"name": name, **{k: model_section.get(k) for k in HEAD_KEYS if k in model_section}, "open_clip": open_clip_kwargs}
    if model.alpha_logit is None:  # the model's own weight (it may have been set after training); a learned one is in the state
        section["alpha"] = model.alpha
    dalip_config = {"format": "dalip-export/1", "model": _jsonable(section), "model_cfg": model_cfg,
                    "preprocess_cfg": preprocess_cfg, "source": source}
    atomic_write_text(output / DALIP_CONFIG, json.dumps(dalip_config, indent=2))
    _save_tensors(state, output / DALIP_WEIGHTS)
    return output


def _read_export(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder not found: {folder}")
    path = folder / DALIP_CONFIG
    data = read_json(path, f"{DALIP_CONFIG} of a dalip export (is {folder} one?)")
    if not isinstance(data, dict) or "model" not in data or "name" not in data.get("model", {}):
        raise ValueError(f"{path}: no 'model' section with a 'name'")
    return folder, data


def _rebuildable_by_name(name: str) -> bool:
    """dalip configs and open_clip's built-in architectures are rebuilt by name (local paths resolve here)."""
    import open_clip


    return name in MODEL_CONFIGS or name in open_clip.list_models()


def load_export(folder: str | Path) -> DALIPModel:
    """The whole DALIP model of an export folder (what ``create_model("local-dir:DIR")`` returns).

    Built without pretrained weights (dalip configs and open_clip architectures by name,
    anything else from the stored open_clip config), then ``dalip_model.safetensors`` is
    loaded strictly and the stored preprocess cfg set.

    Raises:
        FileNotFoundError: no folder, or no ``dalip_config.json`` / ``dalip_model.safetensors`` in it.
    """
    import open_clip
    from safetensors.torch import load_file


    folder, data = _read_export(folder)
    weights = folder / DALIP_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} is an incomplete dalip export: {DALIP_WEIGHTS} is missing")
    section = data["model"]
    heads = {k: section[k] for k in HEAD_KEYS if section.get(k) is not None or k == "second_order"}
    if _rebuildable_by_name(section["name"]):
        model = create_model(section["name"], pretrained_towers=False, **heads, **section.get("open_clip", {}))
    else:
        model = create_model(data["model_cfg"], pretrained_towers=False, **heads)
    model.load_state_dict(load_file(str(weights)))
    if data.get("preprocess_cfg"):
        open_clip.set_model_preprocess_cfg(model.clip, data["preprocess_cfg"])
    model.load_report = LoadReport(source=f"dalip export {folder} ({data.get('source') or 'no source noted'})")
    return model.eval()


def export_tokenizer(folder: str | Path) -> Any:
    """The tokenizer of an export: by the stored model name, else the folder's open_clip files."""
    import open_clip


    folder, data = _read_export(folder)
    name = data["model"]["name"]
    if _rebuildable_by_name(name):
        return get_tokenizer(name)
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return open_clip.get_tokenizer(f"local-dir:{folder}")
    return tokenizer_from_config(data["model_cfg"])


def push_export(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Add DALIP model") -> Any:
    """Upload an export folder to the Hugging Face Hub (``HfApi.create_repo`` + ``upload_folder``).

    Afterwards ``open_clip.create_model_and_transforms("hf-hub:REPO")`` loads the towers
    and ``dalip`` users can download the folder (``huggingface_hub.snapshot_download``) and
    load it with ``dalip.create_model("local-dir:FOLDER")``.
    """
    import huggingface_hub

    folder, _ = _read_export(folder)
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
