"""The interface every few-shot method implements, and the zero-shot logits they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor

from dalip.adapt.sampling import SupportSet

__all__ = ["LOGIT_SCALE", "Classifier", "FewShotMethod", "text_logits"]

#: CLIP's logit scale, used by every method (Tip-Adapter's ``100 f W^T``)
LOGIT_SCALE = 100.0

Classifier = Callable[[Tensor], Tensor]
"""Maps test features `(N, D)` to class logits `(N, C)`."""


def text_logits(features: Tensor, text: Tensor, scale: float = LOGIT_SCALE) -> Tensor:
    """``scale * f W^T``: features `(N, D)`, class text embeddings `(C, D)` -> `(N, C)`."""
    return scale * features @ text.T


class FewShotMethod(ABC):
    """A few-shot method: ``fit(support, seed)`` returns a `Classifier` on frozen features.

    Methods never see the model, only cached features, so the frozen model cannot change.
    """

    #: short name for tables
    name: str = "method"

    @abstractmethod
    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        """Train on ``support`` (deterministic given ``seed``) and return the classifier."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
