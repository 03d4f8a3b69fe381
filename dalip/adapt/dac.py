"""The DAC-style few-shot adapter: an intra-modal image adapter and modulated class text embeddings.

Both parts act on cached features of a frozen model (METHOD.md section 6):

* `ResidualAdapter` (image side): ``f' = normalize(f + s * up(relu(down(f))))``, a
  bottleneck MLP whose output layer starts at zero, so training starts from the
  frozen features; trained with the supervised contrastive ``intra_modal`` loss
  over the support features (augmented views and feature noise give positives
  even at one shot) plus cross-entropy of the logits below.
* `TextModulation` (text side): ``w_c = normalize(t_c * (1 + g_c) + d_c)`` with a
  per-class scale ``g`` and shift ``d`` (both `(C, D)`, starting at zero and
  penalised toward it).

Logits: ``100 f' W^T``. Every part has a switch in `DACConfig` for ablations;
with both parts off the method is zero-shot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalip.adapt.base import LOGIT_SCALE, Classifier, FewShotMethod, text_logits
from dalip.adapt.sampling import SupportSet
from dalip.adapt.training import optimize, seeded
from dalip.losses import create_loss

__all__ = ["DACAdapter", "DACConfig", "ResidualAdapter", "TextModulation"]


class ResidualAdapter(nn.Module):
    """``(B, D) -> (B, D)`` unit vectors: ``normalize(x + scale * up(relu(down(x))))``; identity at init.

    Args:
        dim: D.
        reduction: bottleneck width ``D // reduction``.
        scale: the residual weight s.
    """

    def __init__(self, dim: int, reduction: int = 4, scale: float = 0.5) -> None:
        super().__init__()
        if reduction < 1 or dim // reduction < 1:
            raise ValueError(f"adapter reduction must be in [1, {dim}], got {reduction}")
        self.down = nn.Linear(dim, dim // reduction)
        self.up = nn.Linear(dim // reduction, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x + self.scale * self.up(F.relu(self.down(x))), dim=-1)


class TextModulation(nn.Module):
    """Per-class scale and shift of class text embeddings: ``(C, D) -> (C, D)`` unit vectors.

    ``w_c = normalize(t_c * (1 + g_c) + d_c)`` with ``g``, ``d`` `(C, D)` starting at 0.
    """

    def __init__(self, text: Tensor, scale: bool = True) -> None:
        super().__init__()
        self.register_buffer("text", text.detach().clone())
        self.shift = nn.Parameter(torch.zeros_like(text))
        self.gain = nn.Parameter(torch.zeros_like(text)) if scale else None

    def forward(self) -> Tensor:
        text = self.text * (1 + self.gain) if self.gain is not None else self.text
        return F.normalize(text + self.shift, dim=-1)

    def penalty(self) -> Tensor:
        """``mean_c (||d_c||^2 + ||g_c||^2)``: pulls the modulation back toward the frozen embeddings."""
        total = self.shift.square().sum()
        if self.gain is not None:
            total = total + self.gain.square().sum()
        return total / self.text.shape[0]


@dataclass(frozen=True)
class DACConfig:
    """Switches and settings of `DACAdapter`.

    Attributes:
        adapter: train the image adapter (off: frozen image features).
        text_modulation: train the per-class text modulation (off: frozen class embeddings).
        intra_weight: weight of the ``intra_modal`` (SupCon) loss on adapted features; 0 = off.
        ce_weight: weight of the classification cross-entropy; 0 = off.
        text_reg: weight of `TextModulation.penalty`.
        text_scale: learn the per-class scale g as well as the shift d.
        reduction: adapter bottleneck width ``D // reduction``.
        residual_scale: weight of the adapter's residual branch.
        temperature: SupCon temperature.
        feature_noise: std of Gaussian noise added to support features each step, as a
            share of their unit norm (``noise ~ N(0, (feature_noise^2 / D) I)``); 0 = off.
        use_views: train on the augmented views as well as the plain images.
        steps: full-batch AdamW steps (cosine decay).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    adapter: bool = True
    text_modulation: bool = True
    intra_weight: float = 1.0
    ce_weight: float = 1.0
    text_reg: float = 1.0
    text_scale: bool = True
    reduction: int = 4
    residual_scale: float = 0.5
    temperature: float = 0.1
    feature_noise: float = 0.1
    use_views: bool = True
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.intra_weight < 0 or self.ce_weight < 0 or self.text_reg < 0 or self.feature_noise < 0:
            raise ValueError("DACConfig: loss weights, text_reg and feature_noise must be >= 0")
        if self.text_modulation and self.ce_weight == 0:
            raise ValueError("DACConfig: text_modulation is trained by the classification loss; set ce_weight > 0")
        if self.intra_weight > 0 and not self.adapter:
            raise ValueError("DACConfig: the intra_modal loss trains the image adapter; set adapter=True "
                             "or intra_weight=0")
        if self.adapter and self.intra_weight == 0 and self.ce_weight == 0:
            raise ValueError("DACConfig: the adapter needs a loss (intra_weight or ce_weight > 0)")


class DACAdapter(FewShotMethod):
    """Image adapter (intra-modal + classification) and class-text modulation; see the module doc."""

    def __init__(self, config: DACConfig | None = None, name: str = "dac") -> None:
        self.config, self.name = config or DACConfig(), name
        self.intra_modal = create_loss("intra_modal", temperature=self.config.temperature, normalize=False)

    def build(self, support: SupportSet) -> tuple[ResidualAdapter | None, TextModulation | None]:
        """Fresh modules for ``support`` (call under `seeded`)."""
        c = self.config
        dim = support.text.shape[1]
        adapter = ResidualAdapter(dim, c.reduction, c.residual_scale) if c.adapter else None
        text = TextModulation(support.text, c.text_scale) if c.text_modulation else None
        return adapter, text

    def loss(
        self,
        adapter: ResidualAdapter | None,
        text: TextModulation | None,
        x: Tensor,
        y: Tensor,
        classes: Tensor,
    ) -> Tensor:
        """Training loss on a batch: ``ce * CE + intra * SupCon + text_reg * penalty``; x `(B, D)`, y `(B,)`."""
        c = self.config
        z = adapter(x) if adapter is not None else x
        w = text() if text is not None else classes
        total = c.ce_weight * F.cross_entropy(text_logits(z, w), y) if c.ce_weight else x.new_zeros(())
        if c.intra_weight:
            total = total + c.intra_weight * self.intra_modal(image_features=z, labels=y)
        if text is not None and c.text_reg:
            total = total + c.text_reg * text.penalty()
        return total

    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        c = self.config
        with seeded(seed) as generator:
            adapter, text = self.build(support)
            params = [p for m in (adapter, text) if m is not None for p in m.parameters()]
            if params:
                x, y = support.flat(c.use_views)

                def step_loss(step: int) -> Tensor:
                    noise = torch.randn(x.shape, generator=generator) * (c.feature_noise / x.shape[1] ** 0.5)
                    inputs = F.normalize(x + noise, dim=-1) if c.feature_noise else x
                    return self.loss(adapter, text, inputs, y, support.text)

                optimize(params, step_loss, c.steps, c.lr, c.weight_decay)
        with torch.no_grad():
            classes = text() if text is not None else support.text
        frozen_adapter = adapter.eval().requires_grad_(False) if adapter is not None else None

        def classify(features: Tensor) -> Tensor:
            with torch.no_grad():
                z = frozen_adapter(features) if frozen_adapter is not None else features
                return text_logits(z, classes, LOGIT_SCALE)

        return classify
