"""``create_model`` and ``get_tokenizer``: open_clip models with DALIP heads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import load_checkpoint
from .configs import MODEL_CONFIGS
from .dalip_model import DALIPModel

__all__ = ["create_model", "get_tokenizer", "list_models", "read_model_config"]


def list_models(pattern: str = "*") -> list[str]:
    """dalip's own configs followed by open_clip's architectures, filtered by a wildcard."""
    import fnmatch

    import open_clip

    names = sorted(MODEL_CONFIGS) + open_clip.list_models()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def read_model_config(path: str | Path) -> dict[str, Any]:
    """An open_clip model config from a JSON file (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config file not found: {path}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON: {err}") from None
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ValueError(f"{path}: an open_clip model config needs {missing}")
    return config


def _build_open_clip(config: Mapping[str, Any]) -> torch.nn.Module:
    import open_clip

    config = dict(config)
    custom = config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**config)


def create_model(
    model_name_or_config: str | Mapping[str, Any],
    pretrained: str | Path | None = None,
    first_order: str | Mapping[str, str] = "tower",
    second_order: str | None | Mapping[str, str | None] = "mbdc",
    *,
    second_options: Mapping[str, Any] | None = None,
    alpha: float = 0.5,
    separate_second_scale: bool = False,
    pretrained_towers: bool = True,
    **open_clip_kwargs: Any,
) -> DALIPModel:
    """Any open_clip model with first- and second-order heads.

    Args:
        model_name_or_config: a dalip config (``"effl0-minilm"``), an open_clip
            architecture name (``"ViT-B-16"``), or an open_clip config dict
            (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        pretrained: a local open_clip checkpoint (``.pt`` / ``.safetensors``) for
            the towers; the new heads start fresh. Hub tags are not fetched.
        first_order: ``"tower"`` (the tower's own output) or a pooler name, per tower if needed.
        second_order: a pooler name or None (plain CLIP), per tower if needed.
        second_options: pooler options, shared or per tower.
        alpha: first-order weight of the combined embedding.
        separate_second_scale: learn a second logit scale for the second-order pair.
        pretrained_towers: for dalip configs, load the weights their packages ship.
        **open_clip_kwargs: passed to ``open_clip.create_model`` for named architectures,
            or added to the model config otherwise (e.g. ``init_logit_bias=-10`` for SigLIP).

    Returns:
        a `DALIPModel`.
    """
    import open_clip

    if isinstance(model_name_or_config, (str, Path)) and str(model_name_or_config).endswith(".json"):
        model_name_or_config = read_model_config(model_name_or_config)
    if isinstance(model_name_or_config, Mapping):
        config = {**dict(model_name_or_config), **open_clip_kwargs}
        clip = _build_open_clip(config)
    elif model_name_or_config in MODEL_CONFIGS:
        spec = MODEL_CONFIGS[model_name_or_config]
        config = {**spec.build(pretrained_towers), **open_clip_kwargs}
        clip = _build_open_clip(config)
        if pretrained_towers:
            spec.load_towers(clip)
    elif model_name_or_config in open_clip.list_models():
        if open_clip_kwargs.pop("pretrained", None):
            raise ValueError("pass pretrained weights as the 'pretrained' file path argument")
        clip = open_clip.create_model(model_name_or_config, pretrained=None, **open_clip_kwargs)
        config = open_clip.get_model_config(model_name_or_config)
    else:
        known = ", ".join(sorted(MODEL_CONFIGS)) + "; open_clip: " + ", ".join(open_clip.list_models()[:12]) + ", ..."
        raise ValueError(f"unknown model {model_name_or_config!r}. Known: {known} (see dalip.list_models())")
    model = DALIPModel(
        clip,
        embed_dim=int(config["embed_dim"]),
        first_order=first_order,
        second_order=second_order,
        second_options=second_options,
        alpha=alpha,
        separate_second_scale=separate_second_scale,
    )
    if pretrained is not None:
        if not Path(pretrained).suffix:
            raise ValueError(
                f"pretrained={pretrained!r} looks like a hub tag; dalip loads local checkpoint files only "
                "(.pt, .pth, .bin or .safetensors)"
            )
        report = load_checkpoint(model, pretrained)
        model.load_report = report
    return model


def get_tokenizer(model_name: str, **kwargs: Any) -> Any:
    """The tokenizer of a dalip config or open_clip architecture (open_clip's own classes)."""
    import open_clip

    if model_name in MODEL_CONFIGS:
        return MODEL_CONFIGS[model_name].tokenizer()
    if str(model_name).endswith(".json"):
        text = read_model_config(model_name)["text_cfg"]
        if "hf_tokenizer_name" in text:
            return open_clip.tokenizer.HFTokenizer(text["hf_tokenizer_name"], context_length=text.get("context_length", 77))
        return open_clip.tokenizer.SimpleTokenizer(context_length=text.get("context_length", 77))
    return open_clip.get_tokenizer(model_name, **kwargs)
