"""Distribution alignment: DALIP's two-statistic loss, CORAL, Cauchy-Schwarz, and composition.

Composition has one design, used by ``combined`` and by ``distribution``'s ``aux``:
a mapping from a term name to a *term spec*, which is either a weight or a dict:

```python
{"coral": 1.0}                                            # registered "coral", defaults
{"coral": {"weight": 0.5, "order": "second"}}          # "weight" + the loss's options
{"cs2": {"loss": "cauchy_schwarz", "weight": 0.1, "sigma": 0.5}}  # "loss": registry name
{"mine": {"loss": MyLoss(), "weight": 2.0}}               # "loss": a built AlignmentLoss
```

``weight`` defaults to 1 and must be finite and >= 0; terms of weight 0 are not
built (nor computed, so their inputs need not exist). ``loss`` defaults to the
term name. The parts dict has one entry per term, named by the term; a term
that has several parts itself contributes ``"term.part"`` entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dalip.losses.base import AlignmentLoss, Order, Outputs, PairLoss
from dalip.losses.factory import create_loss, register_loss
from dalip.pooling.functional import autocast_off

__all__ = [
    "CauchySchwarzLoss", "CombinedLoss", "CoralLoss", "DistributionLoss", "TermSpec",
    "batch_covariance", "build_term", "log_mean_gaussian_kernel",
]

TermSpec = float | Mapping[str, Any]


def build_term(name: str, spec: TermSpec) -> tuple[AlignmentLoss, float]:
    """The loss and weight of one term spec (see the module docstring)."""
    if not name or "." in name:
        raise ValueError(f"term names must be non-empty and contain no '.', got {name!r}")
    if isinstance(spec, Mapping):
        options = dict(spec)
    elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
        options = {"weight": spec}
    else:
        raise TypeError(f"term {name!r}: expected a weight or a dict of options, got {type(spec).__name__}")
    weight = float(options.pop("weight", 1.0))
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"term {name!r}: weight must be finite and >= 0, got {weight}")
    loss = options.pop("loss", name)
    if isinstance(loss, str):
        loss = create_loss(loss, **options)
    elif options:
        raise ValueError(f"term {name!r}: options {sorted(options)} given with an already built loss")
    if not isinstance(loss, AlignmentLoss):
        raise TypeError(f"term {name!r}: {type(loss).__name__} is not an AlignmentLoss")
    return loss, weight


def _flatten(name: str, inner: Mapping[str, Any]) -> dict[str, Any]:
    """A term's parts (or weights) under the term's name: ``name`` alone or ``name.part``."""
    if len(inner) == 1:
        return {name: next(iter(inner.values()))}
    return {f"{name}.{part}": value for part, value in inner.items()}


@register_loss("combined")
class CombinedLoss(AlignmentLoss):
    """A weighted sum of losses: ``terms={"clip": 1.0, "coral": {"weight": 0.5}}``.

    Args:
        terms: term name -> weight or options dict (see the module docstring).
    """

    def __init__(self, terms: Mapping[str, TermSpec]) -> None:
        super().__init__()
        built = {name: build_term(name, spec) for name, spec in terms.items()}
        built = {name: lw for name, lw in built.items() if lw[1] != 0}
        if not built:
            raise ValueError(f"{type(self).__name__}: no term with a non-zero weight in {dict(terms)}")
        self.terms = nn.ModuleDict({name: loss for name, (loss, _) in built.items()})
        self.term_weights = {name: weight for name, (_, weight) in built.items()}

    @property
    def weights(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, loss in self.terms.items():
            inner = {part: self.term_weights[name] * w for part, w in loss.weights.items()}
            out.update(_flatten(name, inner))
        return out

    def parts(self, outputs: Outputs) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, loss in self.terms.items():
            out.update(_flatten(name, loss.parts(outputs)))
        return out

    def extra_repr(self) -> str:
        return f"term_weights={self.term_weights}"


@register_loss("distribution")
class DistributionLoss(CombinedLoss):
    """DALIP: ``alpha * base(first pair) + (1 - alpha) * base(second pair)`` plus weighted aux terms.

    Parts: ``"first"``, ``"second"`` (each the unweighted base loss) and one per
    aux term. With ``alpha=1`` the second pair is neither built nor read, and the
    total is exactly ``base`` on the first pair.

    Args:
        alpha: weight of the first-order pair, in [0, 1] (reference: 0.5).
        base: registered pair loss applied to both pairs (``"clip"``, ``"siglip"``, ...).
        separate_scales: the second pair uses ``second_logit_scale`` / ``second_logit_bias``.
        base_options: extra options for both base losses (``local_loss``, ``world_size``, ...).
        aux: auxiliary terms, name -> weight or options dict (``{"coral": 1.0}``).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        base: str = "clip",
        separate_scales: bool = False,
        base_options: Mapping[str, Any] | None = None,
        aux: Mapping[str, TermSpec] | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distribution: alpha must be in [0, 1], got {alpha}")
        options = dict(base_options or {})
        reserved = {"loss", "weight", "order", "separate_scales"} & options.keys()
        if reserved:
            raise ValueError(f"distribution: base_options may not set {sorted(reserved)}; they are set per pair")
        second = {"separate_scales": True} if separate_scales else {}  # only pair losses with scales take it
        terms: dict[str, TermSpec] = {
            "first": {"loss": base, "weight": alpha, "order": "first", **options},
            "second": {"loss": base, "weight": 1.0 - alpha, "order": "second", **second, **options},
        }
        aux = dict(aux or {})
        if terms.keys() & aux.keys():
            raise ValueError(f"distribution: aux terms may not be named {sorted(terms.keys() & aux.keys())}")
        super().__init__({**terms, **aux})
        self.alpha, self.base = alpha, base

    def weights_for(self, outputs: Outputs) -> dict[str, Tensor | float]:
        """`weights`, with a model's learnable ``alpha`` output (a ``()`` tensor, with its graph)
        as the first-order weight, so that the weight itself is trained."""
        alpha = outputs.get("alpha")
        if alpha is None:
            return self.weights
        if "first" not in self.terms or "second" not in self.terms:
            raise ValueError("distribution: a learnable alpha needs both pairs (built with 0 < alpha < 1)")
        return {**self.weights, "first": alpha, "second": 1 - alpha}


def batch_covariance(x: Tensor) -> Tensor:
    """Unbiased covariance of the columns of x (b, d) over the batch: (d, d), as ``torch.cov(x.T)``."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


@register_loss("coral")
class CoralLoss(PairLoss):
    """CORAL: ``|| C_img - C_txt ||_F^2 / (4 d^2)`` between batch feature covariances (d, d).

    Computed in float32 on the local batch (no gathering across ranks).

    Args:
        order: the order of the statistic whose pair is aligned, ``"first"`` or ``"second"``.
    """

    part_name = "coral"

    def value(self, outputs: Outputs) -> Tensor:
        img, txt = self.pair(outputs)  # (b, d) each
        if img.shape[0] < 2:
            raise ValueError(f"coral: a covariance needs at least 2 samples, got a batch of {img.shape[0]}")
        d = img.shape[1]
        with autocast_off(img.device.type):
            diff = batch_covariance(img.float()) - batch_covariance(txt.float())  # (d, d)
            return diff.square().sum() / (4 * d * d)


def log_mean_gaussian_kernel(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """``log mean_ij exp(-|x_i - y_j|^2 / (2 sigma^2))`` for x (n, d), y (m, d), via logsumexp."""
    sq_dist = x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2 * x @ y.T  # (n, m)
    # clamp the cancellation error; squared distances (not cdist) keep the gradient finite at 0
    log_k = -sq_dist.clamp_min(0) / (2 * sigma**2)
    return torch.logsumexp(log_k.flatten(), dim=0) - math.log(log_k.numel())


@register_loss("cauchy_schwarz")
class CauchySchwarzLoss(PairLoss):
    """Cauchy-Schwarz divergence ``log mean K_xx + log mean K_yy - 2 log mean K_xy``, Gaussian K.

    Non-negative (the Gaussian kernel is positive definite) and zero for identical
    sets. Computed in float32 on the local batch (no gathering across ranks).

    Args:
        order: the order of the statistic whose pair is aligned, ``"first"`` or ``"second"``.
        sigma: kernel bandwidth (> 0); L2-normalised features are at most 2 apart.
    """

    part_name = "cauchy_schwarz"

    def __init__(self, order: Order = "first", sigma: float = 1.0) -> None:
        super().__init__(order)
        if not sigma > 0:
            raise ValueError(f"cauchy_schwarz: sigma must be > 0, got {sigma}")
        self.sigma = sigma

    def value(self, outputs: Outputs) -> Tensor:
        img, txt = self.pair(outputs)  # (b, d) each
        with autocast_off(img.device.type):
            x, y = img.float(), txt.float()
            xx, yy, xy = (log_mean_gaussian_kernel(a, b, self.sigma) for a, b in ((x, x), (y, y), (x, y)))
            return xx + yy - 2 * xy

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sigma={self.sigma}"
