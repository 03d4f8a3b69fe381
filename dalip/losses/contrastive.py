"""Contrastive pair losses: ``clip`` (softmax InfoNCE) and ``siglip`` (sigmoid).

Both follow open_clip's distributed conventions: each rank holds a (b, d) shard
of the global batch (all shards the same size) and the loss sees the other
ranks' features through an all-gather.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn.functional as F
from torch import Tensor

from dalip.losses.base import Order, Outputs, PairLoss, scalar
from dalip.losses.factory import register_loss

__all__ = ["ClipLoss", "ContrastiveLoss", "SigLipLoss", "resolve_world"]


def resolve_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): given values, else torch.distributed's when initialised, else (0, 1)."""
    live = dist.is_available() and dist.is_initialized()
    world_size = world_size if world_size is not None else (dist.get_world_size() if live else 1)
    rank = rank if rank is not None else (dist.get_rank() if live else 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


class ContrastiveLoss(PairLoss):
    """A pair loss over ``logit_scale * img @ txt.T``, optionally across ranks.

    Args:
        order: the order of the statistic whose pair is aligned, ``"first"`` or ``"second"``.
        separate_scales: for ``order="second"``, read ``second_logit_scale`` /
            ``second_logit_bias`` instead of the shared ``logit_scale`` / ``logit_bias``.
        rank: this process's rank; None reads torch.distributed at call time (so the
            loss may be built before ``init_process_group``), 0 when not initialised.
        world_size: number of processes; None reads torch.distributed at call time,
            1 when not initialised.
    """

    def __init__(
        self,
        order: Order = "first",
        separate_scales: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(order)
        if separate_scales and order != "second":
            raise ValueError(f"{self.part_name}: separate_scales=True applies to order='second' only")
        self.separate_scales = separate_scales
        self.rank, self.world_size = rank, world_size

    def scale(self, outputs: Outputs, bias: bool = False) -> Tensor | float:
        """The logit scale (or bias) this pair uses."""
        key = ("second_" if self.separate_scales else "") + ("logit_bias" if bias else "logit_scale")
        if self.separate_scales:
            why = " (separate_scales=True reads the second pair's own scale and bias)"
        else:
            why = f" ({self.part_name} needs a learnable logit bias)" if bias else ""
        return scalar(outputs, key, self.part_name, why)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, separate_scales={self.separate_scales}"


@register_loss("clip")
class ClipLoss(ContrastiveLoss):
    """CLIP's symmetric cross-entropy over ``logit_scale * img @ txt.T`` (open_clip semantics).

    A ``logit_bias`` in the outputs is ignored: a constant shift of every logit
    does not change a softmax cross-entropy.

    Args:
        local_loss: each rank computes the loss of its own rows against all
            gathered columns (b x B logits) instead of the full B x B matrix.
        gather_with_grad: gather with autograd, so that gradients reach the other
            ranks' features. With it, the features' gradients on every rank are
            ``world_size`` times those of the single-process loss on the global
            batch, so that DDP's gradient averaging gives exactly that loss's
            parameter gradients (see ``tests/test_losses_distributed.py``).
        order: ``"first"`` or ``"second"`` (see `ContrastiveLoss`).
        separate_scales: use the second pair's own logit scale (see `ContrastiveLoss`).
        rank: this process's rank (see `ContrastiveLoss`).
        world_size: number of processes (see `ContrastiveLoss`).
    """

    part_name = "clip"

    def __init__(
        self,
        order: Order = "first",
        separate_scales: bool = False,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(order, separate_scales, rank, world_size)
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def value(self, outputs: Outputs) -> Tensor:
        img, txt = self.pair(outputs)  # (b, d) each
        logit_scale = self.scale(outputs)
        rank, world_size = resolve_world(self.rank, self.world_size)
        offset = 0
        if world_size > 1:
            from open_clip.loss import gather_features  # lazily: importing open_clip takes seconds

            all_img, all_txt = gather_features(
                img, txt, local_loss=self.local_loss, gather_with_grad=self.gather_with_grad,
                rank=rank, world_size=world_size,
            )  # (B, d) each, B = world_size * b
            if self.local_loss:
                logits_per_image = logit_scale * img @ all_txt.T  # (b, B)
                logits_per_text = logit_scale * txt @ all_img.T
                offset = rank * img.shape[0]  # this shard's positives sit at its global rows
            else:
                logits_per_image = logit_scale * all_img @ all_txt.T  # (B, B)
                logits_per_text = logits_per_image.T
        else:
            # two products, as open_clip does, so single-process results match it bit for bit
            logits_per_image = logit_scale * img @ txt.T
            logits_per_text = logit_scale * txt @ img.T
        labels = torch.arange(logits_per_image.shape[0], device=img.device) + offset
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}"


@register_loss("siglip")
class SigLipLoss(ContrastiveLoss):
    """SigLIP: ``-(1/b) sum_ij log sigmoid(z_ij (t x_i . y_j + c))``, z = +1 on positives, -1 elsewhere.

    Needs ``logit_bias`` (c) besides ``logit_scale`` (t). Across ranks, every rank
    all-gathers the text features with autograd and scores its b images against
    all B texts, normalised by b, as open_clip's ``dist_impl="gather"``. The
    mean over ranks of the rank losses is the single-process loss on the global
    batch and, as for ``clip``, feature gradients are ``world_size`` times its
    gradients, so DDP's averaging is exact.
    """

    part_name = "siglip"

    def value(self, outputs: Outputs) -> Tensor:
        img, txt = self.pair(outputs)  # (b, d) each
        logit_scale, logit_bias = self.scale(outputs), self.scale(outputs, bias=True)
        rank, world_size = resolve_world(self.rank, self.world_size)
        all_txt = torch.cat(torch.distributed.nn.all_gather(txt), dim=0) if world_size > 1 else txt  # (B, d)
        logits = logit_scale * img @ all_txt.T + logit_bias  # (b, B)
        b = img.shape[0]
        signs = torch.full_like(logits, -1.0)
        rows = torch.arange(b, device=img.device)
        signs[rows, rows + rank * b] = 1.0  # positives: this shard's own texts
        return -F.logsigmoid(signs * logits).sum() / b
