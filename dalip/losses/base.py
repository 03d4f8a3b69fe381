"""The interface shared by every alignment loss.

A loss is an ``nn.Module`` called on the model's output dict; keys it does not
use are ignored:

```python
loss(**outputs)                    -> total: () scalar
loss(**outputs, output_dict=True)  -> (total, parts)

image_features:      (b, d1)  first-order embeddings, L2-normalised by the model
text_features:       (b, d1)
image_second:        (b, d2) or None  second-order embeddings (None: no second-order head)
text_second:         (b, d2) or None
logit_scale:         ()  already exp()'d, as open_clip's model returns it
logit_bias:          ()  optional (siglip)
second_logit_scale:  ()  optional, for the second pair with ``separate_scales=True``
second_logit_bias:   ()  optional
labels:              (b,) optional class labels (intra_modal)
```

Parts: ``parts`` maps a name to the *unweighted* value of one term, detached (for
logging); ``loss.weights`` holds the weight of each term, so that
``total == sum(loss.weights[k] * parts[k])`` and only ``total`` carries the graph.
A single loss has one part named after it (``{"clip": ...}``); composites list
every term (see `CombinedLoss`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

__all__ = ["FEATURE_KEYS", "AlignmentLoss", "Order", "PairLoss", "feature_pair", "required_output", "scalar",
           "weighted_sum"]

Outputs = Mapping[str, Any]
Order = Literal["first", "second"]
"""The order of a statistic: ``"first"`` (cls / mean embeddings) or ``"second"`` (covariance-type)."""

# which model-output keys hold the (image, text) pair of each statistic
FEATURE_KEYS: dict[str, tuple[str, str]] = {
    "first": ("image_features", "text_features"),
    "second": ("image_second", "text_second"),
}


def required_output(outputs: Outputs, key: str, owner: str, why: str = "") -> Any:
    """``outputs[key]``, or a ValueError naming the missing key (None counts as missing)."""
    value = outputs.get(key)
    if value is None:
        raise ValueError(f"{owner}: the model output has no {key!r}{why}; got keys {sorted(outputs)}")
    return value


def scalar(outputs: Outputs, key: str, owner: str, why: str = "") -> Tensor | float:
    """A required scalar such as ``logit_scale``: a number or a one-element tensor."""
    value = required_output(outputs, key, owner, why)
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(f"{owner}: {key} must be a scalar, got shape {tuple(value.shape)}")
    return value


def feature_pair(outputs: Outputs, order: Order, owner: str) -> tuple[Tensor, Tensor]:
    """The (image, text) embeddings of one statistic, checked to be (b, d) with equal b and d."""
    keys = FEATURE_KEYS[order]
    why = " (order='second' needs a model with a second-order head)" if order == "second" else ""
    img, txt = (required_output(outputs, key, owner, why) for key in keys)
    for key, x in zip(keys, (img, txt)):
        if not isinstance(x, Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{owner}: {key} must have shape (B, D), got {shape}")
    if img.shape[0] != txt.shape[0]:
        raise ValueError(
            f"{owner}: mismatched batch sizes: {keys[0]} has {img.shape[0]} rows, {keys[1]} has {txt.shape[0]}"
        )
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"{owner}: mismatched feature dims: {keys[0]} has {img.shape[1]}, {keys[1]} has {txt.shape[1]}"
        )
    if img.shape[0] == 0:
        raise ValueError(f"{owner}: empty batch")
    return img, txt


def weighted_sum(parts: Mapping[str, Tensor], weights: Mapping[str, Tensor | float]) -> Tensor:
    """``sum_k weights[k] * parts[k]`` over the keys of ``parts``, in order."""
    terms = [weights[key] * value for key, value in parts.items()]
    return sum(terms[1:], terms[0])


class AlignmentLoss(nn.Module):
    """Base class: subclasses implement `value` (one term) or `parts` (several).

    ``part_name`` names the single part of a one-term loss (its registry name).
    """

    part_name: ClassVar[str] = "loss"

    @property
    def weights(self) -> dict[str, float]:
        """Weight of each part in the total; its keys are the keys of `parts`."""
        return {self.part_name: 1.0}

    def weights_for(self, outputs: Outputs) -> Mapping[str, Tensor | float]:
        """The weights of this call's parts: `weights` (a loss may read them from ``outputs``)."""
        return self.weights

    def value(self, outputs: Outputs) -> Tensor:
        """The loss of a one-term loss: () scalar with the graph."""
        raise NotImplementedError(f"{type(self).__name__} must implement value() or parts()")

    def parts(self, outputs: Outputs) -> dict[str, Tensor]:
        """Unweighted value of every term, with the graph (composites collect these)."""
        return {self.part_name: self.value(outputs)}

    def forward(
        self, *, output_dict: bool = False, **outputs: Any
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        parts = self.parts(outputs)
        total = weighted_sum(parts, self.weights_for(outputs))
        if output_dict:
            return total, {key: value.detach() for key, value in parts.items()}
        return total


class PairLoss(AlignmentLoss):
    """A loss between the image and text embeddings of one statistic.

    Args:
        order: the order of the statistic: ``"first"`` reads ``image_features`` /
            ``text_features``, ``"second"`` reads ``image_second`` / ``text_second``.
    """

    def __init__(self, order: Order = "first") -> None:
        super().__init__()
        if order not in FEATURE_KEYS:
            raise ValueError(f"{self.part_name}: order must be one of {list(FEATURE_KEYS)}, got {order!r}")
        self.order = order

    def pair(self, outputs: Outputs) -> tuple[Tensor, Tensor]:
        """(image (b, d), text (b, d)) of the configured statistic."""
        return feature_pair(outputs, self.order, self.part_name)

    def extra_repr(self) -> str:
        return f"order={self.order!r}"

