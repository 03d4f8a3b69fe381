"""The registered alignment losses on a model-output dictionary, checked against
their formulas (docs/concepts/objective.md includes the marked blocks).

Run: python examples/tutorials/losses.py   (CPU, a few seconds)
"""

# --8<-- [start:outputs]
import math

import torch
import torch.nn.functional as F

import dalip

torch.manual_seed(0)
B, E = 8, 32
unit = lambda *shape: F.normalize(torch.randn(*shape), dim=-1)  # noqa: E731
outputs = {  # what DALIPModel.forward returns, here random unit vectors
    "image_features": unit(B, E), "text_features": unit(B, E),  # first order
    "image_second": unit(B, E), "text_second": unit(B, E),  # second order
    "logit_scale": torch.tensor(1 / 0.07),  # exp(t), already exponentiated
    "logit_bias": torch.tensor(-10.0),  # only siglip reads it
}
print(dalip.list_losses())
# ['cauchy_schwarz', 'clip', 'combined', 'coral', 'distribution', 'intra_modal', 'siglip']
# --8<-- [end:outputs]

# --8<-- [start:clip]
u, v, s = outputs["image_features"], outputs["text_features"], outputs["logit_scale"]
logits = s * u @ v.T  # (B, B)
target = torch.arange(B)
by_hand = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
assert torch.allclose(dalip.create_loss("clip")(**outputs), by_hand)
# --8<-- [end:clip]

# --8<-- [start:siglip]
z = 2 * torch.eye(B) - 1  # +1 on the diagonal (positives), -1 elsewhere
by_hand = -F.logsigmoid(z * (s * u @ v.T + outputs["logit_bias"])).sum() / B
assert torch.allclose(dalip.create_loss("siglip")(**outputs), by_hand)
# --8<-- [end:siglip]

# --8<-- [start:distribution]
loss_fn = dalip.create_loss("distribution", alpha=0.3, aux={"coral": 0.5})
total, parts = loss_fn(**outputs, output_dict=True)
print(loss_fn.weights)  # {'first': 0.3, 'second': 0.7, 'coral': 0.5}
clip_first = dalip.create_loss("clip")(**outputs)
clip_second = dalip.create_loss("clip", order="second")(**outputs)
coral = dalip.create_loss("coral")(**outputs)
assert torch.allclose(total, 0.3 * clip_first + 0.7 * clip_second + 0.5 * coral)
assert torch.allclose(parts["second"], clip_second)  # parts are unweighted
# --8<-- [end:distribution]

# --8<-- [start:coral]
C_img = torch.cov(outputs["image_features"].T)  # (E, E), unbiased, over the batch
C_txt = torch.cov(outputs["text_features"].T)
by_hand = (C_img - C_txt).square().sum() / (4 * E**2)
assert torch.allclose(dalip.create_loss("coral")(**outputs), by_hand)
# --8<-- [end:coral]

# --8<-- [start:cauchy-schwarz]
sigma = 0.5
x, y = outputs["image_features"], outputs["text_features"]
K = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * sigma**2))  # noqa: E731
by_hand = (K(x, x).mean().log() + K(y, y).mean().log() - 2 * K(x, y).mean().log())
cs = dalip.create_loss("cauchy_schwarz", sigma=sigma)
assert torch.allclose(cs(**outputs), by_hand, atol=1e-5)
assert cs(**outputs) >= 0 and cs(**{**outputs, "text_features": x}).abs() < 1e-5
# --8<-- [end:cauchy-schwarz]

# --8<-- [start:combined]
loss_fn = dalip.create_loss("combined", terms={
    "clip": 1.0,  # registered name, default options
    "siglip2": {"loss": "siglip", "weight": 0.5, "order": "second"},
    "cs": {"loss": "cauchy_schwarz", "weight": 0.1, "sigma": 0.5},
})
total, parts = loss_fn(**outputs, output_dict=True)
print(sorted(parts))  # ['clip', 'cs', 'siglip2']
# --8<-- [end:combined]

# --8<-- [start:intra-modal]
labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # class of each image
supcon = dalip.create_loss("intra_modal", modality="image", temperature=0.1)
print(supcon(**outputs, labels=labels))
# --8<-- [end:intra-modal]
assert math.isfinite(float(supcon(**outputs, labels=labels)))
