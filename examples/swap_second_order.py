"""Swap the second-order statistic on the same CLIP model.

The towers stay the same open_clip model; only the second-order head changes.
Runs offline on CPU with the shipped EfficientNet-Lite0 + MiniLM towers:

    python examples/swap_second_order.py
"""

import torch

import dalip

tokenizer = dalip.get_tokenizer("effl0-minilm")
texts = tokenizer(["a photo of a dog", "a red apple", "a sunflower"])
images = torch.rand(3, 3, 128, 128)  # stand-ins; see `dalip train` for real data

for second in ["cov", "bdc", "mbdc", None]:
    torch.manual_seed(0)
    model = dalip.create_model("effl0-minilm", second_order=second).eval()
    with torch.no_grad():
        out = model(images, texts)
    head = model.second_heads["image"].pooler if model.has_second_order else None
    size = "-" if head is None else f"{head.out_dim} -> {model.embed_dim}"
    params = sum(p.numel() for p in model.second_heads.parameters())
    shapes = {k: tuple(v.shape) for k, v in out.items() if v is not None}
    print(f"second_order={second!s:5} statistic {size:>12}  head params {params:>9,}  {shapes}")
