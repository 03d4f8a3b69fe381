"""Evaluation: hand-made encoders with known answers, naive references, tiny open_clip / DALIP models."""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dalip
from dalip.eval import (
    encode_images,
    evaluate,
    format_results,
    recall_at_k,
    retrieval_recall,
    save_results,
    to_float_images,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
)

TINY = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
TEMPLATES = ["a {}", "the {}."]


# ------------------------------------------------------------------ fake model
def class_tokenizer(texts: list[str]) -> Tensor:
    """``"... c7 ..."`` -> ``[[7]]``: the token is the class id."""
    return torch.tensor([[int(re.search(r"c(\d+)", t).group(1))] for t in texts])


def class_images(ids: list[int]) -> Tensor:
    """Float images ``(N, 3, 2, 2)`` whose pixels hold their class id."""
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()


class OneHotModel(nn.Module):
    """Image of class i -> one-hot(perm[i]) (first) / one-hot(second_perm[i]) (second); text c -> one-hot(c)."""

    has_second_order = True

    def __init__(
        self, dim: int, perm: list[int] | None = None, second_perm: list[int] | None = None, alpha=0.75
    ):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.dim, self.alpha = dim, alpha
        self.perm = torch.tensor(perm or range(dim))
        self.second_perm = torch.tensor(second_perm or range(dim))

    def _embed(self, first_ids: Tensor, second_ids: Tensor, embedding: str) -> Tensor:
        first, second = F.one_hot(first_ids, self.dim).float(), F.one_hot(second_ids, self.dim).float()
        combined = torch.cat([math.sqrt(self.alpha) * first, math.sqrt(1 - self.alpha) * second], dim=-1)
        return {"first": first, "second": second, "combined": combined}[embedding]

    def encode_image(self, images: Tensor, embedding: str = "combined") -> Tensor:
        ids = images[:, 0, 0, 0].round().long()
        return self._embed(self.perm[ids], self.second_perm[ids], embedding)

    def encode_text(self, tokens: Tensor, embedding: str = "combined") -> Tensor:
        return self._embed(tokens[:, 0], tokens[:, 0], embedding)


@dataclass
class Task:
    labels: list[int]
    classnames: list[str]
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))


@dataclass
class EvalSet:
    images: object
    captions: list
    tasks: dict


def names(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


# ------------------------------------------------------- known answers (fake model)
def test_identity_model_is_perfect():
    model, ids = OneHotModel(6), [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0]
    acc = zero_shot_accuracy(
        model, class_tokenizer, class_images(ids), ids, names(6), TEMPLATES, progress=False
    )
    assert acc == {"top1": 1.0, "top5": 1.0}
    batches = [class_images(ids[:5]), class_images(ids[5:])]  # an iterable of batches works too
    assert (
        zero_shot_accuracy(model, class_tokenizer, batches, ids, names(6), TEMPLATES, progress=False) == acc
    )
    recall = retrieval_recall(
        model, class_tokenizer, class_images(range(6)), names(6), ks=(1, 5), progress=False
    )
    assert recall == dict.fromkeys(
        ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"], 1.0
    )


def test_permutation_gives_known_values():
    perm = [0, 1, 2, 4, 5, 3]  # 3 fixed points out of 6
    model = OneHotModel(6, perm=perm)
    images = class_images(range(6))
    acc = zero_shot_accuracy(
        model, class_tokenizer, images, range(6), names(6), TEMPLATES, "first", top_k=(1,)
    )
    assert acc == {"top1": 0.5}
    recall = retrieval_recall(model, class_tokenizer, images, names(6), "first", ks=(1, 5, 6), progress=False)
    # ties count against the truth: a wrong one-hot ranks its caption last (rank 5 of 0..5)
    assert recall == {
        "image_to_text_R@1": 0.5, "image_to_text_R@5": 0.5, "image_to_text_R@6": 1.0,
        "text_to_image_R@1": 0.5, "text_to_image_R@5": 0.5, "text_to_image_R@6": 1.0,
    }  # fmt: skip


def test_collapsed_model_is_not_perfect():
    feats = F.normalize(torch.ones(5, 4), dim=-1)
    recall = recall_at_k(feats, feats, torch.arange(5), ks=(1, 5))
    assert recall["image_to_text_R@1"] == 0.0 and recall["image_to_text_R@5"] == 1.0


def test_several_captions_per_image():
    model = OneHotModel(4)
    captions = [["c0", "a c0"], ["c1", "wrong c2"], ["c2", "c2!"], ["c3"]]
    recall = retrieval_recall(
        model, class_tokenizer, class_images(range(4)), captions, ks=(1, 2), progress=False
    )
    # image 2 ties with the wrong caption of image 1 (ties count against it); that caption finds image 2
    assert recall == pytest.approx(
        {
            "image_to_text_R@1": 0.75,
            "image_to_text_R@2": 1.0,
            "text_to_image_R@1": 6 / 7,
            "text_to_image_R@2": 6 / 7,
        }
    )


def test_classifier_averages_templates():
    model = OneHotModel(3)
    classifier = zero_shot_classifier(model, class_tokenizer, names(3), TEMPLATES, "combined", progress=False)
    assert classifier.shape == (3, 6)
    torch.testing.assert_close(classifier.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(classifier @ classifier.T, torch.eye(3))


def test_evaluate_fake_model_per_embedding():
    model = OneHotModel(6, second_perm=[0, 1, 2, 4, 5, 3])
    sets = {"val": EvalSet(class_images(range(6)), names(6), {"concepts": Task(list(range(6)), names(6))})}
    results = evaluate(model, class_tokenizer, sets, top_k=(1,), progress=False)
    assert list(results) == ["first", "second", "combined"]
    assert [results[e]["val"]["concepts/top1"] for e in results] == [1.0, 0.5, 1.0]  # alpha 0.75 breaks ties
    assert [results[e]["val"]["image_to_text_R@1"] for e in results] == [1.0, 0.5, 1.0]


# ---------------------------------------------------------------- naive references
def test_topk_matches_naive_argsort():
    scores, labels = torch.randn(50, 7), torch.randint(0, 7, (50,))
    ranking = scores.argsort(dim=1, descending=True)
    acc = topk_accuracy(scores, labels, top_k=range(1, 9))
    assert list(acc) == [f"top{k}" for k in range(1, 8)]  # k > C left out
    for k in range(1, 8):
        naive = (ranking[:, :k] == labels[:, None]).any(dim=1).float().mean().item()
        assert acc[f"top{k}"] == pytest.approx(naive)


def test_shifted_scores_give_known_topk():
    c = 8
    labels = torch.arange(c).repeat(2)
    rank_of = (torch.arange(c)[None, :] - labels[:, None] + 2) % c  # the true class ranks third
    acc = topk_accuracy(-rank_of.float(), labels, top_k=(1, 2, 3, 5))
    assert acc == {"top1": 0.0, "top2": 0.0, "top3": 1.0, "top5": 1.0}


def test_recall_matches_naive_ranking():
    images, texts = F.normalize(torch.randn(9, 5), dim=-1), F.normalize(torch.randn(20, 5), dim=-1)
    owners = torch.randint(0, 9, (20,))
    owners[:9] = torch.arange(9)  # every image has a caption
    got = recall_at_k(images, texts, owners, ks=(1, 3, 5))
    sim = images @ texts.T
    for k in (1, 3, 5):
        i2t = [bool((owners[sim[i].argsort(descending=True)[:k]] == i).any()) for i in range(9)]
        t2i = [bool((sim[:, j].argsort(descending=True)[:k] == owners[j]).any()) for j in range(20)]
        assert got[f"image_to_text_R@{k}"] == pytest.approx(np.mean(i2t))
        assert got[f"text_to_image_R@{k}"] == pytest.approx(np.mean(t2i))


# ------------------------------------------------------------- tiny real models
def random_tokenizer(texts: list[str]) -> Tensor:
    """Ids in [1, 62] seeded by the text, EOT id 63 last (open_clip pools at the argmax id)."""
    rows = []
    for text in texts:
        gen = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        rows.append(torch.cat([torch.randint(1, 63, (11,), generator=gen), torch.tensor([63])]))
    return torch.stack(rows)


def uint8_sets() -> dict[str, EvalSet]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)  # resized to 32 by the default transform
    tasks = {
        "concepts": Task([i % 5 for i in range(10)], [f"concept {i}" for i in range(5)]),
        "subcategory": Task([i % 3 for i in range(10)], ["animals", "food", "flags"]),
    }
    return {
        "val": EvalSet(images, [f"caption {i}" for i in range(10)], tasks),
        "test": EvalSet(images[:6], [], {}),
    }


def check_layout(metrics: dict) -> None:
    assert metrics["num_samples"] == 10
    assert metrics["concepts/num_classes"] == 5 and metrics["concepts/num_samples"] == 10
    assert metrics["concepts/chance_top1"] == 0.2 and metrics["concepts/chance_top5"] == 1.0
    assert metrics["subcategory/num_classes"] == 3 and "subcategory/top5" not in metrics
    assert metrics["chance_R@1"] == 0.1
    for key in [
        "concepts/top1",
        "concepts/top5",
        "subcategory/top1",
        "image_to_text_R@10",
        "text_to_image_R@1",
    ]:
        assert 0.0 <= metrics[key] <= 1.0


def test_plain_open_clip_model_through_evaluate():
    model = open_clip.CLIP(**TINY).train()
    results = evaluate(model, random_tokenizer, uint8_sets(), embeddings=("first",), progress=False)
    assert list(results) == ["first"] and list(results["first"]) == ["val", "test"]
    check_layout(results["first"]["val"])
    assert results["first"]["test"] == {"num_samples": 6}
    assert model.training  # mode restored
    assert evaluate(model, random_tokenizer, uint8_sets(), progress=False) == results  # default: first only
    with pytest.raises(ValueError, match="only the 'first' embedding"):
        evaluate(model, random_tokenizer, uint8_sets(), embeddings=("combined",))


def test_dalip_model_through_evaluate_all_embeddings():
    model = dalip.create_model(TINY, second_order="mean")
    results = evaluate(model, random_tokenizer, uint8_sets(), progress=False)
    assert list(results) == ["first", "second", "combined"]
    for e in results:
        check_layout(results[e]["val"])
    alone = evaluate(model, random_tokenizer, uint8_sets(), embeddings=("first",), progress=False)
    assert alone["first"]["val"] == pytest.approx(results["first"]["val"])
    table = format_results(results)
    assert (
        sum(line.startswith("| ") for line in table.splitlines()) == 1 + 6
        and "concepts/top1" in table
        and "(20.0)" in table
    )


def test_one_pass_split_matches_direct_encoding():
    model = dalip.create_model(TINY, second_order="mean", alpha=0.3).eval()
    images = torch.randn(5, 3, 32, 32)
    calls = []
    model.image_tower = lambda x, tower=model.image_tower: calls.append(len(x)) or tower(x)
    feats = encode_images(model, images, ("first", "second", "combined"), batch_size=3, progress=False)
    assert calls == [3, 2]  # one tower pass per batch for all three embeddings
    with torch.no_grad():
        for e, got in feats.items():
            torch.testing.assert_close(got, model.encode_image(images, embedding=e), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: setattr(s["val"], "images", np.zeros((0, 8, 8, 3), np.uint8)), "no images"),
        (lambda s: setattr(s["val"].tasks["concepts"], "labels", [5] * 10), r"labels must lie in \[0, 5\)"),
        (lambda s: setattr(s["val"].tasks["concepts"], "labels", [0] * 9), "9 labels for 10 samples"),
        (lambda s: setattr(s["val"].tasks["concepts"], "templates", ["a photo"]), "must contain '{}'"),
        (lambda s: setattr(s["val"].tasks["concepts"], "classnames", []), "at least one class name"),
        (lambda s: setattr(s["val"], "captions", ["x"] * 3), "3 caption entries for 10 images"),
    ],
)
def test_errors(change, match):
    sets = uint8_sets()
    change(sets)
    with pytest.raises(ValueError, match=match):
        evaluate(open_clip.CLIP(**TINY), random_tokenizer, sets, progress=False)


def test_argument_errors():
    model = OneHotModel(3)
    with pytest.raises(ValueError, match="no eval sets"):
        evaluate(model, class_tokenizer, {})
    with pytest.raises(ValueError, match="unknown embedding"):
        evaluate(model, class_tokenizer, {"v": EvalSet(class_images([0]), [], {})}, embeddings=("third",))
    with pytest.raises(ValueError, match="float tensors"):
        encode_images(model, [torch.zeros(2, 3)], progress=False)


# ---------------------------------------------------------------- images, report
def test_to_float_images():
    images = np.full((2, 10, 12, 3), 255, np.uint8)
    x = to_float_images(images, image_size=8)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones_like(x))
    assert to_float_images(images, mean=(0.0, 0.0, 0.0), std=(1.0, 2.0, 4.0))[0, :, 0, 0].tolist() == [
        1,
        0.5,
        0.25,
    ]


def test_format_and_save(tmp_path):
    val = {
        "num_samples": 4,
        "c/top1": 0.5,
        "c/chance_top1": 0.25,
        "image_to_text_R@1": 1.0,
        "chance_R@1": 0.25,
    }
    results = {"first": {"val": val}, "second": {"val": {"num_samples": 4, "c/top1": 0.75}}}
    table = format_results(results).splitlines()
    assert table[0] == "| embedding | subset | n | c/top1 | image_to_text_R@1 |"
    assert table[2:4] == [
        "| first | val | 4 | 50.0 (25.0) | 100.0 (25.0) |",
        "| second | val | 4 | 75.0 | - |",
    ]
    path = save_results(results, tmp_path / "out" / "eval.json")
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temporary file left


# ----------------------------------------------------------------- non-finite scores (issue 14)
def test_nan_scores_are_never_a_hit():
    nan = torch.full((4, 8), float("nan"))
    recall = dalip.eval.recall_at_k(nan, nan, torch.arange(4), ks=(1, 2))
    assert all(v == 0.0 for v in recall.values()), recall
    feats = F.normalize(torch.randn(4, 8), dim=-1)
    perfect = dalip.eval.recall_at_k(feats, feats, torch.arange(4), ks=(1,))
    feats_nan = feats.clone()
    feats_nan[2] = float("nan")  # image 2's scores are NaN: its caption and itself are misses
    partial = dalip.eval.recall_at_k(feats_nan, feats, torch.arange(4), ks=(1,))
    assert perfect["image_to_text_R@1"] == 1.0 and partial["image_to_text_R@1"] == 0.75


def test_encoding_refuses_non_finite_embeddings():
    class Diverged(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def encode_image(self, x):
            out = x.flatten(1)[:, :4] * self.w
            out[1] = float("nan")
            return out

    with pytest.raises(dalip.eval.NonFiniteEmbeddingError, match=r"'first' image embedding has NaN/Inf in 1 of 3"):
        dalip.eval.encode_images(Diverged(), torch.randn(3, 3, 8, 8), ("first",), progress=False)


def test_evaluation_and_training_share_the_antialiased_resize():
    """Downsizing thin lines: an antialiased resize keeps their mean brightness, a plain bicubic one loses them."""
    from dalip.data import image_transform

    stripes = np.zeros((1, 64, 64, 3), np.uint8)
    stripes[:, :, ::8] = 255  # a one-pixel line every 8 columns: 1/8 of the image is white
    x = to_float_images(stripes, image_size=8, mean=0.0, std=1.0)
    assert x.shape == (1, 3, 8, 8)
    inner = x[..., 1:-1]  # away from the border, where the kernel is clipped
    torch.testing.assert_close(inner, torch.full_like(inner, 0.125), atol=0.02, rtol=0)  # not 0: no sample hits a line
    assert x.min() > 0.05
    same = image_transform(8, train=False, mean=0.0, std=1.0)(stripes[0])  # the training data's eval path
    torch.testing.assert_close(x[0], same)
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(stripes.astype(np.float32), image_size=8)


def test_one_markdown_table_writer():
    from dalip._markdown import markdown_table

    assert markdown_table(["name", "n", "acc"], [["a", 1, "0.5"]], text_columns=1) == [
        "| name | n | acc |", "|---|---:|---:|", "| a | 1 | 0.5 |",
    ]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown_table(["name", "n", "acc"], [["a", 1]])


# ---------------------------------------------------------------- fusion curves
def fusion_sets(n: int = 48, classes: int = 8) -> dict[str, EvalSet]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [i % classes for i in range(n)]
    tasks = {"concepts": Task(labels, [f"concept {i}" for i in range(classes)])}
    return {"val": EvalSet(images, [f"caption {i}" for i in range(n)], tasks)}


def test_fusion_curve_ends_are_the_orders_and_alpha_is_the_combined_embedding():
    model = dalip.create_model(TINY, second_order="mbdc", second_options={"heads": 2, "reduced_dim": 4}, alpha=0.3)
    calls = []
    model.image_tower = lambda x, tower=model.image_tower: calls.append(len(x)) or tower(x)
    weights = [0, 0.3, 0.6, 1]
    results = evaluate(model, random_tokenizer, fusion_sets(), batch_size=16, progress=False, fusion=weights)
    assert calls == [16, 16, 16]  # one pass of the image tower for three embeddings and four weights
    assert list(results) == ["first", "second", "combined", "fusion@0", "fusion@0.3", "fusion@0.6", "fusion@1"]
    assert results["fusion@1"] == results["first"]  # exactly, every metric
    assert results["fusion@0"] == results["second"]
    assert results["fusion@0.3"] == results["combined"]  # the training alpha: the concatenated embedding
    assert list(dalip.eval.fusion_curves(results)) == [0.0, 0.3, 0.6, 1.0]
    # an independent reference: per-order embeddings, template means, fused scores, argmax
    eval_set = fusion_sets()["val"]
    task = eval_set.tasks["concepts"]
    images = dalip.eval.default_image_transform(model)(eval_set.images)
    with torch.no_grad():
        model.eval()
        img = {o: model.encode_image(images, embedding=o) for o in ("first", "second")}
        prompts = [t.replace("{}", c) for c in task.classnames for t in task.templates]
        txt = {o: model.encode_text(random_tokenizer(prompts), embedding=o) for o in ("first", "second")}
    cls = {o: F.normalize(t.view(len(task.classnames), -1, t.shape[-1]).mean(1), dim=-1) for o, t in txt.items()}
    for a in weights:
        scores = a * img["first"] @ cls["first"].T + (1 - a) * img["second"] @ cls["second"].T
        top1 = (scores.argmax(1) == torch.tensor(task.labels)).double().mean().item()
        assert results[f"fusion@{a:g}"]["val"]["concepts/top1"] == pytest.approx(top1, abs=1e-12), a
    # the table and plot of the curve; the main table keeps the real embeddings only
    assert "fusion@" not in format_results(results)
    table = dalip.eval.format_fusion(results, alpha=0.3)
    assert "| 0.3 (train alpha) |" in table and "val concepts/top1" in table
    # the best weight per task: the argmax of the curve (every weight of a tie)
    curve = {a: results[f"fusion@{a:g}"]["val"]["concepts/top1"] for a in weights}
    best = dalip.eval.best_fusion_weights(results, "val", "concepts/top1")
    assert best == [a for a in weights if curve[a] == max(curve.values())]
    assert table.splitlines()[-1].startswith("| best a |")
    with pytest.raises(ValueError, match="no 'top9' of subset 'val'.*known: val concepts/balanced_accuracy, val concepts/top1, "):
        dalip.eval.best_fusion_weights(results, "val", "top9")


def test_best_fusion_weights_reads_ties_as_runs():
    from dalip.eval.fusion import _spans, format_fusion

    top1 = {0: 0.2, 0.25: 0.5, 0.5: 0.5, 0.75: 0.3, 1: 0.5}
    results = {f"fusion@{a:g}": {"val": {"concepts/top1": v}} for a, v in top1.items()}
    assert dalip.eval.best_fusion_weights(results, "val", "concepts/top1") == [0.25, 0.5, 1]
    assert _spans([0.25, 0.5, 1], [0, 0.25, 0.5, 0.75, 1]) == "0.25-0.5, 1"
    assert format_fusion(results).splitlines()[-1] == "| best a | 0.25-0.5, 1 |"


def test_fusion_plot_and_errors(tmp_path):
    model = dalip.create_model(TINY, second_order="mean", alpha=0.5)
    results = evaluate(model, random_tokenizer, fusion_sets(16, 4), progress=False, fusion=[0, 0.5, 1])
    path = dalip.eval.plot_fusion(results, tmp_path / "fusion.png", alpha=0.5)
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no fusion curve"):
        dalip.eval.plot_fusion({"first": {}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"numbers in \[0, 1\], got 1.5"):
        evaluate(model, random_tokenizer, fusion_sets(16, 4), progress=False, fusion=[0, 1.5])
    plain = dalip.create_model(TINY, second_order=None)
    with pytest.raises(ValueError, match="need a model with second-order heads"):
        evaluate(plain, random_tokenizer, fusion_sets(16, 4), progress=False, fusion=[0.5])
