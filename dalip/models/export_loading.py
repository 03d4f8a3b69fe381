"""Loading a dalip export folder: the whole DALIP model and its tokenizer (see `dalip.models.export` for the files).

An export carries its Hugging Face text tower's ``config.json`` (in ``text_tower/``) and tokenizer
files: a model rebuilt from its stored open_clip config reads them from the folder, never the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dalip.models.checkpoint import LoadReport
from dalip.models.configs import MODEL_CONFIGS
from dalip.models.dalip_model import DALIPModel
from dalip.models.head_spec import HeadSpec
from dalip.models.names import (
    DALIP_CONFIG,
    DALIP_WEIGHTS,
    LOCAL_DIR,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHTS,
    read_json,
)
from dalip.models.sources import add_heads, build_towers, towers_from_config
from dalip.models.tokenizers import tokenizer_for_name, tokenizer_from_config

__all__ = [
    "EXPORT_FILES_KEY", "TEXT_TOWER", "export_files", "export_tokenizer", "load_export", "local_model_config",
    "read_export", "rebuildable_by_name",
]

TEXT_TOWER = "text_tower"
"""The sub-folder of an export holding its Hugging Face text tower's ``config.json`` (the architecture, no weights)."""

EXPORT_FILES_KEY = "files"
"""The entry of ``dalip_config.json`` listing every file the export wrote (relative to the folder)."""

_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
)  # what Hugging Face tokenizers save: exports written before EXPORT_FILES_KEY listed their files


def read_export(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder and the contents of its ``dalip_config.json``.

    Raises:
        FileNotFoundError: no such folder, or no ``dalip_config.json`` in it.
        ValueError: the config has no ``model`` section with a ``name``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder not found: {folder}")
    path = folder / DALIP_CONFIG
    data = read_json(path, f"{DALIP_CONFIG} of a dalip export (is {folder} one?)")
    if not isinstance(data, dict) or "model" not in data or "name" not in data.get("model", {}):
        raise ValueError(f"{path}: no 'model' section with a 'name'")
    return folder, data


def rebuildable_by_name(name: str) -> bool:
    """dalip configs and open_clip's built-in architectures are rebuilt by name (local paths resolve here)."""
    import open_clip

    return name in MODEL_CONFIGS or name in open_clip.list_models()


def _listed_files(folder: Path, data: dict[str, Any]) -> list[str] | None:
    """The ``files`` entry of an export's config (names inside the folder only), or None when absent."""
    names = data.get(EXPORT_FILES_KEY)
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{folder / DALIP_CONFIG}: '{EXPORT_FILES_KEY}' is not a list of file names")
    outside = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
    if outside:
        raise ValueError(f"{folder / DALIP_CONFIG}: '{EXPORT_FILES_KEY}' names files outside the folder: {outside}")
    return names


def export_files(folder: str | Path) -> list[Path]:
    """The files a dalip export wrote into ``folder`` (that exist), sorted.

    Read from the list in its ``dalip_config.json``; for an export written before that list,
    the files named like an export's (its four files, ``text_tower/config.json`` and, beside an
    export config, Hugging Face tokenizer files). No export in ``folder``: none of those files.
    """
    folder = Path(folder)
    names = None
    if (folder / DALIP_CONFIG).is_file():
        names = _listed_files(*read_export(folder))
    if names is None:
        names = [DALIP_CONFIG, DALIP_WEIGHTS, OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, f"{TEXT_TOWER}/config.json"]
        if (folder / DALIP_CONFIG).is_file() or (folder / OPEN_CLIP_CONFIG).is_file():
            names += list(_TOKENIZER_FILES)
    return sorted(folder / n for n in set(names) if (folder / n).is_file())


def local_model_config(folder: str | Path, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """``model_cfg`` with its Hugging Face text tower and tokenizer read from the export ``folder``.

    ``text_cfg.hf_model_name`` becomes ``folder/text_tower`` (built from that ``config.json``,
    without pretrained weights) and ``hf_tokenizer_name`` the folder when it holds the
    tokenizer's files; what the folder lacks keeps its stored name. Its ``text_cfg`` given to
    ``open_clip.create_model_and_transforms("local-dir:DIR", text_cfg=...)`` makes plain
    open_clip load the export with no hub access (open_clip resolves ``hf_model_name`` against
    the working directory, not the export folder).
    """
    folder = Path(folder).absolute()
    text = dict(model_cfg.get("text_cfg", {}))
    if text.get("hf_model_name") and (folder / TEXT_TOWER / "config.json").is_file():
        text.update(hf_model_name=str(folder / TEXT_TOWER), hf_model_pretrained=False)
    if text.get("hf_tokenizer_name") and (folder / "tokenizer_config.json").is_file():
        text["hf_tokenizer_name"] = str(folder)
    return {**model_cfg, "text_cfg": text}


def _export_heads(section: dict[str, Any]) -> HeadSpec:
    """The head options of an export's ``model`` section (unset ones at their defaults; ``second_order`` as stored)."""
    return HeadSpec.from_mapping({k: v for k, v in section.items() if v is not None or k == "second_order"})


def _rebuild_without_weights(folder: Path, data: dict[str, Any]) -> DALIPModel:
    """The export's model architecture, heads included: by name when it resolves here, else by its open_clip
    config (its Hugging Face text tower from the folder's own files)."""
    section = data["model"]
    name, open_clip_kwargs = section["name"], section.get("open_clip", {})
    if rebuildable_by_name(name):
        towers = build_towers(name, None, pretrained_towers=False, cache_dir=None, open_clip_kwargs=open_clip_kwargs)
    else:
        towers = towers_from_config(local_model_config(folder, data["model_cfg"]), {})
    return add_heads(towers, _export_heads(section))


def load_export(folder: str | Path) -> DALIPModel:
    """The whole DALIP model of an export folder (what ``create_model("local-dir:DIR")`` returns).

    Built without pretrained weights (dalip configs and open_clip architectures by name,
    anything else from the stored open_clip config), then ``dalip_model.safetensors`` is
    loaded strictly and the stored preprocess cfg set. The model is in eval mode.

    Raises:
        FileNotFoundError: no folder, or no ``dalip_config.json`` / ``dalip_model.safetensors`` in it.
    """
    import open_clip
    from safetensors.torch import load_file

    folder, data = read_export(folder)
    weights = folder / DALIP_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} is an incomplete dalip export: {DALIP_WEIGHTS} is missing")
    model = _rebuild_without_weights(folder, data)
    model.load_state_dict(load_file(str(weights)))
    if data.get("preprocess_cfg"):
        open_clip.set_model_preprocess_cfg(model.clip, data["preprocess_cfg"])
    model.load_report = LoadReport(source=f"dalip export {folder} ({data.get('source') or 'no source noted'})")
    return model.eval()


def export_tokenizer(folder: str | Path) -> Any:
    """The tokenizer of an export: by the stored model name, else the folder's open_clip files or own tokenizer files."""
    import open_clip

    folder, data = read_export(folder)
    name = data["model"]["name"]
    if rebuildable_by_name(name):
        return tokenizer_for_name(name)
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return open_clip.get_tokenizer(f"{LOCAL_DIR}{folder}")
    return tokenizer_from_config(local_model_config(folder, data["model_cfg"]))
