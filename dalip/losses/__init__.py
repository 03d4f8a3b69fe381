"""Registered alignment losses, each called as ``loss(**model_output)``.

``clip`` and ``siglip`` (contrastive, distributed like open_clip),
``distribution`` (DALIP's first- plus second-order alignment), ``coral``,
``cauchy_schwarz``, ``combined`` (weighted sums of any of these) and
``intra_modal`` (supervised contrastive within one tower):

```python
from dalip.losses import create_loss
loss_fn = create_loss("distribution", alpha=0.5, aux={"coral": 1.0})
total, parts = loss_fn(**outputs, output_dict=True)   # parts: first, second, coral
```
"""

from dalip.losses.base import FEATURE_KEYS, AlignmentLoss, PairLoss
from dalip.losses.contrastive import ClipLoss, ContrastiveLoss, SigLipLoss
from dalip.losses.distribution import CauchySchwarzLoss, CombinedLoss, CoralLoss, DistributionLoss
from dalip.losses.factory import LOSSES, create_loss, list_losses, register_loss
from dalip.losses.intra_modal import SupConLoss, supervised_contrastive

__all__ = [
    "FEATURE_KEYS", "LOSSES", "AlignmentLoss", "CauchySchwarzLoss", "ClipLoss", "CombinedLoss",
    "ContrastiveLoss", "CoralLoss", "DistributionLoss", "PairLoss", "SigLipLoss", "SupConLoss",
    "create_loss", "list_losses", "register_loss", "supervised_contrastive",
]
