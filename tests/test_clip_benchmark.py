"""dalip's zero-shot numbers equal clip_benchmark's own routine on the same model, images, class names and templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

zeroshot_classification = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")

import clip_benchmark
from shapes import make_shapes_folder
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import dalip
from dalip.data import load_templates, read_image_folder
from dalip.eval import evaluate_zero_shot, model_transform

CLASSES = ["red circle", "green circle", "blue square", "yellow square", "red triangle", "blue triangle",
           "green square", "yellow circle"]


def clip_benchmark_templates() -> list[str]:
    """The 80 ImageNet templates as clip_benchmark ships them (``{c}`` form)."""
    path = Path(clip_benchmark.__file__).parent / "datasets" / "en_zeroshot_classification_templates.json"
    return json.loads(path.read_text())["imagenet1k"]


def numpy2_safe_accuracy(output, target, topk=(1,)):
    """clip_benchmark's ``accuracy`` line for line, but ``.item()`` where it calls ``float()`` on a 1-element array."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / n for k in topk]


@pytest.fixture
def reference_routine(monkeypatch):
    """clip_benchmark's ``evaluate``; its ``accuracy`` replaced only where NumPy 2 breaks it (clip-benchmark 1.6.2)."""
    try:
        zeroshot_classification.accuracy(torch.eye(5), torch.arange(5), topk=(1, 5))
    except TypeError:  # float(np.array([x])) is an error under NumPy >= 2.? ; the computation is unchanged
        monkeypatch.setattr(zeroshot_classification, "accuracy", numpy2_safe_accuracy)
    return zeroshot_classification.evaluate


def test_same_top1_top5_and_balanced_accuracy_as_clip_benchmark(tmp_path, reference_routine):
    root = make_shapes_folder(tmp_path / "shapes", CLASSES, per_class=[6, 3, 5, 4, 2, 5, 3, 4])
    templates = clip_benchmark_templates()
    assert load_templates("openai_imagenet") == [t.replace("{c}", "{}") for t in templates]
    template_file = tmp_path / "templates.txt"
    template_file.write_text("\n".join(templates) + "\n")
    torch.manual_seed(0)
    model = dalip.create_model("effl0-minilm", second_order=None).eval()  # plain CLIP: the first embedding
    tokenizer = dalip.get_tokenizer("effl0-minilm")
    transform = model_transform(model)
    classnames = read_image_folder(root).classnames

    loader = DataLoader(ImageFolder(str(root), transform=transform), batch_size=8)
    reference = reference_routine(
        model, loader, tokenizer, classnames, templates, device="cpu", amp=False
    )
    ours = evaluate_zero_shot(model, tokenizer, root, templates=template_file, transform=transform, batch_size=8,
                              progress=False)["first"]["shapes"]
    print(f"\nclip_benchmark: acc1={reference['acc1']:.6f} acc5={reference['acc5']:.6f} "
          f"mean_per_class_recall={reference['mean_per_class_recall']:.6f}")
    print(f"dalip:          top1={ours['zero_shot/top1']:.6f} top5={ours['zero_shot/top5']:.6f} "
          f"balanced_accuracy={ours['zero_shot/balanced_accuracy']:.6f} (n={ours['zero_shot/num_samples']}, "
          f"{ours['zero_shot/num_classes']} classes)")
    assert 0 < reference["acc1"] < 1 and reference["acc1"] != reference["mean_per_class_recall"]  # not trivial
    assert ours["zero_shot/num_samples"] == len(loader.dataset) == 32
    assert ours["zero_shot/top1"] == pytest.approx(reference["acc1"], abs=1e-9)
    assert ours["zero_shot/top5"] == pytest.approx(reference["acc5"], abs=1e-9)
    assert ours["zero_shot/balanced_accuracy"] == pytest.approx(reference["mean_per_class_recall"], abs=1e-9)
