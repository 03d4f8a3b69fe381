"""Loading a dalip export folder: the whole DALIP model and its tokenizer (see `dalip.models.export` for the files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dalip.models.checkpoint import LoadReport
from dalip.models.configs import MODEL_CONFIGS
from dalip.models.dalip_model import DALIPModel
from dalip.models.head_spec import HeadSpec
from dalip.models.names import DALIP_CONFIG, DALIP_WEIGHTS, LOCAL_DIR, OPEN_CLIP_CONFIG, read_json
from dalip.models.sources import add_heads, build_towers, towers_from_config
from dalip.models.tokenizers import tokenizer_for_name, tokenizer_from_config

__all__ = ["export_tokenizer", "load_export", "read_export", "rebuildable_by_name"]


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


def _export_heads(section: dict[str, Any]) -> HeadSpec:
    """The head options of an export's ``model`` section (unset ones at their defaults; ``second_order`` as stored)."""
    return HeadSpec.from_mapping({k: v for k, v in section.items() if v is not None or k == "second_order"})


def _rebuild_without_weights(data: dict[str, Any]) -> DALIPModel:
    """The export's model architecture, heads included: by name when it resolves here, else by its open_clip config."""
    section = data["model"]
    name, open_clip_kwargs = section["name"], section.get("open_clip", {})
    if rebuildable_by_name(name):
        towers = build_towers(name, None, pretrained_towers=False, cache_dir=None, open_clip_kwargs=open_clip_kwargs)
    else:
        towers = towers_from_config(data["model_cfg"], {})
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
    model = _rebuild_without_weights(data)
    model.load_state_dict(load_file(str(weights)))
    if data.get("preprocess_cfg"):
        open_clip.set_model_preprocess_cfg(model.clip, data["preprocess_cfg"])
    model.load_report = LoadReport(source=f"dalip export {folder} ({data.get('source') or 'no source noted'})")
    return model.eval()


def export_tokenizer(folder: str | Path) -> Any:
    """The tokenizer of an export: by the stored model name, else the folder's open_clip files."""
    import open_clip

    folder, data = read_export(folder)
    name = data["model"]["name"]
    if rebuildable_by_name(name):
        return tokenizer_for_name(name)
    if (folder / OPEN_CLIP_CONFIG).is_file():
        return open_clip.get_tokenizer(f"{LOCAL_DIR}{folder}")
    return tokenizer_from_config(data["model_cfg"])
