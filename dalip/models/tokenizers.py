"""The tokenizer of a model name or an open_clip model config (open_clip's own tokenizer classes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dalip.models.configs import MODEL_CONFIGS
from dalip.models.names import read_model_config

__all__ = ["tokenizer_for_name", "tokenizer_from_config"]


def tokenizer_from_config(config: Mapping[str, Any]) -> Any:
    """The tokenizer an open_clip model config names (``text_cfg.hf_tokenizer_name``, else CLIP's BPE)."""
    import open_clip

    text = config["text_cfg"]
    if "hf_tokenizer_name" in text:
        return open_clip.tokenizer.HFTokenizer(text["hf_tokenizer_name"], context_length=text.get("context_length", 77))
    return open_clip.tokenizer.SimpleTokenizer(context_length=text.get("context_length", 77))


def tokenizer_for_name(model_name: str, cache_dir: str | None = None, **kwargs: Any) -> Any:
    """The tokenizer of a dalip config, an open_clip config JSON file or an open_clip name.

    dalip configs and JSON files are read by dalip; architectures, ``hf-hub:`` and
    ``local-dir:`` names by ``open_clip.get_tokenizer`` (given ``cache_dir`` and ``kwargs``).
    A dalip export is not resolved here (see `dalip.models.export_loading.export_tokenizer`).
    """
    import open_clip

    if model_name in MODEL_CONFIGS:
        return MODEL_CONFIGS.create(model_name).tokenizer()
    if str(model_name).endswith(".json"):
        return tokenizer_from_config(read_model_config(model_name))
    return open_clip.get_tokenizer(model_name, cache_dir=cache_dir, **kwargs)
