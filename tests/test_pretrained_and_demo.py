"""Offline pretrained weights and the ``dalip demo`` command on real data."""

import numpy as np
import pytest
import timm
import torch

from dalip.cli import main
from dalip.data import load_emoji_image, twemoji_index
from dalip.demo import nearest_neighbour_accuracy
from dalip.models import load_efficientnet_lite0


def test_twemoji_index_has_names_and_nature_subcategories():
    index = twemoji_index()
    assert len(index) > 1800
    by_name = {r.name: r for r in index}
    assert by_name["dog"].subcategory == "animal-mammal" and by_name["sunflower"].subcategory == "plant-flower"
    image = load_emoji_image(by_name["dog"].path, size=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 10
    with pytest.raises(FileNotFoundError):
        load_emoji_image("/nonexistent.png")


def test_efficientnet_lite0_imagenet_weights_really_load():
    model = timm.create_model("tf_efficientnet_lite0")
    random_logits = model.eval()(torch.zeros(1, 3, 64, 64))
    load_efficientnet_lite0(model).eval()
    dog = next(r for r in twemoji_index() if r.name == "dog")
    x = torch.from_numpy(load_emoji_image(dog.path, size=224)).permute(2, 0, 1)[None].float() / 255
    top5 = model((x - 0.5) / 0.5).topk(5).indices[0]
    assert all(151 <= int(i) <= 268 for i in top5), f"ImageNet dog classes are 151-268, got {top5.tolist()}"
    assert not torch.allclose(model(torch.zeros(1, 3, 64, 64)), random_logits)
    headless = load_efficientnet_lite0(timm.create_model("tf_efficientnet_lite0", num_classes=0))
    assert torch.equal(headless.conv_stem.weight, model.conv_stem.weight)
    with pytest.raises(ValueError, match="tensors"):
        load_efficientnet_lite0(timm.create_model("resnet18"))


def test_nearest_neighbour_accuracy():
    features = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    assert nearest_neighbour_accuracy(features, torch.tensor([0, 0, 1, 1])) == 1.0
    assert nearest_neighbour_accuracy(features, torch.tensor([0, 1, 0, 1])) == 0.0


def test_demo_command_prints_a_table(capsys):
    assert main(["demo", "--image-size", "128", "--poolers", "mean", "mbdc"]) == 0
    out = capsys.readouterr().out
    assert "| mean | 1280 |" in out and "| mbdc | 1280 |" in out and "16 tokens x 1280 channels" in out
