"""Tutorial: register your own alignment loss so configs and composites can name it.

Blocks between the ``--8<--`` markers are included in
docs/tutorials/register-a-component.md.

Run: python examples/tutorials/register_a_loss.py   (CPU, a few seconds)
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root, wherever you run from

# --8<-- [start:pair-loss]
import torch
from torch import Tensor

import dalip
from dalip.losses import PairLoss, register_loss


@register_loss("cosine_gap")
class CosineGapLoss(PairLoss):
    """Mean cosine distance between each image and its own caption.

    Args:
        order: the order of the statistic, ``"first"`` or ``"second"``.
        margin: distances below the margin cost nothing.
    """

    part_name = "cosine_gap"  # the name of its part in output_dict / metrics

    def __init__(self, order: str = "first", margin: float = 0.0) -> None:
        super().__init__(order)  # validates order
        self.margin = margin

    def value(self, outputs) -> Tensor:
        img, txt = self.pair(outputs)  # (B, E) each, shapes checked, with a clear error
        gap = 1 - (img * txt).sum(dim=-1)  # (B,), embeddings are L2-normalised
        return (gap - self.margin).clamp_min(0).mean()
# --8<-- [end:pair-loss]


# --8<-- [start:use]
B, E = 8, 16
unit = lambda: torch.nn.functional.normalize(torch.randn(B, E), dim=-1)  # noqa: E731
outputs = {"image_features": unit(), "text_features": unit(),
           "image_second": unit(), "text_second": unit(),
           "logit_scale": torch.tensor(14.3)}

print(dalip.list_losses("cos*"))  # ['cosine_gap']
loss_fn = dalip.create_loss("cosine_gap", order="second", margin=0.1)
print(loss_fn(**outputs))

# a registered loss is a term anywhere a term spec is accepted
mixed = dalip.create_loss("distribution", alpha=0.5, aux={"cosine_gap": 0.2})
total, parts = mixed(**outputs, output_dict=True)
print(sorted(parts))  # ['cosine_gap', 'first', 'second']
# --8<-- [end:use]
assert sorted(parts) == ["cosine_gap", "first", "second"]

# --8<-- [start:config]
from dalip.runs import load_config

# a training config names it like any shipped loss (import your module first)
assets = ROOT / "tests" / "assets"
config = load_config(assets / "tiny-train.yaml", [
    "loss.name=cosine_gap", "loss.options={margin: 0.1}",
])
print(config.loss)  # LossConfig(name='cosine_gap', options={'margin': 0.1})
# --8<-- [end:config]
assert config.loss.name == "cosine_gap"

# --8<-- [start:errors]
try:
    dalip.create_loss("cosine_gapp")
except dalip.UnknownComponentError as err:
    print(err)  # suggests 'cosine_gap' and lists the known losses
try:
    dalip.create_loss("cosine_gap", margn=0.1)
except TypeError as err:
    print(err)  # names the valid options: order, margin
# --8<-- [end:errors]
