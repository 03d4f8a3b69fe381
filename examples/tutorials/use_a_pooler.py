"""Tutorial: use dalip poolers inside your own model.

Every block between ``--8<-- [start:...]`` / ``[end:...]`` markers is included
verbatim in docs/tutorials/use-a-pooler.md, so the page shows code that runs.

Run: python examples/tutorials/use_a_pooler.py   (CPU, a few seconds)
"""

# --8<-- [start:create]
import torch
import torch.nn.functional as F
from torch import nn

from dalip import create_pooler, list_poolers

print(list_poolers("*cov*"))  # ['cov', 'isqrt_cov']

pool = create_pooler("bdc", dim=512, reduced_dim=32)
print(pool)  # BDCPool(dim=512, out_dim=528, ...)
print(pool.out_dim)  # 32 * 33 / 2 = 528
# --8<-- [end:create]
assert pool.out_dim == 528

# --8<-- [start:image]
# A ViT returns (B, 1 + H*W, C): the [cls] token, then the patches.
vit_out = torch.randn(4, 1 + 14 * 14, 512)
cls_token, patch_tokens = vit_out[:, 0], vit_out[:, 1:]

mbdc = create_pooler("mbdc", dim=512, heads=4, reduced_dim=16)
# Pool the patches only; [cls] is the guide, not one of the tokens.
second_img = mbdc(patch_tokens, guide=cls_token)  # (4, 512)
# --8<-- [end:image]
assert second_img.shape == (4, mbdc.out_dim) == (4, 512)

# --8<-- [start:text]
# A text tower returns (B, L, C) over padded captions; EOT is the guide.
lengths = torch.tensor([5, 9, 3, 12])
L = 16
text_tokens = torch.randn(4, L, 512)
mask = torch.arange(L) < lengths[:, None]  # (B, L) bool, True = real token
eot = text_tokens[torch.arange(4), lengths - 1]  # last real token

mbdc.eval()  # (BatchNorm running statistics; training mode is mask-aware too)
second_txt = mbdc(text_tokens, mask=mask, guide=eot)

# Padding has no influence: change every padded token, same result.
noisy = text_tokens.masked_fill(~mask[..., None], 1e3)
same = mbdc(noisy, mask=mask, guide=eot)
assert torch.allclose(same, second_txt, atol=1e-5)
# --8<-- [end:text]


# --8<-- [start:model]
class TwoStatisticsHead(nn.Module):
    """First- and second-order embeddings of one tower's tokens.

    tokens (B, N, C) -> first (B, E) and second (B, E), both L2-normalised.
    """

    def __init__(self, dim: int, embed_dim: int, first: str = "cls",
                 second: str = "mbdc", **second_options):
        super().__init__()
        self.first = create_pooler(first, dim=dim)
        self.second = create_pooler(second, dim=dim, **second_options)
        self.proj_first = nn.Linear(self.first.out_dim, embed_dim)
        self.proj_second = nn.Linear(self.second.out_dim, embed_dim)

    def forward(self, tokens, mask=None, guide=None):
        f = self.proj_first(self.first(tokens, mask=mask, guide=guide))
        s = self.proj_second(self.second(tokens, mask=mask, guide=guide))
        return F.normalize(f, dim=-1), F.normalize(s, dim=-1)


opts = dict(second="mbdc", heads=4, reduced_dim=16)
image_head = TwoStatisticsHead(512, 256, **opts)
text_head = TwoStatisticsHead(512, 256, **opts, norm="layer")  # LayerNorm

f_img, s_img = image_head(patch_tokens, guide=cls_token)
f_txt, s_txt = text_head(text_tokens, mask=mask, guide=eot)
print(f_img.shape, s_img.shape)  # torch.Size([4, 256]) torch.Size([4, 256])
# --8<-- [end:model]


# --8<-- [start:loss]
def info_nce(x, y, logit_scale):
    """CLIP's symmetric cross-entropy; x, y are L2-normalised (B, E)."""
    logits = logit_scale.exp() * x @ y.T
    target = torch.arange(len(x))
    loss_i = F.cross_entropy(logits, target)  # each image finds its caption
    loss_t = F.cross_entropy(logits.T, target)  # each caption its image
    return (loss_i + loss_t) / 2


logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1/0.07), shared
alpha = 0.5
loss = (alpha * info_nce(f_img, f_txt, logit_scale)
        + (1 - alpha) * info_nce(s_img, s_txt, logit_scale))
loss.backward()
print(loss.item())
# --8<-- [end:loss]

# --8<-- [start:registered-loss]
import dalip

loss_fn = dalip.create_loss("distribution", alpha=0.5)  # base="clip" on both pairs
outputs = {  # the keys a DALIPModel returns (logit_scale already exp'd)
    "image_features": f_img, "text_features": f_txt,
    "image_second": s_img, "text_second": s_txt,
    "logit_scale": logit_scale.exp(),
}
total, parts = loss_fn(**outputs, output_dict=True)
print(parts)  # {'first': tensor(...), 'second': tensor(...)}, unweighted, detached
assert torch.allclose(total, loss)  # the same number as the hand-written loss
# --8<-- [end:registered-loss]
assert image_head.second.in_proj.weight.grad is not None

# --8<-- [start:autocast]
# Under mixed precision the statistics are still computed in float32:
# distances from Gram matrices (g_kk + g_ll - 2 g_kl) cancel badly in bf16.
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = pool(patch_tokens)
print(out.dtype)  # torch.float32 (bdc has no layer after the statistic)
# --8<-- [end:autocast]
assert torch.isfinite(out).all()

# --8<-- [start:checks]
import dalip.pooling

# Inputs are validated; mistakes fail with a message that says what is wrong:
try:
    mbdc(text_tokens[..., :100], mask=mask, guide=eot)
except ValueError as err:
    print(err)
    # MBDC: tokens have C=100 channels but the pooler was built for dim=512

# The all-padded-row check reads the mask on the host (a GPU sync);
# a tight training loop may switch it off:
with dalip.pooling.value_checks(False):
    second_txt = mbdc(text_tokens, mask=mask, guide=eot)
# --8<-- [end:checks]
