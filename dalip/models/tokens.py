"""Token extraction: run one tower of an open_clip model once and return its
token set, padding mask and guide token together with the tower's own output.

Supported tower kinds (everything through open_clip's / timm's public APIs):

| tower | tokens (B, N, C) | mask | guide (B, C) |
|---|---|---|---|
| open_clip ``VisionTransformer`` | patch tokens after ``ln_post`` | none | [cls] after ``ln_post`` |
| open_clip ``TimmModel``, CNN trunk | final feature map, flattened | none | token mean |
| open_clip ``TimmModel``, ViT trunk | tokens after the prefix tokens | none | [cls] (else token mean) |
| open_clip text transformer | tokens after ``ln_final`` | up to and including EOT | the EOT token |
| open_clip ``HFTextEncoder`` | ``last_hidden_state`` | attention mask | the HF pooler's token |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["TowerOutput", "extract_image_tokens", "extract_text_tokens", "image_tower_kind", "text_tower_kind"]


@dataclass
class TowerOutput:
    """One tower's pass.

    Attributes:
        tokens: ``(B, N, C)`` token features in the tower's width ``C``.
        mask: ``(B, N)`` bool, True = real token, or None (no padding).
        guide: ``(B, C)`` the [cls] / EOT token (or a stand-in).
        pooled: ``(B, E)`` the tower's own output embedding (unnormalised).
    """

    tokens: Tensor
    mask: Tensor | None
    guide: Tensor
    pooled: Tensor


def image_tower_kind(visual: nn.Module) -> str:
    """``"vit"`` or ``"timm"``; raises ``ValueError`` for an unsupported tower."""
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, TimmModel):
        return "timm"
    raise ValueError(
        f"unsupported image tower {type(visual).__name__}: dalip extracts tokens from open_clip's "
        "VisionTransformer and TimmModel (timm CNN or ViT trunks)"
    )


def text_tower_kind(model: nn.Module) -> str:
    """``"builtin"`` (CLIP's own), ``"transformer"`` (CustomTextCLIP) or ``"hf"``."""
    from open_clip.hf_model import HFTextEncoder
    from open_clip.transformer import TextTransformer

    text = getattr(model, "text", None)
    if text is None and hasattr(model, "token_embedding"):
        return "builtin"
    if isinstance(text, TextTransformer):
        return "transformer"
    if isinstance(text, HFTextEncoder):
        return "hf"
    raise ValueError(
        f"unsupported text tower {type(text).__name__}: dalip extracts tokens from open_clip's "
        "text transformer and HFTextEncoder"
    )


def extract_image_tokens(visual: nn.Module, images: Tensor, kind: str | None = None) -> TowerOutput:
    """Tokens of an open_clip image tower; ``images (B, 3, H, W)``."""
    kind = kind or image_tower_kind(visual)
    if kind == "vit":
        out = visual.forward_intermediates(
            images, indices=1, normalize_intermediates=True, output_fmt="NLC", output_extra_tokens=True
        )
        tokens = out["image_intermediates"][-1]  # b n c, after ln_post
        guide = out["image_intermediates_prefix"][-1][:, 0]  # the [cls] token
        return TowerOutput(tokens, None, guide, out["image_features"])
    trunk = visual.trunk
    features = trunk.forward_features(images)
    pooled = visual.head(trunk.forward_head(features))  # exactly TimmModel.forward, trunk run once
    if features.ndim == 4:  # CNN: b c h w -> b (h w) c
        tokens = features.flatten(2).transpose(1, 2)
        return TowerOutput(tokens, None, tokens.mean(dim=1), pooled)
    prefix = getattr(trunk, "num_prefix_tokens", 0)
    tokens = features[:, prefix:]
    has_cls = getattr(trunk, "cls_token", None) is not None
    guide = features[:, 0] if has_cls else tokens.mean(dim=1)
    return TowerOutput(tokens, None, guide, pooled)


def _eot_positions(text: Tensor, pool_type: str, eos_id: int | None) -> Tensor:
    """Index of the token open_clip pools from, per row (the EOT token)."""
    if pool_type == "argmax":  # CLIP's tokenizer: EOT has the largest id
        return text.argmax(dim=-1)
    if pool_type == "eos":
        return (text == eos_id).int().argmax(dim=-1)
    if pool_type == "last":
        return torch.full(text.shape[:1], text.shape[1] - 1, device=text.device)
    if pool_type == "first":
        return torch.zeros(text.shape[:1], dtype=torch.long, device=text.device)
    raise ValueError(f"unsupported text pool type {pool_type!r}")


def extract_text_tokens(model: nn.Module, text: Tensor, kind: str | None = None) -> TowerOutput:
    """Tokens of an open_clip model's text tower; ``text (B, L)`` token ids."""
    kind = kind or text_tower_kind(model)
    if kind == "hf":
        hf = model.text
        attention = (text != hf.config.pad_token_id).long()
        out = hf.transformer(input_ids=text, attention_mask=attention)
        guide = hf.pooler(out, attention)
        return TowerOutput(out.last_hidden_state, attention.bool(), guide, hf.proj(guide))
    if kind == "builtin":
        out = model.forward_intermediates(text=text, text_indices=1, normalize_intermediates=True, normalize=False)
        pool_type, eos_id = model.text_pool_type, getattr(model, "text_eos_id", None)
    else:
        tower = model.text
        if tower.cls_emb is not None:
            raise ValueError("text towers with an appended class token (CoCa-style) are not supported yet")
        out = tower.forward_intermediates(text, indices=1, normalize_intermediates=True, output_fmt="NLC")
        pool_type, eos_id = tower.pool_type, getattr(tower, "eos_id", None)
    tokens = out["text_intermediates"][-1]  # b l c, after ln_final
    eot = _eot_positions(text, pool_type, eos_id)
    positions = torch.arange(text.shape[1], device=text.device)
    mask = positions[None, :] <= eot[:, None]  # SOT ... EOT; padding after EOT is masked
    guide = tokens[torch.arange(text.shape[0], device=text.device), eot]
    return TowerOutput(tokens, mask, guide, out["text_features"])
