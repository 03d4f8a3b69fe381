"""The DALIP wrapper: any open_clip model plus first- and second-order heads."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalip.models.head_spec import HeadSpec
from dalip.models.heads import PooledHead
from dalip.models.tokens import (
    TowerOutput,
    extract_image_tokens,
    extract_text_tokens,
    image_tower_kind,
    text_tower_kind,
)

__all__ = ["DALIPModel", "Embedding", "fuse_orders"]

Embedding = Literal["combined", "first", "second"]


def fuse_orders(first: Tensor, second: Tensor, alpha: float) -> Tensor:
    """``[sqrt(alpha) * first, sqrt(1 - alpha) * second]`` ``(B, 2E)`` of unit ``(B, E)`` embeddings.

    The dot product of two such vectors is ``alpha * first-sim + (1 - alpha) * second-sim``
    and the vectors are unit norm: the combined embedding of `DALIPModel`.
    """
    return torch.cat([math.sqrt(alpha) * first, math.sqrt(1 - alpha) * second], dim=-1)


def _token_width(clip: nn.Module, tower: str, kind: str) -> int:
    if tower == "image":
        visual = clip.visual
        return visual.transformer.width if kind == "vit" else visual.trunk.num_features
    if kind == "builtin":
        return clip.transformer.width
    if kind == "transformer":
        return clip.text.transformer.width
    from open_clip.hf_configs import arch_dict

    config = clip.text.config
    return getattr(config, arch_dict[config.model_type]["config_names"]["width"])


class DALIPModel(nn.Module):
    """An open_clip model whose towers also feed first- and second-order heads.

    Args:
        clip: any open_clip ``CLIP`` / ``CustomTextCLIP`` model.
        embed_dim: the shared embedding width E (the towers' output width).
        first_order: ``"tower"`` (the tower's own pooled output, as in CLIP) or a
            pooler name (``"mean"``, ``"cls"``) applied to the tokens; one value or
            ``{"image": ..., "text": ...}``.
        second_order: a pooler name (``"mbdc"``, ``"cov"``, ``"bdc"`` ...) or
            None for plain CLIP; one value or per tower.
        second_options: pooler options, shared or ``{"image": {...}, "text": {...}}``.
        alpha: weight of the first-order similarity in the combined embedding
            returned by `encode_image` / `encode_text`.
        separate_second_scale: a second learnable logit scale for the second-order
            pair (output key ``second_logit_scale``).
        alpha_learnable: learn alpha with the loss, as ``sigmoid(alpha_logit)``
            initialised at ``alpha`` (output key ``alpha``, which the
            ``distribution`` loss then uses as its first-order weight).

    The head options are defined and checked by `HeadSpec`.

    Raises:
        ValueError: an invalid head option (see `HeadSpec.check`).
        UnknownComponentError: an unknown pooler.

    ``model(images, texts)`` returns a dict with stable keys ``image_features``,
    ``text_features`` (first order, L2-normalised, ``(B, E)``), ``image_second``,
    ``text_second`` (second order, L2-normalised ``(B, E)``, or None),
    ``logit_scale`` (exp'd), and ``logit_bias`` / ``second_logit_scale`` / ``alpha``
    (the learnable fusion weight, a ``()`` tensor in (0, 1)) when used.
    """

    def __init__(
        self,
        clip: nn.Module,
        embed_dim: int,
        first_order: str | Mapping[str, str] = "tower",
        second_order: str | None | Mapping[str, str | None] = "mbdc",
        second_options: Mapping[str, Any] | None = None,
        alpha: float = 0.5,
        separate_second_scale: bool = False,
        alpha_learnable: bool = False,
    ) -> None:
        super().__init__()
        head_spec = HeadSpec(first_order, second_order, second_options or {}, alpha, separate_second_scale,
                             alpha_learnable)
        head_spec.check()
        tower_heads = head_spec.per_tower()
        self.clip, self.embed_dim, self._alpha = clip, embed_dim, alpha
        self.image_kind, self.text_kind = image_tower_kind(clip.visual), text_tower_kind(clip)
        kinds = {"image": self.image_kind, "text": self.text_kind}
        self.first_heads = nn.ModuleDict()
        self.second_heads = nn.ModuleDict()
        for tower, heads in tower_heads.items():
            width = _token_width(clip, tower, kinds[tower])
            if heads.first_order not in ("tower", None):
                self.first_heads[tower] = PooledHead(heads.first_order, width, embed_dim)
            if heads.second_order is not None:
                self.second_heads[tower] = PooledHead(heads.second_order, width, embed_dim, heads.second_options)
        self.second_logit_scale = (
            nn.Parameter(torch.tensor(math.log(1 / 0.07))) if separate_second_scale and self.second_heads else None
        )
        self.alpha_logit = nn.Parameter(torch.logit(torch.tensor(alpha))) if alpha_learnable else None
        self.first_order = {t: heads.first_order for t, heads in tower_heads.items()}
        self.second_order = {t: heads.second_order for t, heads in tower_heads.items()}

    @property
    def alpha(self) -> float:
        """The first-order weight of the combined embedding (the learned value when ``alpha_learnable``)."""
        return self._alpha if self.alpha_logit is None else torch.sigmoid(self.alpha_logit.detach()).item()

    @alpha.setter
    def alpha(self, value: float) -> None:
        """Set the weight, e.g. one chosen off a fusion curve (a learnable alpha's logit is set to match)."""
        if not 0 <= value <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {value}")
        if self.alpha_logit is None:
            self._alpha = float(value)
        else:
            with torch.no_grad():
                self.alpha_logit.fill_(torch.logit(torch.tensor(float(value), dtype=torch.float64)).item())

    @property
    def has_second_order(self) -> bool:
        """True when the towers have second-order heads."""
        return len(self.second_heads) > 0

    # ------------------------------------------------------------------ towers
    @staticmethod
    def _check_input(tower: str, x: Tensor) -> None:
        if tower == "image" and x.ndim != 4:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
        if tower == "text" and (x.ndim != 2 or x.is_floating_point()):
            raise ValueError(f"texts must be integer token ids of shape (B, L), got {x.dtype} {tuple(x.shape)}")

    def image_tower(self, images: Tensor) -> TowerOutput:
        """Tokens, guide and own output of the image tower for ``images (B, 3, H, W)``."""
        self._check_input("image", images)
        weight = next(self.clip.visual.parameters(), None)  # bf16 weights (pure_bf16) read bf16 pixels
        if weight is not None and images.is_floating_point() and images.dtype != weight.dtype:
            images = images.to(weight.dtype)
        return extract_image_tokens(self.clip.visual, images, self.image_kind)

    def text_tower(self, texts: Tensor) -> TowerOutput:
        """Tokens, mask, guide and own output of the text tower for token ids ``(B, L)``."""
        self._check_input("text", texts)
        return extract_text_tokens(self.clip, texts, self.text_kind)

    def reads_tokens(self, tower: str) -> bool:
        """Whether a head reads this tower's tokens (else only its own pooled output is used)."""
        return tower in self.first_heads or tower in self.second_heads

    def tower(self, tower: str, x: Tensor) -> TowerOutput:
        """One tower's pass: tokens, mask, guide and pooled output, or only ``pooled`` when no head reads tokens.

        The output is everything the heads need, so it can be computed once and
        reused (see `heads` and `dalip.train.frozen_cache`).
        """
        if not self.reads_tokens(tower):
            # no head reads this tower's tokens: its plain forward, exactly open_clip's computation
            self._check_input(tower, x)
            pooled = self.clip.encode_image(x) if tower == "image" else self.clip.encode_text(x)
            return TowerOutput(tokens=None, mask=None, guide=None, pooled=pooled)  # type: ignore[arg-type]
        return self.image_tower(x) if tower == "image" else self.text_tower(x)

    def heads(self, tower: str, out: TowerOutput) -> tuple[Tensor, Tensor | None]:
        """Unit first- and second-order embeddings ``(B, E)`` (None: no second-order head) of a tower output."""
        first = self.first_heads[tower](out) if tower in self.first_heads else out.pooled
        second = self.second_heads[tower](out) if tower in self.second_heads else None
        return F.normalize(first, dim=-1), None if second is None else F.normalize(second, dim=-1)

    def embed_orders(self, tower: str, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Unit first- and second-order embeddings ``(B, E)`` (None: no second-order head) of
        ``"image"`` ``(B, 3, H, W)`` or ``"text"`` ``(B, L)`` input: one pass of the tower."""
        return self.heads(tower, self.tower(tower, x))

    def combine(self, first: Tensor, second: Tensor | None, embedding: Embedding) -> Tensor:
        """The ``embedding`` (``"first"``, ``"second"`` or ``"combined"``) of `embed_orders`' output."""
        if embedding == "first" or second is None:
            if embedding == "second":
                raise ValueError("this model has no second-order head")
            return first
        if embedding == "second":
            return second
        if embedding != "combined":
            raise ValueError(f"embedding must be 'combined', 'first' or 'second', got {embedding!r}")
        return fuse_orders(first, second, self.alpha)

    # --------------------------------------------------------------- public API
    def encode_image(self, images: Tensor, normalize: bool = True, embedding: Embedding = "combined") -> Tensor:
        """ONE embedding tensor per image, so standard zero-shot / retrieval code works.

        ``"combined"`` concatenates the normalised first- and second-order embeddings
        scaled by ``sqrt(alpha)`` and ``sqrt(1 - alpha)`` (unit norm; its dot product
        is the mixed similarity). ``normalize`` is accepted for open_clip
        compatibility; the outputs are always unit vectors.
        """
        return self.combine(*self.embed_orders("image", images), embedding)

    def encode_text(self, texts: Tensor, normalize: bool = True, embedding: Embedding = "combined") -> Tensor:
        """ONE embedding tensor per text; see `encode_image`."""
        return self.combine(*self.embed_orders("text", texts), embedding)

    def forward(self, images: Tensor, texts: Tensor) -> dict[str, Tensor | None]:
        """Both towers and all heads; returns the stable output dict (see class docs)."""
        if images.shape[0] != texts.shape[0]:
            raise ValueError(f"image and text batch sizes differ: {images.shape[0]} images, {texts.shape[0]} texts")
        return self.forward_towers(self.tower("image", images), self.tower("text", texts))

    def forward_towers(self, image_out: TowerOutput, text_out: TowerOutput) -> dict[str, Tensor | None]:
        """The output dict of `forward` from already computed tower outputs (e.g. cached frozen towers)."""
        image_first, image_second = self.heads("image", image_out)
        text_first, text_second = self.heads("text", text_out)
        out: dict[str, Tensor | None] = {
            "image_features": image_first,
            "text_features": text_first,
            "image_second": image_second,
            "text_second": text_second,
            "logit_scale": self.clip.logit_scale.exp(),
        }
        if getattr(self.clip, "logit_bias", None) is not None:
            out["logit_bias"] = self.clip.logit_bias
        if self.second_logit_scale is not None:
            out["second_logit_scale"] = self.second_logit_scale.exp()
        if self.alpha_logit is not None:
            out["alpha"] = torch.sigmoid(self.alpha_logit)
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new heads, the second logit scale and the learnable alpha (a separate learning rate)."""
        params = [*self.first_heads.parameters(), *self.second_heads.parameters()]
        return params + [p for p in (self.second_logit_scale, self.alpha_logit) if p is not None]
