"""Baselines on frozen features: zero-shot, a linear probe, Tip-Adapter and Tip-Adapter-F.

Tip-Adapter (Zhang et al., 2022), with ``K`` the normalised support features
(averaged over augmented views) and ``L`` their one-hot labels::

    logits = 100 f W_text^T + alpha * exp(-beta * (1 - f K^T)) L

Tip-Adapter-F trains ``K`` (initialised from the cache) with cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalip.adapt.base import Classifier, FewShotMethod, text_logits
from dalip.adapt.sampling import SupportSet
from dalip.adapt.training import optimize, seeded

__all__ = ["ALPHAS", "BETAS", "LinearProbe", "TipAdapter", "TipAdapterF", "ZeroShot", "fit_logistic", "leave_one_out_accuracy", "tip_logits"]


class ZeroShot(FewShotMethod):
    """The frozen model's own classifier: ``100 f W_text^T``; ignores the shots."""

    name = "zero-shot"

    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        return lambda features: text_logits(features, support.text)


# ------------------------------------------------------------------ linear probe
def fit_logistic(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float, max_iter: int = 100
) -> nn.Linear:
    """Multinomial logistic regression ``(N, D) -> (N, C)`` by full-batch L-BFGS from zero weights.

    Minimises ``mean CE + weight_decay * ||W||^2`` (the bias is not penalised); convex, so
    the result does not depend on a seed.
    """
    linear = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(linear(features), labels) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return linear.requires_grad_(False)


class LinearProbe(FewShotMethod):
    """Logistic regression on the frozen (view-augmented) support features.

    Args:
        weight_decays: candidates for the L2 weight; with at least 2 shots in every
            class, chosen by 2-fold cross-validation on the support set (folds split
            by image, so views of one image stay together), else `default_decay`.
        default_decay: the weight for 1-shot sets (and for a single candidate).
        use_views: train on the augmented views as well as the plain images.
    """

    name = "linear-probe"

    def __init__(
        self,
        weight_decays: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
        default_decay: float = 1e-3,
        use_views: bool = True,
    ) -> None:
        if not weight_decays:
            raise ValueError("linear probe: no weight_decays to choose from")
        self.weight_decays, self.default_decay, self.use_views = tuple(weight_decays), default_decay, use_views

    def choose_decay(self, support: SupportSet) -> float:
        """The candidate with the best 2-fold accuracy (ties: lower held-out loss); see the class doc."""
        counts = torch.bincount(support.labels, minlength=support.num_classes)
        if len(self.weight_decays) == 1 or counts.min() < 2:
            return self.default_decay if len(self.weight_decays) > 1 else self.weight_decays[0]
        # the i-th shot of each class goes to fold i % 2
        rank = torch.zeros_like(support.labels)
        for c in range(support.num_classes):
            members = torch.nonzero(support.labels == c).flatten()
            rank[members] = torch.arange(len(members))
        fold = rank % 2
        scores = []
        for decay in self.weight_decays:
            accuracy = loss = 0.0
            for k in (0, 1):
                train = SupportSet(support.views[:, fold != k], support.labels[fold != k], support.text)
                x, y = train.flat(self.use_views)
                linear = fit_logistic(x, y, support.num_classes, decay)
                held_out = linear(support.features[fold == k])
                accuracy += (held_out.argmax(1) == support.labels[fold == k]).float().mean().item()
                loss += F.cross_entropy(held_out, support.labels[fold == k]).item()
            scores.append((accuracy, -loss))
        return self.weight_decays[max(range(len(scores)), key=scores.__getitem__)]

    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        x, y = support.flat(self.use_views)
        return fit_logistic(x, y, support.num_classes, self.choose_decay(support))


# ------------------------------------------------------------------ Tip-Adapter
def tip_logits(
    features: Tensor, text: Tensor, keys: Tensor, values: Tensor, alpha: float, beta: float
) -> Tensor:
    """``100 f W^T + alpha * exp(-beta (1 - f K^T)) L``.

    Args:
        features: `(N, D)` test features; text: `(C, D)`; keys: `(S, D)`; values: `(S, C)` one-hot.
    """
    affinity = torch.exp(-beta * (1 - features @ keys.T))  # (N, S)
    return text_logits(features, text) + alpha * affinity @ values


def cache_keys(support: SupportSet) -> Tensor:
    """`(S, D)`: each support image's features averaged over its views, renormalised."""
    return F.normalize(support.views.mean(dim=0), dim=-1)


#: the alpha / beta grid of `TipAdapter.search` (default pair first: it wins ties)
ALPHAS = (1.0, 0.5, 2.0, 5.0, 10.0, 20.0, 50.0)
BETAS = (5.5, 1.0, 3.0, 8.0)


def leave_one_out_accuracy(support: SupportSet, keys: Tensor, alpha: float, beta: float) -> float:
    """Accuracy of each plain support image classified with its own cache entry removed."""
    values = F.one_hot(support.labels, support.num_classes).float()
    affinity = torch.exp(-beta * (1 - support.features @ keys.T)).fill_diagonal_(0)  # (S, S), no self-match
    logits = text_logits(support.features, support.text) + alpha * affinity @ values
    return (logits.argmax(1) == support.labels).float().mean().item()


class TipAdapter(FewShotMethod):
    """Training-free Tip-Adapter (see the module doc).

    Args:
        alpha: the residual weight of the cache logits (Tip-Adapter's ImageNet start value 1).
        beta: the affinity sharpness (Tip-Adapter's ImageNet start value 5.5).
        search: choose ``(alpha, beta)`` from `ALPHAS` x `BETAS` by leave-one-out accuracy
            on the support set (the paper searches on a validation set, which a K-shot
            protocol does not have); ties keep the earlier pair, so the defaults when
            nothing helps. Needed here: with ``100 f W^T`` logits, alpha = 1 is
            negligible unless the model's text similarities are as flat as CLIP's.
    """

    name = "tip-adapter"

    def __init__(self, alpha: float = 1.0, beta: float = 5.5, search: bool = True) -> None:
        self.alpha, self.beta, self.search = alpha, beta, search

    def hyperparameters(self, support: SupportSet, keys: Tensor) -> tuple[float, float]:
        """``(alpha, beta)``: fixed, or searched (see the class doc)."""
        if not self.search:
            return self.alpha, self.beta
        grid = [(self.alpha, self.beta)] + [(a, b) for a in ALPHAS for b in BETAS]
        scores = [leave_one_out_accuracy(support, keys, a, b) for a, b in grid]
        return grid[max(range(len(grid)), key=scores.__getitem__)]

    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        keys = cache_keys(support)
        values = F.one_hot(support.labels, support.num_classes).float()
        alpha, beta = self.hyperparameters(support, keys)
        return lambda f: tip_logits(f, support.text, keys, values, alpha, beta)


class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys trained (AdamW, cross-entropy on all views), values fixed."""

    name = "tip-adapter-f"

    def __init__(
        self, alpha: float = 1.0, beta: float = 5.5, search: bool = True, steps: int = 200, lr: float = 1e-3
    ) -> None:
        super().__init__(alpha, beta, search)
        self.steps, self.lr = steps, lr

    def fit(self, support: SupportSet, seed: int = 0) -> Classifier:
        """``(alpha, beta)`` chosen on the training-free cache (see `TipAdapter`), then the keys trained."""
        keys = nn.Parameter(cache_keys(support).clone())
        values = F.one_hot(support.labels, support.num_classes).float()
        alpha, beta = self.hyperparameters(support, keys.detach())
        x, y = support.flat()
        with seeded(seed):
            optimize(
                [keys],
                lambda step: F.cross_entropy(tip_logits(x, support.text, keys, values, alpha, beta), y),
                self.steps,
                self.lr,
                weight_decay=0.01,
            )
        trained = keys.detach()
        return lambda f: tip_logits(f, support.text, trained, values, alpha, beta)
