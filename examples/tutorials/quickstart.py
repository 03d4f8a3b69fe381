"""Quickstart: list the registered poolers and pool a batch of random tokens.

Run: python examples/tutorials/quickstart.py   (CPU, a few seconds)
"""

# --8<-- [start:quickstart]
import torch

import dalip

print(dalip.list_poolers())
# ['bdc', 'cls', 'cov', 'isqrt_cov', 'mbdc', 'mbdc_paper', 'mean']

B, N, C = 2, 197, 768  # batch, tokens, channels (a ViT-B/16 image tower)
tokens = torch.randn(B, N, C)
cls = tokens[:, 0]  # the guide token ([cls] for images, EOT for text)
patches = tokens[:, 1:]

first = dalip.create_pooler("cls", dim=C)
second = dalip.create_pooler("mbdc", dim=C, heads=4, reduced_dim=46)

f = first(patches, guide=cls)  # (B, 768)
s = second(patches, guide=cls)  # (B, second.out_dim) = (B, 768)
print(f.shape, s.shape)
# --8<-- [end:quickstart]

assert f.shape == (B, C) and s.shape == (B, second.out_dim)
