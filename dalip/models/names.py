"""What a model name `create_model` accepts refers to, read without building a model.

A name is a dalip config (``"effl0-minilm"``), an open_clip architecture (``"ViT-B-16"``),
an open_clip ``hf-hub:`` / ``local-dir:`` name, an open_clip config JSON file, or a
``local-dir:`` folder holding a dalip export; ``pretrained`` is a hub tag or a checkpoint file.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
from pathlib import Path
from typing import Any

from dalip.models.configs import MODEL_CONFIGS

__all__ = [
    "CHECKPOINT_SUFFIXES", "DALIP_CONFIG", "DALIP_WEIGHTS", "LOCAL_DIR", "OPEN_CLIP_CONFIG", "OPEN_CLIP_WEIGHTS",
    "check_pretrained_tag", "check_pretrained_value", "export_folder", "is_checkpoint_file", "is_dalip_export", "is_open_clip_name",
    "list_models", "name_schema", "open_clip_model_config", "read_json", "read_model_config",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
"""File suffixes that make ``pretrained`` a checkpoint file (even before the file exists)."""

LOCAL_DIR = "local-dir:"
"""open_clip's prefix of a model stored in a local folder."""

DALIP_CONFIG, DALIP_WEIGHTS = "dalip_config.json", "dalip_model.safetensors"
"""The files of a dalip export holding the whole DALIP model (see `dalip.models.export`)."""

OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
"""The files of a dalip export that open_clip reads (the towers and first-order projections)."""


def list_models(pattern: str = "*") -> list[str]:
    """dalip's own configs followed by open_clip's architectures, filtered by a wildcard."""
    import open_clip

    names = MODEL_CONFIGS.list() + open_clip.list_models()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def read_json(path: str | Path, what: str) -> Any:
    """The contents of a JSON file; a missing file or malformed JSON is an error naming ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON: {err}") from None


def read_model_config(path: str | Path) -> dict[str, Any]:
    """An open_clip model config from a JSON file (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    config = read_json(path, "model config file")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(f"{path}: an open_clip model config needs {missing}")
    return config


def name_schema(name: Any) -> str | None:
    """``"hf-hub"``, ``"local-dir"`` or None (no schema, or no string), by open_clip's own parser."""
    from open_clip.factory import parse_model_name

    return parse_model_name(name)[0] if isinstance(name, str) else None


def is_open_clip_name(name: Any) -> bool:
    """True for an ``hf-hub:`` / ``local-dir:`` name or an architecture open_clip knows."""
    import open_clip

    return bool(name_schema(name)) or (isinstance(name, str) and name in open_clip.list_models())


def is_dalip_export(name: Any) -> bool:
    """True for ``"local-dir:DIR"`` where DIR holds a dalip export (``dalip_config.json``)."""
    return name_schema(name) == "local-dir" and (export_folder(name) / DALIP_CONFIG).is_file()


def export_folder(name: str) -> Path:
    """The folder of a ``"local-dir:DIR"`` name."""
    return Path(name[len(LOCAL_DIR):])


def is_checkpoint_file(pretrained: str | Path | None) -> bool:
    """True when ``pretrained`` names a checkpoint file (a checkpoint suffix, or an existing file) and no hub tag."""
    return pretrained is not None and (Path(pretrained).suffix in CHECKPOINT_SUFFIXES or Path(pretrained).is_file())


def open_clip_model_config(name: str, cache_dir: str | None = None, **open_clip_kwargs: Any) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of a model name.

    Read by open_clip's own readers: built-in configs, ``local-dir:`` folders, and
    ``open_clip_config.json`` of ``hf-hub:`` repos (the file open_clip fetches and caches
    when it builds the model). Keyword arguments that ``open_clip.create_model`` passes on
    to the model constructor override the config as they do there.

    Raises:
        ValueError: open_clip knows no such model.
    """
    import open_clip
    from open_clip.factory import _get_hf_config, parse_model_name

    schema, identifier = parse_model_name(name)
    if name in MODEL_CONFIGS:
        config = MODEL_CONFIGS.create(name).build(False)
    elif name.endswith(".json"):
        config = read_model_config(name)
    elif schema == "hf-hub":  # get_model_config has no cache_dir: read the same file open_clip reads
        found = _get_hf_config(identifier, cache_dir=cache_dir)
        config = found.get("model_cfg", found)
    else:
        config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip has no model config for {name!r}")
    own = set(inspect.signature(open_clip.create_model).parameters)
    config = {**config, **{k: v for k, v in open_clip_kwargs.items() if k not in own}}
    for key, (section, field) in {"force_image_size": ("vision_cfg", "image_size"),
                                  "force_context_length": ("text_cfg", "context_length")}.items():
        if open_clip_kwargs.get(key) is not None:
            config[section] = {**config[section], field: open_clip_kwargs[key]}
    return config


def check_pretrained_tag(name: str, tag: str) -> None:
    """Raise a ValueError listing the valid tags unless open_clip knows ``tag`` for architecture ``name``."""
    import open_clip
    from open_clip.pretrained import is_pretrained_cfg

    if name_schema(name) or name in MODEL_CONFIGS or name.endswith(".json"):
        raise ValueError(f"{name!r} takes no hub tag (pretrained={tag!r}): hub tags need an open_clip architecture name")
    if not is_pretrained_cfg(name, tag):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(
            f"unknown pretrained tag {tag!r} for {name!r} (nor a file). "
            f"Valid tags: {', '.join(tags) if tags else 'none (this architecture has no released weights)'}"
        )


def check_pretrained_value(pretrained: str | Path | None) -> None:
    """Raise a ValueError when ``pretrained`` is a ``local-dir:`` / ``hf-hub:`` name: a whole model, not weights.

    The message says so, and for a ``local-dir:`` folder that does not exist names the folder,
    as open_clip does for such a model name.
    """
    schema = name_schema(str(pretrained)) if pretrained is not None else None
    if schema is None:
        return
    where = ""
    if schema == "local-dir" and not export_folder(str(pretrained)).is_dir():
        where = f"local-dir: folder not found: {export_folder(str(pretrained))}; "
    raise ValueError(
        f"pretrained={str(pretrained)!r}: {where}a {schema}: name is a whole model (config and weights), "
        f"not weights: give it as the model name (--model / model.name {pretrained}) without pretrained"
    )
