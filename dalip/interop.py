"""dalip models in clip_benchmark (and any harness expecting an open_clip-like model).

`load_for_benchmark` returns ``(model, transform, tokenizer)`` as clip_benchmark's
model loaders do (``clip_benchmark.models.open_clip.load_open_clip``). clip_benchmark's
command line only knows its own model types, so register dalip's loader in a small
launcher and run the usual command through it:

```python
# dalip_benchmark.py
import sys
import clip_benchmark.models as cb_models
from clip_benchmark.cli import main
import dalip

cb_models.TYPE2FUNC["dalip"] = dalip.load_for_benchmark   # embedding="combined"
cb_models.MODEL_TYPES.append("dalip")                    # the --model_type choices
sys.exit(main())
```

```bash
python dalip_benchmark.py eval --model_type dalip --model runs/plants/checkpoint.pt --pretrained "" \\
    --dataset cifar10 --dataset_root data/cifar10 --output result.json
```

``--model`` is a run checkpoint or any name `dalip.create_model` accepts (``ViT-B-16`` with
``--pretrained laion2b_s34b_b88k``, ``hf-hub:ORG/REPO``, ``local-dir:EXPORT``). For another
embedding register ``functools.partial(dalip.load_for_benchmark, embedding="second")``.
An export's open_clip files need no launcher:
``clip_benchmark eval --model local-dir:EXPORT --pretrained "" ...`` scores the first-order embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dalip.models.dalip_model import DALIPModel, Embedding
from dalip.models.factory import create_model, get_tokenizer
from dalip.runs.load import load_run

__all__ = ["BenchmarkModel", "eval_transform", "load_for_benchmark"]


class BenchmarkModel(nn.Module):
    """A `DALIPModel` whose ``encode_image`` / ``encode_text`` return one chosen embedding.

    Shapes: images ``(B, 3, H, W)`` -> ``(B, D)``; token ids ``(B, L)`` -> ``(B, D)``, unit
    vectors, with D = E for ``"first"`` / ``"second"`` and 2E for ``"combined"``.
    """

    def __init__(self, model: DALIPModel, embedding: Embedding = "combined") -> None:
        super().__init__()
        if embedding not in ("first", "second", "combined"):
            raise ValueError(f"embedding must be 'first', 'second' or 'combined', got {embedding!r}")
        if embedding == "second" and not model.has_second_order:
            raise ValueError("embedding='second' needs a model with second-order heads")
        self.model, self.embedding = model, embedding

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        return self.model.encode_image(images, embedding=self.embedding)

    def encode_text(self, texts: Tensor, normalize: bool = True) -> Tensor:
        return self.model.encode_text(texts, embedding=self.embedding)

    def forward(self, images: Tensor, texts: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_image(images), self.encode_text(texts)


def eval_transform(model: DALIPModel) -> Callable[[Any], Tensor]:
    """open_clip's evaluation transform (PIL image -> ``(3, H, W)`` tensor) for the model's preprocess cfg."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model.clip)), is_train=False)


def _is_run_checkpoint(name: str) -> bool:
    return Path(name).suffix == ".pt" and Path(name).is_file()


def load_for_benchmark(
    model_name: str,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    embedding: Embedding = "combined",
    cache_dir: str | None = None,
) -> tuple[BenchmarkModel, Callable[[Any], Tensor], Any]:
    """``(model, transform, tokenizer)`` in clip_benchmark's loader form.

    Args:
        model_name: a ``dalip train`` checkpoint (``RUN/checkpoint.pt``, rebuilt from its
            stored config) or any name `dalip.create_model` accepts.
        pretrained: hub tag or checkpoint file for ``model_name`` (`dalip.create_model`);
            ignored for run checkpoints and dalip exports, which hold every weight
            (clip_benchmark passes its default tag unless ``--pretrained ""``).
        device: where the model goes.
        embedding: ``"first"``, ``"second"`` or ``"combined"``: what ``encode_*`` return.
        cache_dir: open_clip's download cache.

    Returns:
        the model (eval mode) with one-tensor ``encode_image`` / ``encode_text``, open_clip's
        eval transform for its preprocess cfg, and its tokenizer.
    """
    if _is_run_checkpoint(model_name):
        model, config = load_run(model_name)
        tokenizer = get_tokenizer(config.model.name)
    else:
        own_weights = model_name.startswith(("hf-hub:", "local-dir:"))  # schema names carry their weights
        model = create_model(model_name, pretrained=None if own_weights else (pretrained or None), cache_dir=cache_dir)
        tokenizer = get_tokenizer(model_name, cache_dir=cache_dir)
    wrapped = BenchmarkModel(model.eval(), embedding).to(device)
    return wrapped, eval_transform(model), tokenizer
